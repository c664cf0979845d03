//! The operator's kit: the systemd unit verifies with `systemd-analyze verify` and ferrum
//! accepts the example settings (contrib/check-unit.sh); `ferrum --check-config` tells a bad
//! configuration apart.
//!
//! Run with `cargo test --test packaging`.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_systemd_unit_verifies_with_the_example_settings() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("\nSKIPPED: systemd-analyze is not installed (Debian package systemd)\n");
        return;
    }
    let out = Command::new(root().join("contrib/check-unit.sh")).arg(env!("CARGO_BIN_EXE_ferrum")).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("verifies") && said.contains("configuration OK: Bitcoin mainnet"), "{said}");
}

#[test]
fn check_config_tells_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrum"));
        c.env_clear().env("DB_DIRECTORY", dir.path()).arg("--check-config");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let good = run(&[("NET", "regtest"), ("SERVICES", "tcp://:50001,rpc://")]);
    assert!(good.status.success(), "{good:?}");
    assert!(String::from_utf8_lossy(&good.stdout).contains("configuration OK: Bitcoin regtest"));
    for (var, value) in [("COST_HARD_LIMIT", "1"), ("METRICS_ADDR", "nowhere"), ("NET", "moonnet")] {
        let bad = run(&[(var, value)]);
        assert_eq!(bad.status.code(), Some(2), "{var}={value}: {bad:?}");
        assert!(String::from_utf8_lossy(&bad.stderr).contains(var), "{var}: {bad:?}");
    }
}
