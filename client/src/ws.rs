//! The WebSocket transport (tokio-tungstenite): one protocol message per text
//! frame, close frames carry the close codes.
//!
//! This is the only module (with [`crate::raw`], which reuses [`open`]) that
//! knows about tungstenite.

use crate::error::{CloseInfo, Error, from_ws};
use crate::transport::{Incoming, Outgoing};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An open WebSocket connection.
pub(crate) type Conn = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the upgrade request carries besides the URL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upgrade<'a> {
    /// Offered in `Sec-WebSocket-Protocol`.
    pub(crate) subprotocol: Option<&'a str>,
    /// Sent as `Origin`.
    pub(crate) origin: Option<&'a str>,
    /// tungstenite's eagerly allocated read buffer.
    pub(crate) read_buffer: usize,
    /// Which certificates a `wss://` server may present.
    pub(crate) trust: crate::tls::Trust<'a>,
}

fn header(value: &str, name: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value).map_err(|e| Error::InvalidInput(format!("{name}: {e}")))
}

/// Opens a WebSocket: TCP connect (Nagle off), TLS for `wss://`, then the
/// HTTP upgrade. Returns
/// the connection and the subprotocol the server selected.
pub(crate) async fn open(url: &str, upgrade: Upgrade<'_>) -> Result<(Conn, Option<String>), Error> {
    let mut request = url.into_client_request().map_err(from_ws)?;
    if let Some(p) = upgrade.subprotocol {
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, header(p, "subprotocol")?);
    }
    if let Some(o) = upgrade.origin {
        request.headers_mut().insert(ORIGIN, header(o, "origin")?);
    }
    let config = WebSocketConfig::default().read_buffer_size(upgrade.read_buffer);
    let connector = if request.uri().scheme_str() == Some("wss") {
        let tls = crate::tls::client_config(upgrade.trust)
            .map_err(|e| Error::InvalidInput(format!("TLS configuration: {e}")))?;
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        )))
    } else {
        None
    };
    let (conn, response) =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
            .await
            .map_err(from_ws)?;
    let selected = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((conn, selected))
}

/// Splits a connection into the transport seam.
pub(crate) fn split(conn: Conn) -> (WsSink, WsStream) {
    let (sink, stream) = conn.split();
    (WsSink(sink), WsStream(stream))
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct WsSink(SplitSink<Conn, Message>);

impl Sink<Outgoing> for WsSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(from_ws)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), Error> {
        let message = match item {
            // String -> Utf8Bytes takes the allocation over, no copy.
            Outgoing::Text(text) => Message::Text(text.into()),
            Outgoing::Binary(bytes) => Message::Binary(bytes.into()),
            Outgoing::Close { code, reason } => Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            })),
        };
        Pin::new(&mut self.0).start_send(message).map_err(from_ws)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(from_ws)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(from_ws)
    }
}

/// The receiving half. Pings are answered by tungstenite itself.
#[derive(Debug)]
pub(crate) struct WsStream(SplitStream<Conn>);

/// The close frame's code and reason.
pub(crate) fn close_info(frame: Option<CloseFrame>) -> CloseInfo {
    match frame {
        Some(f) => CloseInfo {
            code: Some(f.code.into()),
            reason: f.reason.as_str().to_owned(),
        },
        None => CloseInfo {
            code: None,
            reason: "close frame without a code".into(),
        },
    }
}

impl Stream for WsStream {
    type Item = Result<Incoming, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = match ready!(self.0.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => Ok(Incoming::Text(text.into())),
                Some(Ok(Message::Binary(_))) => Ok(Incoming::Binary),
                Some(Ok(Message::Close(frame))) => Ok(Incoming::Closed(close_info(frame))),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) => Err(from_ws(e)),
                None => return Poll::Ready(None),
            };
            return Poll::Ready(Some(item));
        }
    }
}
