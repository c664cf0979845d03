//! The Tor proxy: found at TOR_PROXY_HOST on TOR_PROXY_PORT, or the first of 9050, 9150 and
//! 1080 that speaks SOCKS5, by asking it to reach 8.8.8.8:53; any well-formed SOCKS reply
//! counts, success or not (a proxy without an exit still reaches onions). Looked for again
//! every 15 minutes until found.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Proxy {
    host: String,
    port: Option<u16>,
    retry: Duration,
    found: Mutex<Option<SocketAddr>>,
}

impl Proxy {
    pub fn new(host: String, port: Option<u16>, retry: Duration) -> Proxy {
        Proxy { host, port, retry, found: Mutex::new(None) }
    }

    pub fn address(&self) -> Option<SocketAddr> {
        *self.found.lock().expect("lock")
    }

    pub async fn detect_until_found(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Some(addr) = self.detect().await {
                tracing::info!("Tor proxy found at {addr}: onion peers are reachable");
                *self.found.lock().expect("lock") = Some(addr);
                return;
            }
            tracing::info!(
                "no Tor proxy at {} (TOR_PROXY_PORT {}); onion peers wait, looking again in {:?}",
                self.host,
                self.port.map_or("9050, 9150, 1080".into(), |p| p.to_string()),
                self.retry
            );
            tokio::select! {
                _ = tokio::time::sleep(self.retry) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    }

    async fn detect(&self) -> Option<SocketAddr> {
        let ports = self.port.map_or(vec![9050, 9150, 1080], |p| vec![p]);
        let host = if self.host == "localhost" { "127.0.0.1" } else { self.host.as_str() };
        for port in ports {
            let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { continue };
            for addr in addrs {
                let probe = tokio_socks::tcp::Socks5Stream::connect(addr, ("8.8.8.8", 53));
                match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(_)) => return Some(addr),
                    // Not a SOCKS server, or nothing listening.
                    Ok(Err(tokio_socks::Error::Io(_))) | Err(_) => {}
                    Ok(Err(tokio_socks::Error::InvalidResponseVersion)) => {}
                    // A well-formed refusal: a SOCKS5 proxy is there.
                    Ok(Err(_)) => return Some(addr),
                }
            }
        }
        None
    }
}
