//! The layout's rules, checked on the source: modules depend only on those before them in the
//! pipeline order of src/lib.rs (no upward imports, hence no cycles), and only the store names
//! RocksDB. docs/ARCHITECTURE.md explains the order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first; each may use only those before it.
const ORDER: &[&str] = &[
    "types", "coins", "config", "metrics", "jsonrpc", "node", "store", "index", "sync", "electrum", "peers", "admin",
    "app",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to (`None` for lib.rs and the binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (first != "lib" && first != "bin").then_some(first)
}

/// The top-level modules a source text names through `crate::`, outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn modules_only_use_those_before_them_in_the_pipeline() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(mine) = rank(&module) else {
            wrong.push(format!("{}: module {module} is not in the pipeline order", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            // Items of the crate root (lib.rs helpers) are usable everywhere.
            if let Some(theirs) = rank(&used) {
                if theirs > mine {
                    wrong.push(format!("{}: {module} uses {used}, which comes after it", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "upward dependencies:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_store_names_rocksdb() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| module_of(&src, f).as_deref() != Some("store"))
        .filter(|f| {
            // The crate, not the word (DB_ENGINE=rocksdb is configuration).
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .any(|l| l.contains("rocksdb::") || l.contains("use rocksdb"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "RocksDB named outside src/store: {offenders:?}");
}

#[test]
fn the_checker_sees_what_it_checks() {
    assert_eq!(uses("use crate::index::{Index}; // crate::app"), ["index".to_string()].into());
    assert_eq!(
        uses("let x = crate::join_logged(a, b); crate::sync::Syncer"),
        ["join_logged".to_string(), "sync".to_string()].into()
    );
    let src = Path::new("/x/src");
    assert_eq!(module_of(src, Path::new("/x/src/node/daemon.rs")), Some("node".into()));
    assert_eq!(module_of(src, Path::new("/x/src/types.rs")), Some("types".into()));
    assert_eq!(module_of(src, Path::new("/x/src/lib.rs")), None);
}
