//! AMQP over WebSockets, as Azure offers it on port 443: an HTTP upgrade on `/$servicebus/websocket`
//! (a trailing `/` allowed) with the subprotocol `AMQPWSB10` (Microsoft's .NET and Python clients) or
//! `amqp` (the OASIS binding's name, which fe2o3-amqp-ws and so Microsoft's Rust SDK offer and
//! insist on getting back), then AMQP frames carried in binary WebSocket messages. With a TLS acceptor the listener speaks `wss://` (TLS first). Behind the
//! upgrade it is the same AMQP endpoint as the TCP listener (Event Hubs and C2D service nodes).
//!
//! Invariant: an upgrade with another path or without the subprotocol is refused with an HTTP error
//! and never reaches the AMQP code.

use super::hub::Hub;
use futures::{Sink, Stream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket path of the AMQP binding.
pub const WS_PATH: &str = "/$servicebus/websocket";
/// The subprotocols of the AMQP WebSocket binding, in order of preference.
pub const WS_PROTOCOLS: [&str; 2] = ["AMQPWSB10", "amqp"];

/// AsyncRead/AsyncWrite over a WebSocket: each write is one binary message; reads return binary
/// message payloads in order (text, ping and pong messages carry no AMQP bytes and are skipped).
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    pending: bytes::Bytes,
}

impl<S> std::fmt::Debug for WsIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsIo").finish_non_exhaustive()
    }
}

fn io_err(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_err)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
            .map_err(io_err)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_err)
    }
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// Checks the upgrade request: path and subprotocol; answers with the subprotocol.
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
fn check_upgrade(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let path = req.uri().path();
    if path.trim_end_matches('/') != WS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "AMQP over WebSockets is served on /$servicebus/websocket",
        ));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = WS_PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol AMQPWSB10 (or amqp) is required",
        ));
    };
    resp.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    Ok(resp)
}

async fn upgrade_and_serve<S>(io: S, hub: Arc<Hub>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tokio_tungstenite::accept_hdr_async(io, check_upgrade).await {
        Ok(ws) => {
            let io = WsIo {
                ws,
                pending: bytes::Bytes::new(),
            };
            super::amqp::handle_connection(io, hub).await;
        }
        Err(e) => tracing::info!(error = %e, "WebSocket upgrade refused"),
    }
}

/// Accepts WebSocket connections until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
) {
    super::amqp::accept_loop(listener, tls, hub, shutdown, "WebSocket", upgrade_and_serve).await
}
