//! Runs the real `ferrum` binary as a child process and talks to its admin RPC, exactly as an
//! operator would. Used by the integration and end-to-end tests.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A free TCP port on 127.0.0.1 that this process has not handed out before.
///
/// Ports come from below the kernel's ephemeral range: a port the OS picked with `bind(0)` is
/// free again the moment we close it, so a later `bind(0)` or any outgoing connection (the
/// servers' own clients) could take it before the server under test binds it. That happened
/// in CI: the metrics listener and the TCP service got the same port. Each process starts at
/// its own offset, so test binaries running side by side rarely meet either.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().clamp(2048, 65535) as u32;
    let span = low - 1024;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = (1024 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The lowest port the kernel hands out for `bind(0)` and outgoing connections.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Calls one admin RPC method on a running ferrum (as `ferrum-rpc` does).
pub fn admin_call(port: u16, method: &str, params: Value) -> Result<Value, String> {
    match ferrum::jsonrpc::call_blocking(("127.0.0.1", port), method, params, Duration::from_secs(120))? {
        Ok(v) => Ok(v),
        Err(e) => Err(json!({"code": e.code, "message": e.message}).to_string()),
    }
}

/// The `ferrum` binary cargo built beside the running test or benchmark (`target/<profile>/`),
/// or `$FERRUM_BIN`.
pub fn ferrum_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRUM_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // Tests and benchmarks run from target/<profile>/deps/, programs from target/<profile>/.
    let beside = exe.parent().map(|d| d.join("ferrum"));
    let above = exe.parent().and_then(Path::parent).map(|d| d.join("ferrum"));
    let found = [beside, above].into_iter().flatten().find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("no ferrum binary beside {}: build it first (cargo builds it for tests and benches)", exe.display())
    })
}

pub struct FerrumProcess {
    pub child: Option<Child>,
    pub db_dir: PathBuf,
    pub admin_port: u16,
    pub env: BTreeMap<String, String>,
    pub log_path: PathBuf,
}

impl FerrumProcess {
    /// Starts ferrum with `DB_DIRECTORY=db_dir`, `SERVICES=rpc://127.0.0.1:<free port>` and the
    /// given extra environment (DAEMON_URL, COIN, NET, CACHE_MB, ...). Output goes to
    /// `<db_dir>.log`.
    pub fn start(db_dir: &Path, extra_env: &[(&str, &str)]) -> FerrumProcess {
        let admin_port = free_port();
        let mut env = BTreeMap::new();
        env.insert("DB_DIRECTORY".to_string(), db_dir.display().to_string());
        env.insert("SERVICES".to_string(), format!("rpc://127.0.0.1:{admin_port}"));
        env.insert("LOG_LEVEL".to_string(), "info".to_string());
        env.insert("ALLOW_ROOT".to_string(), "1".to_string());
        env.insert("DAEMON_POLL_INTERVAL_BLOCKS".to_string(), "100".to_string());
        for (k, v) in extra_env {
            env.insert(k.to_string(), v.to_string());
        }
        let log_path = db_dir.with_extension("log");
        let mut p = FerrumProcess { child: None, db_dir: db_dir.to_path_buf(), admin_port, env, log_path };
        p.spawn();
        p
    }

    /// Starts ferrum serving Electrum clients on free ports for each of `protocols` ("tcp",
    /// "ssl", "ws", "wss") plus the admin RPC; returns it with the ports by protocol.
    pub fn start_serving(
        db_dir: &Path,
        protocols: &[&str],
        extra_env: &[(&str, &str)],
    ) -> (FerrumProcess, BTreeMap<String, u16>) {
        let ports: BTreeMap<String, u16> = protocols.iter().map(|p| (p.to_string(), free_port())).collect();
        let admin_port = free_port();
        let mut services: Vec<String> = ports.iter().map(|(p, port)| format!("{p}://127.0.0.1:{port}")).collect();
        services.push(format!("rpc://127.0.0.1:{admin_port}"));
        let services = services.join(",");
        let mut env: Vec<(&str, &str)> = vec![("SERVICES", &services), ("DAEMON_POLL_INTERVAL_MEMPOOL", "100")];
        env.extend_from_slice(extra_env);
        let mut p = FerrumProcess::start(db_dir, &env);
        p.admin_port = admin_port;
        (p, ports)
    }

    /// Waits until a client port accepts connections (ferrum serves clients once caught up).
    pub fn wait_port(&mut self, port: u16, timeout: Duration) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.exited() {
                panic!("ferrum exited ({status}) before serving port {port}\n{}", self.log_tail());
            }
            if start.elapsed() > timeout {
                panic!("ferrum did not open port {port} within {timeout:?}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (Re)starts the process with the same environment and DB (after `kill9` or `stop`).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let mut cmd = Command::new(ferrum_binary());
        cmd.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        if let Ok(home) = std::env::var("HOME") {
            cmd.env("HOME", home);
        }
        cmd.envs(&self.env).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        self.child = Some(cmd.spawn().expect("spawn ferrum"));
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        admin_call(self.admin_port, method, params)
    }

    pub fn getinfo(&self) -> Option<Value> {
        self.call("getinfo", json!([])).ok()
    }

    /// Whether the child has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until ferrum reports `db_height == height` and `db_tip == tip` (when given).
    /// Panics with the log's tail on timeout or if the process dies.
    pub fn wait_for_tip(&mut self, height: u64, tip: Option<&str>, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!("ferrum exited ({status}) while waiting for height {height}\n{}", self.log_tail());
            }
            if let Some(info) = self.getinfo() {
                let ok_height = info["db_height"].as_u64() == Some(height);
                let ok_tip = tip.is_none_or(|t| info["db_tip"].as_str() == Some(t));
                if ok_height && ok_tip {
                    return info;
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for height {height} (last getinfo: {:?})\n{}",
                    self.getinfo(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself (e.g. after a fatal error); returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            if start.elapsed() > timeout {
                panic!("ferrum did not exit within {timeout:?}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks ferrum to flush and exit through the admin RPC, and waits for it.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            let _ = self.call("stop", json!([]));
            let status = self.wait_exit(Duration::from_secs(60));
            assert!(status.success(), "ferrum exited with {status} after stop\n{}", self.log_tail());
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!("--- ferrum log tail ({}) ---\n{}", self.log_path.display(), lines[from..].join("\n"))
    }
}

impl Drop for FerrumProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `rc` of a libc call as a Result, the error naming `what` failed.
fn check_os(rc: libc::c_int, what: &str) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL")
}

/// Moves the calling thread to a mount namespace of its own whose mounts do not propagate back
/// (everything made private), so what it mounts next is seen only by it and the processes it
/// starts afterwards. Needs root (CAP_SYS_ADMIN).
fn private_mount_namespace() -> std::io::Result<()> {
    // SAFETY: plain system calls on valid, NUL-terminated strings.
    unsafe {
        // CLONE_FS (implied anyway): the thread's root and cwd point into its mount namespace,
        // so it stops sharing them with the process's other threads.
        check_os(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS), "unshare the mount namespace")?;
        check_os(
            libc::mount(
                std::ptr::null(),
                cstring("/").as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "make mounts private",
        )
    }
}

/// A size-limited tmpfs at `dir`, seen only by the calling thread and the processes it starts
/// afterwards: the thread moves to a mount namespace of its own first, so the machine's mounts
/// are untouched. Needs root (CAP_SYS_ADMIN); the error says why not.
pub fn private_tmpfs(dir: &Path, size_bytes: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let target = cstring(&dir.display().to_string());
    private_mount_namespace()?;
    let opts = cstring(&format!("size={size_bytes}"));
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(cstring("tmpfs").as_ptr(), target.as_ptr(), cstring("tmpfs").as_ptr(), 0, opts.as_ptr().cast())
    };
    check_os(rc, "mount a tmpfs")
}

/// The first line of the hosts files `private_etc_hosts` mounts, so a later call knows the
/// /etc/hosts it sees is one of them.
const PRIVATE_HOSTS_MARK: &str = "# private to a ferrum test thread (testkit private_etc_hosts)\n";

/// Maps `names` to loopback addresses for the calling thread and the processes it starts
/// afterwards: a private mount namespace with a temporary hosts file bind-mounted over
/// /etc/hosts, so the machine's own file is untouched. Needs root.
///
/// The real file's lines (localhost etc.) are kept and the names appended; a second call adds
/// to the first. Only that thread is affected (other threads, e.g. a `#[test]`'s siblings or a
/// tokio runtime's workers, keep the machine's file): start the processes that must resolve
/// the names (ferrum, ElectrumX) from the same thread, after the call.
pub fn private_etc_hosts(names: &[(&str, std::net::Ipv4Addr)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = std::fs::read_to_string("/etc/hosts")?;
    let again = text.starts_with(PRIVATE_HOSTS_MARK);
    if !again {
        text.insert_str(0, PRIVATE_HOSTS_MARK);
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for (name, ip) in names {
        text.push_str(&format!("{ip} {name}\n"));
    }
    let mut file = tempfile::Builder::new().prefix("ferrum-hosts-").tempfile()?;
    file.write_all(text.as_bytes())?;
    file.flush()?;
    // Readable by unprivileged processes too (a tempfile is 0600).
    file.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let source = cstring(&file.path().display().to_string());
    let target = cstring("/etc/hosts");
    private_mount_namespace()?;
    // SAFETY: as above.
    unsafe {
        if again {
            // The previous call's file is deleted, and nothing can be mounted on a deleted file
            // (ENOENT): take it off first, in this new namespace only.
            check_os(libc::umount2(target.as_ptr(), libc::MNT_DETACH), "unmount the previous private /etc/hosts")?;
        }
        check_os(
            libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()),
            "bind-mount a hosts file over /etc/hosts",
        )?;
    }
    // Dropping `file` deletes it; the mount keeps its contents for as long as it exists.
    Ok(())
}

/// Grows (or shrinks) a tmpfs made by `private_tmpfs`, from the same thread.
pub fn resize_tmpfs(dir: &Path, size_bytes: u64) -> std::io::Result<()> {
    use std::ffi::CString;
    let target = CString::new(dir.display().to_string()).expect("no NUL");
    let opts = CString::new(format!("size={size_bytes}")).expect("no NUL");
    let fs = CString::new("tmpfs").expect("no NUL");
    // SAFETY: as above.
    let rc = unsafe { libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), libc::MS_REMOUNT, opts.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes used on the filesystem holding `dir`.
pub fn tmpfs_used(dir: &Path) -> u64 {
    let path = std::ffi::CString::new(dir.display().to_string()).expect("no NUL");
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0, "statvfs {}", dir.display());
        (st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64
    }
}
