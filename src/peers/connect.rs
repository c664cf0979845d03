//! Reaching a peer: TCP or TLS (certificates are not checked: peers are self-signed as often
//! as not, and what discovery trusts is what the peer answers), directly from our listen
//! address or through the Tor SOCKS5 proxy with the name resolved by the proxy; and a small
//! newline-delimited JSON-RPC client over the connection, every call bounded in time and size.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

/// A peer's answer may be long (its peer list) but never this long.
const MAX_LINE: usize = 4 << 20;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer answered with a JSON-RPC error: it is alive, this port just did not serve us.
    #[error("RPC error {0}: {1}")]
    Rpc(i64, String),
    #[error("{0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not JSON-RPC at all.
    #[error("garbage: {0}")]
    Garbage(String),
}

/// How to reach peers: directly (binding to our listen address, so a peer we announce
/// ourselves to sees the address our name resolves to) or through the proxy.
#[derive(Clone, Debug)]
pub enum Route {
    Direct { bind: Option<IpAddr>, resolve: Arc<Vec<(String, IpAddr)>> },
    Proxy(SocketAddr),
}

/// Addresses of `host`: PEER_RESOLVE's names first, then the system's resolver.
pub async fn resolve(host: &str, port: u16, overrides: &[(String, IpAddr)]) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mine: Vec<SocketAddr> = overrides
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(host))
        .map(|(_, ip)| SocketAddr::new(*ip, port))
        .collect();
    if !mine.is_empty() {
        return Ok(mine);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// A connection to `host:port`, and the address it reached (none through the proxy).
pub async fn connect(
    host: &str,
    port: u16,
    tls: bool,
    route: &Route,
    timeout: Duration,
) -> Result<(Box<dyn Stream>, Option<IpAddr>), CallError> {
    let io = |e: std::io::Error| CallError::Io(e.to_string());
    let work = async {
        let (tcp, ip): (Box<dyn Stream>, Option<IpAddr>) = match route {
            Route::Proxy(proxy) => {
                // The name goes to the proxy as a name (SOCKS5 ATYP 3): no local DNS for onions.
                let s = tokio_socks::tcp::Socks5Stream::connect(*proxy, (host, port))
                    .await
                    .map_err(|e| CallError::Io(format!("through the proxy: {e}")))?;
                (Box::new(s), None)
            }
            Route::Direct { bind, resolve: names } => {
                let addrs = resolve(host, port, names).await.map_err(io)?;
                let mut last = CallError::Io(format!("{host} has no address"));
                let mut found = None;
                for addr in addrs {
                    match connect_from(addr, *bind).await {
                        Ok(s) => {
                            found = Some((s, addr.ip()));
                            break;
                        }
                        Err(e) => last = CallError::Io(e.to_string()),
                    }
                }
                let (s, ip) = found.ok_or(last)?;
                (Box::new(s), Some(ip))
            }
        };
        if !tls {
            return Ok((tcp, ip));
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| CallError::Io(format!("{host} is not a TLS server name")))?;
        let s = tokio_rustls::TlsConnector::from(tls_client_config()).connect(name, tcp).await.map_err(io)?;
        Ok((Box::new(s) as Box<dyn Stream>, ip))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| CallError::Timeout(timeout))?
}

/// A TCP connection from our listen address when it is of the same family (and not the
/// wildcard), else from any.
async fn connect_from(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let s = socket.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// TLS 1.2/1.3 accepting any certificate (discovery judges a peer by its answers; peers are
/// often self-signed), signatures still checked.
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts any certificate (discovery judges a peer by its answers) but still checks the
/// handshake's signatures, so the connection is TLS and not a downgrade.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One JSON-RPC conversation with a peer.
pub struct PeerClient {
    reader: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
    next_id: u64,
    timeout: Duration,
}

impl PeerClient {
    pub fn new(stream: Box<dyn Stream>, timeout: Duration) -> PeerClient {
        let (r, w) = tokio::io::split(stream);
        PeerClient { reader: BufReader::new(r), writer: w, next_id: 0, timeout }
    }

    /// Asks `method` and waits for the answer with our id (notifications in between are
    /// skipped), within the timeout.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let timeout = self.timeout;
        let work = async {
            self.writer.write_all(line.as_bytes()).await.map_err(|e| CallError::Io(e.to_string()))?;
            loop {
                let msg = read_line(&mut self.reader).await?;
                if msg.get("id").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
                    let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
                    let text = e.get("message").and_then(Value::as_str).unwrap_or("").chars().take(200).collect();
                    return Err(CallError::Rpc(code, text));
                }
                return msg
                    .get("result")
                    .cloned()
                    .ok_or_else(|| CallError::Garbage("a response without a result".into()));
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| CallError::Timeout(timeout))?
    }

    pub async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

async fn read_line(reader: &mut BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>) -> Result<Value, CallError> {
    let mut buf = Vec::new();
    let mut limited = (&mut *reader).take(MAX_LINE as u64);
    let n = limited.read_until(b'\n', &mut buf).await.map_err(|e| CallError::Io(e.to_string()))?;
    if n == 0 {
        return Err(CallError::Io("the peer closed the connection".into()));
    }
    if !buf.ends_with(b"\n") && n >= MAX_LINE {
        return Err(CallError::Garbage(format!("a line longer than {MAX_LINE} bytes")));
    }
    serde_json::from_slice(&buf).map_err(|e| CallError::Garbage(format!("not JSON: {e}")))
}
