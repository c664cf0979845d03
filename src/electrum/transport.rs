//! How messages cross a connection: newline-delimited JSON over a byte stream (tcp, ssl, and
//! the admin RPC) or one WebSocket message each (ws, wss); and the TLS acceptor.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

pub enum Incoming {
    Message(Vec<u8>),
    /// A message longer than the limit (MAX_RECV).
    TooLarge,
    Closed,
}

pub enum Transport<S> {
    Raw { rx: FramedRead<ReadHalf<S>, AnyDelimiterCodec>, tx: WriteHalf<S> },
    Ws(WebSocketStream<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport<S> {
    /// Newline-delimited messages of at most `max_recv` bytes.
    pub fn raw(stream: S, max_recv: usize) -> Self {
        let (r, w) = tokio::io::split(stream);
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_recv);
        Transport::Raw { rx: FramedRead::new(r, codec), tx: w }
    }

    /// Cancel-safe: used inside `select!`.
    pub async fn recv(&mut self) -> Incoming {
        match self {
            Transport::Raw { rx, .. } => loop {
                match rx.next().await {
                    Some(Ok(line)) if line.trim_ascii().is_empty() => continue,
                    Some(Ok(line)) => return Incoming::Message(line.trim_ascii().to_vec()),
                    Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => return Incoming::TooLarge,
                    Some(Err(AnyDelimiterCodecError::Io(_))) | None => return Incoming::Closed,
                }
            },
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Incoming::Message(t.into_bytes()),
                    Some(Ok(Message::Binary(b))) => return Incoming::Message(b),
                    Some(Ok(Message::Close(_))) | None => return Incoming::Closed,
                    Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => return Incoming::TooLarge,
                    Some(Err(_)) => return Incoming::Closed,
                }
            },
        }
    }

    /// Sends several messages with one write (one frame each over WebSocket, one flush): a
    /// block touching 20 subscriptions of a session is one syscall, not 21.
    pub async fn send_all(&mut self, mut msgs: Vec<String>) -> std::io::Result<()> {
        if msgs.len() == 1 {
            // A long answer is not copied again.
            return self.send(msgs.pop().expect("one")).await;
        }
        match self {
            Transport::Raw { tx, .. } => {
                let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.len() + 1).sum());
                for m in &msgs {
                    buf.extend_from_slice(m.as_bytes());
                    buf.push(b'\n');
                }
                tx.write_all(&buf).await?;
                tx.flush().await
            }
            Transport::Ws(ws) => {
                for m in msgs {
                    ws.feed(Message::Text(m)).await.map_err(std::io::Error::other)?;
                }
                ws.flush().await.map_err(std::io::Error::other)
            }
        }
    }

    pub async fn send(&mut self, mut msg: String) -> std::io::Result<()> {
        match self {
            Transport::Raw { tx, .. } => {
                msg.push('\n');
                tx.write_all(msg.as_bytes()).await?;
                tx.flush().await
            }
            Transport::Ws(ws) => ws.send(Message::Text(msg)).await.map_err(std::io::Error::other),
        }
    }

    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            match self {
                Transport::Raw { tx, .. } => {
                    let _ = tx.shutdown().await;
                }
                Transport::Ws(ws) => {
                    let _ = ws.close(None).await;
                }
            }
        })
        .await;
    }
}

/// The TLS acceptor for ssl:// and wss://, from SSL_CERTFILE and SSL_KEYFILE.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use tokio_rustls::rustls;
    let open = |p: &Path, var: &str| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot read {var} {}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(cert, "SSL_CERTFILE")?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("SSL_CERTFILE {} is not a PEM certificate file", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("SSL_CERTFILE {} holds no certificate", cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut open(key, "SSL_KEYFILE")?)
        .with_context(|| format!("SSL_KEYFILE {} is not a PEM file", key.display()))?
        .ok_or_else(|| anyhow!("SSL_KEYFILE {} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("SSL_CERTFILE and SSL_KEYFILE do not form a usable certificate and key pair")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
