//! A fake SOCKS5 proxy (RFC 1928, the no-authentication method only) standing in for Tor in
//! the peer-discovery tests: it records every CONNECT as asked (so a test can check that an
//! .onion name went to the proxy as a name, ATYP 3, and was never resolved locally) and splices
//! the routed ones to fake peers on loopback.
//!
//! The CONNECT to 8.8.8.8:53 that ElectrumX-style proxy detection sends is answered with
//! success (or the code set by `set_probe_reply`) and closed; any other target not routed gets
//! "host unreachable". Anything that is not SOCKS5 is closed without a word. Bad input never
//! panics a thread; dropping the `FakeSocks` closes the listener and every connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

// RFC 1928 constants.
const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;
const REP_SUCCESS: u8 = 0;
const REP_HOST_UNREACHABLE: u8 = 4;
const REP_CONNECTION_REFUSED: u8 = 5;
const REP_COMMAND_NOT_SUPPORTED: u8 = 7;
const REP_ATYP_NOT_SUPPORTED: u8 = 8;

/// The target ElectrumX's proxy detection asks for.
const PROBE: (&str, u16) = ("8.8.8.8", 53);

#[derive(Default)]
struct Shared {
    /// (lowercased host text, port) -> where to splice it.
    routes: Mutex<HashMap<(String, u16), SocketAddr>>,
    requests: Mutex<Vec<(u8, String, u16)>>,
    probe_reply: AtomicU8,
    stop: AtomicBool,
    /// Each splice still running, by number: (client, target), shut down on drop.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    splices: AtomicU64,
}

// A panicking test thread must not make every later call panic too: the data stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeSocks {
    /// 127.0.0.1:<port> it listens on
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSocks {
    /// Listens on 127.0.0.1:<free port>.
    pub fn start() -> FakeSocks {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("fake SOCKS: bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fake-socks-{addr}"))
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        FakeSocks { addr, shared, accept: Some(accept) }
    }

    /// a CONNECT to this domain name (ATYP 3) or ip:port string is spliced to `to`
    /// (names compare case-insensitively; an IP is written as `Ipv4Addr`/`Ipv6Addr` display it)
    pub fn route(&self, name: &str, port: u16, to: SocketAddr) {
        lock(&self.shared.routes).insert((name.to_ascii_lowercase(), port), to);
    }

    /// every CONNECT asked: (atyp as u8, host as text, port), in arrival order
    pub fn requests(&self) -> Vec<(u8, String, u16)> {
        lock(&self.shared.requests).clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The REP code answered to the detection probe (CONNECT 8.8.8.8:53) when it is not routed:
    /// 0 (success, the default) or a failure such as 3 (network unreachable), which
    /// ElectrumX also takes as "a proxy is there".
    pub fn set_probe_reply(&self, rep: u8) {
        self.shared.probe_reply.store(rep, Ordering::SeqCst);
    }
}

impl Drop for FakeSocks {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, (c, t)) in lock(&self.shared.open).drain() {
            let _ = c.shutdown(Shutdown::Both);
            let _ = t.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // E.g. out of file descriptors: wait rather than spin.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let s = shared.clone();
        let _ = std::thread::Builder::new().name("fake-socks-conn".into()).spawn(move || serve(stream, &s));
    }
}

/// One client: greeting, CONNECT request, reply, then the splice if routed. Any I/O error or
/// protocol violation just ends the connection.
fn serve(mut client: TcpStream, shared: &Shared) -> Option<()> {
    // A client that stalls mid-handshake must not hold a thread forever.
    client.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    client.set_nodelay(true).ok()?;
    let mut head = [0u8; 2];
    client.read_exact(&mut head).ok()?;
    if head[0] != VERSION {
        return None;
    }
    let mut methods = vec![0u8; head[1] as usize];
    client.read_exact(&mut methods).ok()?;
    if !methods.contains(&NO_AUTH) {
        let _ = client.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]);
        return None;
    }
    client.write_all(&[VERSION, NO_AUTH]).ok()?;

    let mut req = [0u8; 4];
    client.read_exact(&mut req).ok()?;
    let [ver, cmd, _reserved, atyp] = req;
    if ver != VERSION {
        return None;
    }
    let host = match atyp {
        ATYP_IPV4 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a).ok()?;
            Ipv4Addr::from(a).to_string()
        }
        ATYP_IPV6 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a).ok()?;
            Ipv6Addr::from(a).to_string()
        }
        ATYP_NAME => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).ok()?;
            let mut name = vec![0u8; len[0] as usize];
            client.read_exact(&mut name).ok()?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => {
            let _ = client.write_all(&reply(REP_ATYP_NOT_SUPPORTED));
            return None;
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).ok()?;
    let port = u16::from_be_bytes(port);
    lock(&shared.requests).push((atyp, host.clone(), port));
    if cmd != CMD_CONNECT {
        let _ = client.write_all(&reply(REP_COMMAND_NOT_SUPPORTED));
        return None;
    }

    let route = lock(&shared.routes).get(&(host.to_ascii_lowercase(), port)).copied();
    let Some(to) = route else {
        let rep = if (host.as_str(), port) == PROBE {
            shared.probe_reply.load(Ordering::SeqCst)
        } else {
            REP_HOST_UNREACHABLE
        };
        let _ = client.write_all(&reply(rep));
        return None;
    };
    let Ok(target) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        let _ = client.write_all(&reply(REP_CONNECTION_REFUSED));
        return None;
    };
    client.write_all(&reply(REP_SUCCESS)).ok()?;
    client.set_read_timeout(None).ok()?;
    let _ = target.set_nodelay(true);
    splice(client, target, shared);
    Some(())
}

/// A reply with BND.ADDR 0.0.0.0:0 (clients ignore it for CONNECT).
fn reply(rep: u8) -> [u8; 10] {
    [VERSION, rep, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

/// Copies bytes both ways until each side ends, passing each EOF on as a half-close so TLS
/// close_notify and clean shutdowns go through as they would through Tor.
fn splice(client: TcpStream, target: TcpStream, shared: &Shared) {
    let clones = (client.try_clone(), target.try_clone());
    let (Ok(client2), Ok(target2)) = clones else {
        return;
    };
    let n = shared.splices.fetch_add(1, Ordering::SeqCst);
    if let (Ok(c), Ok(t)) = (client.try_clone(), target.try_clone()) {
        lock(&shared.open).insert(n, (c, t));
    }
    let up = std::thread::Builder::new().name("fake-socks-up".into()).spawn(move || pipe(client, target));
    pipe(target2, client2);
    if let Ok(t) = up {
        let _ = t.join();
    }
    lock(&shared.open).remove(&n);
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    // On an error (not EOF), stop the other direction too.
    let _ = from.shutdown(Shutdown::Read);
}
