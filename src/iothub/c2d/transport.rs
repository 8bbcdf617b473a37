//! The byte stream under the AMQP connection: TCP, TLS, AMQP over WebSockets, HTTP proxy.
//!
//! * `amqp://host:port`: plain TCP (only loopback unless `IotHub.AllowPlaintext=true`, which the
//!   configuration checks).
//! * `amqps://host:port` (default `amqps://<HostName>:5671`): TLS started directly, without the AMQP
//!   TLS protocol header, as Azure does. Trust: the public web roots, or only the CA certificates of
//!   `IotHub.TrustedCaFile` when it is given.
//! * WebSockets (`IotHub.TransportType=AmqpWebSockets`, default `wss://<HostName>:443/$iothub/websocket`,
//!   or a `ws://`/`wss://` custom endpoint with its own path): the HTTP upgrade offers the
//!   subprotocol `AMQPWSB10` (what the Azure IoT SDKs send); each AMQP write becomes one binary
//!   WebSocket message, and received binary messages are read back as one byte stream. TLS as above.
//! * Proxy (WebSockets only, as in the Azure SDKs): `IotHub.Proxy=http://[user:pass@]host:port`,
//!   else `HTTPS_PROXY`/`https_proxy` (skipped for hosts listed in `NO_PROXY`/`no_proxy`): an HTTP
//!   `CONNECT host:port` tunnel; TLS and the WebSocket run inside it end to end.

use super::link::ConnectError;
use crate::config::Secret;
use futures::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The WebSocket subprotocol IoT Hub's AMQP-over-WebSockets endpoint speaks.
pub const WS_SUBPROTOCOL: &str = "AMQPWSB10";
/// Path of IoT Hub's AMQP WebSocket endpoint.
pub const WS_PATH: &str = "/$iothub/websocket";

/// Any stream the AMQP connection can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A TLS client trusting `ca_pem` only (when given) or the public web roots.
pub fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let mut reader = pem;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| ConnectError::Tls(format!("bad CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConnectError::Tls(format!("bad CA certificate: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(ConnectError::Tls("the CA file holds no certificate".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Starts TLS on `io` for `host`.
pub async fn start_tls(
    io: BoxIo,
    host: &str,
    ca_pem: Option<&[u8]>,
) -> Result<BoxIo, ConnectError> {
    let connector = tls_connector(ca_pem)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ConnectError::Tls(format!("bad server name {host:?}: {e}")))?;
    let tls = connector
        .connect(name, io)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    Ok(Box::new(tls))
}

/// An HTTP proxy for the WebSocket transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic` (hidden in `Debug`).
    pub credentials: Option<Secret>,
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port]` (port 80 when not given). Errors never repeat
    /// the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Proxy, ConnectError> {
        let bad = || ConnectError::BadProxy;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("HTTP://"))
            .ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(Secret::new(c)), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (hostport, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Proxy {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            credentials,
        })
    }

    /// The proxy from `IotHub.Proxy`, else from `HTTPS_PROXY`/`https_proxy` unless `NO_PROXY`
    /// lists `target_host`.
    pub fn resolve(
        configured: Option<&str>,
        target_host: &str,
    ) -> Result<Option<Proxy>, ConnectError> {
        if let Some(p) = configured {
            return Proxy::parse(p).map(Some);
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(p) = env("HTTPS_PROXY").or_else(|| env("https_proxy")) else {
            return Ok(None);
        };
        let no_proxy = env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .unwrap_or_default();
        let skip = no_proxy.split(',').map(str::trim).any(|e| {
            !e.is_empty()
                && (e == "*"
                    || e.trim_start_matches('.') == target_host
                    || target_host.ends_with(&format!(".{}", e.trim_start_matches('.'))))
        });
        if skip {
            return Ok(None);
        }
        Proxy::parse(&p).map(Some)
    }

    /// Opens a `CONNECT host:port` tunnel through this proxy.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addr = format!("{}:{}", self.host, self.port);
        let mut tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| ConnectError::Io {
                addr: format!("proxy {addr}"),
                msg: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(c.expose());
            req.push_str(&format!("Proxy-Authorization: Basic {b}\r\n"));
        }
        req.push_str("\r\n");
        let io_err = |e: io::Error| ConnectError::Io {
            addr: format!("proxy {addr}"),
            msg: e.to_string(),
        };
        tcp.write_all(req.as_bytes()).await.map_err(io_err)?;
        // Read the response head byte by byte so nothing of the tunnel is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(ConnectError::ProxyRefused("response head too long".into()));
            }
            let b = tcp.read_u8().await.map_err(io_err)?;
            head.push(b);
        }
        let status_line = String::from_utf8_lossy(&head);
        let status_line = status_line.lines().next().unwrap_or_default();
        let code = status_line.split_whitespace().nth(1).unwrap_or_default();
        if !code.starts_with('2') {
            return Err(ConnectError::ProxyRefused(status_line.to_string()));
        }
        Ok(tcp)
    }
}

/// Performs the WebSocket upgrade on `io` for `url` (`ws://` or `wss://`, TLS already done) and
/// returns the AMQP byte stream over it.
pub async fn websocket(io: BoxIo, url: &str) -> Result<BoxIo, ConnectError> {
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| ConnectError::WebSocket(e.to_string());
    let mut request = url.into_client_request().map_err(ws_err)?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(WS_SUBPROTOCOL),
    );
    let (ws, _response) = tokio_tungstenite::client_async(request, io)
        .await
        .map_err(ws_err)?;
    Ok(Box::new(WsIo {
        ws,
        read_buf: Vec::new(),
        read_pos: 0,
    }))
}

/// AMQP bytes over binary WebSocket messages.
#[derive(Debug)]
struct WsIo {
    ws: tokio_tungstenite::WebSocketStream<BoxIo>,
    read_buf: Vec<u8>,
    read_pos: usize,
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.read_pos < self.read_buf.len() {
                let n = buf.remaining().min(self.read_buf.len() - self.read_pos);
                let start = self.read_pos;
                buf.put_slice(&self.read_buf[start..start + n]);
                self.read_pos += n;
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(WsMessage::Binary(b))) => {
                    self.read_buf = b.to_vec();
                    self.read_pos = 0;
                }
                Some(Ok(WsMessage::Text(t))) => {
                    self.read_buf = t.as_bytes().to_vec();
                    self.read_pos = 0;
                }
                Some(Ok(WsMessage::Close(_))) => return Poll::Ready(Ok(())),
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.ws)
            .start_send(WsMessage::binary(buf.to_vec()))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://user:pw@proxy.local:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert_eq!(p.credentials.as_ref().unwrap().expose(), "user:pw");
        assert!(!format!("{p:?}").contains("pw"));
        let p = Proxy::parse("http://127.0.0.1:8888/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.credentials),
            ("127.0.0.1", 8888, None)
        );
        assert_eq!(Proxy::parse("http://proxy").unwrap().port, 80);
        assert!(Proxy::parse("socks5://p:1").is_err());
        assert!(Proxy::parse("http://:1").is_err());
        let e = Proxy::parse("http://u:secretpw@h:notaport").unwrap_err();
        assert!(!e.to_string().contains("secretpw"), "{e}");
    }
}
