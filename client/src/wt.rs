//! The WebTransport transport, on wtransport: an implementation of
//! WebTransport over HTTP/3 independent of the gateway's
//! web-transport-quinn, so talking to the gateway proves interoperability
//! (docs/webtransport-crate-choice.md).
//!
//! Right after the session is ready the client opens one bidirectional
//! stream; both directions carry newline-delimited JSON, one message per
//! line (PROTOCOL.md §1). Lines are decoded with `pantheon_protocol`'s
//! [`LineDecoder`] and written many per write: the writer task feeds a
//! batch and flushes once.
//!
//! **How the server's close is seen.** The gateway closes a session with a
//! `CLOSE_WEBTRANSPORT_SESSION` capsule (code and reason), after finishing
//! the control stream unless the close is urgent (4009, 4010). wtransport
//! reports that capsule only through pending `accept_uni`/`accept_bi`
//! (stream reads fail with `NotConnected`, `Connection::closed` says
//! `LocallyClosed`), so a small task per connection waits in `accept_uni`
//! and hands the session's end to the reader, which reports it as
//! [`Incoming::Closed`] exactly as the WebSocket transport reports a close
//! frame — after every line that came before it.
//!
//! **How the client closes.** wtransport cannot send the capsule; its
//! `Connection::close` is a bare QUIC `CONNECTION_CLOSE`, which the gateway
//! counts as a loss whatever its code (it cannot read that code reliably).
//! So a goodbye — code 0, or 1000 as [`crate::Client::close`] passes it —
//! is the orderly end the gateway reads as one: FIN on the control stream,
//! wait until it is acknowledged, then close the connection with code 0.
//! Any other code (1001, ...) closes the connection at once with that code:
//! a loss, which starts the resume grace window, as 1001 means anyway.
//! Dropping the transport resets the control stream first, because quinn
//! finishes a dropped stream (a FIN) and the gateway would take that for a
//! goodbye.

use crate::error::{CloseInfo, Error};
use crate::transport::{Incoming, Outgoing};
use base64::Engine as _;
use bytes::{Buf, BufMut, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, Sink, StreamExt};
use pantheon_protocol::ndjson::LineDecoder;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use wtransport::endpoint::ConnectOptions;
use wtransport::endpoint::endpoint_side::Client as ClientSide;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream, VarInt};

/// The longest line accepted from the server: 4 × the default
/// `max_message_bytes` (64 KiB), as the server accepts from a client.
pub(crate) const MAX_LINE: usize = 4 * 64 * 1024;
/// Buffered bytes beyond which the sink writes before taking more.
const FLUSH_AT: usize = 64 * 1024;
/// After the server finished the control stream, how long to wait for its
/// session close (the capsule follows once the FIN is acknowledged).
const SERVER_CLOSE_WAIT: Duration = Duration::from_secs(3);
/// QUIC keep-alive from the client's side too (the gateway sends its own
/// every `PING_INTERVAL_MS`), well under quinn's 30 s idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Error code for the control stream reset when the transport is dropped,
/// and for streams the server opens (protocol v1 has none).
const CANCELLED: u32 = 0;
/// How long [`fetch_cert_hash`] may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebTransport client endpoint — one UDP socket and one QUIC endpoint
/// task — that several connections can share through
/// [`crate::Options::wt_endpoint`]. Without one, every connection opens its
/// own (as independent clients would).
///
/// Sharing costs the client less per packet (one socket read for the
/// packets of many connections); the server sees the same. Create it inside
/// the tokio runtime that will use it: its task runs there.
#[derive(Clone)]
pub struct WtEndpoint(Arc<Endpoint<ClientSide>>);

impl std::fmt::Debug for WtEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WtEndpoint")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl WtEndpoint {
    /// Binds an endpoint that trusts servers as `options` say
    /// ([`crate::Options::cert_hashes`],
    /// [`crate::Options::insecure_skip_verify`], else the system's roots).
    pub fn new(options: &crate::Options) -> Result<Self, Error> {
        let dial = Dial {
            origin: None,
            cert_hashes: &options.cert_hashes,
            insecure: options.insecure_skip_verify,
            read_buffer: options.read_buffer,
            endpoint: None,
        };
        Ok(Self(Arc::new(Endpoint::client(client_config(&dial))?)))
    }
}

/// How to open a WebTransport session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dial<'a> {
    /// A shared endpoint to connect from (its trust settings apply).
    pub(crate) endpoint: Option<&'a WtEndpoint>,
    /// Sent as `Origin` on the extended CONNECT.
    pub(crate) origin: Option<&'a str>,
    /// `serverCertificateHashes`; empty: the system's root certificates.
    pub(crate) cert_hashes: &'a [[u8; 32]],
    /// Accept any certificate.
    pub(crate) insecure: bool,
    /// The most read from the control stream at once.
    pub(crate) read_buffer: usize,
}

/// How the session ended, once it has: set by the close watcher (the
/// server's close or the connection's loss) or by the sink (our own close),
/// whichever comes first.
type Ended = Arc<watch::Sender<Option<CloseInfo>>>;

fn set_ended(ended: &Ended, info: CloseInfo) {
    ended.send_if_modified(|slot| {
        if slot.is_none() {
            *slot = Some(info);
            true
        } else {
            false
        }
    });
}

fn client_config(dial: &Dial<'_>) -> ClientConfig {
    let builder = ClientConfig::builder().with_bind_default();
    let builder = if dial.insecure {
        builder.with_no_cert_validation()
    } else if !dial.cert_hashes.is_empty() {
        builder
            .with_server_certificate_hashes(dial.cert_hashes.iter().copied().map(Sha256Digest::new))
    } else {
        builder.with_native_certs()
    };
    builder.keep_alive_interval(Some(KEEP_ALIVE)).build()
}

fn from_connecting(e: ConnectingError) -> Error {
    match e {
        ConnectingError::InvalidUrl(m) => Error::InvalidInput(m),
        ConnectingError::DnsLookup(e) => Error::Io(e),
        ConnectingError::SessionRejected => Error::Handshake {
            status: None,
            message: "the server rejected the WebTransport session (CONNECT answered non-2xx)"
                .into(),
        },
        ConnectingError::ConnectionError(e) => from_connection(e),
        other => Error::Transport(other.to_string()),
    }
}

fn from_connection(e: ConnectionError) -> Error {
    close_info(&e).into()
}

/// The first code of the range HTTP/3 reserves for WebTransport application
/// error codes (draft-ietf-webtrans-http3, §4.3).
const WT_ERROR_FIRST: u64 = 0x52e4_a40f_a8db;

/// A WebTransport application code carried in the HTTP/3 error space, as a
/// server's QUIC `CONNECTION_CLOSE` after a session close carries it.
fn from_http3(code: u64) -> Option<u64> {
    let last = WT_ERROR_FIRST + u64::from(u32::MAX) + u64::from(u32::MAX) / 0x1e;
    (WT_ERROR_FIRST..=last).contains(&code).then(|| {
        let shifted = code - WT_ERROR_FIRST;
        shifted - shifted / 0x1f
    })
}

/// How a session ended, from wtransport's error.
fn close_info(e: &ConnectionError) -> CloseInfo {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let raw = close.code().into_inner();
            let code = from_http3(raw).unwrap_or(raw);
            let reason = String::from_utf8_lossy(close.reason()).into_owned();
            match u16::try_from(code) {
                Ok(code) => CloseInfo {
                    code: Some(code),
                    reason,
                },
                Err(_) => CloseInfo::lost(format!("closed with application code {code}: {reason}")),
            }
        }
        ConnectionError::TimedOut => CloseInfo::lost("QUIC idle timeout"),
        ConnectionError::LocallyClosed => CloseInfo::lost("connection closed locally"),
        other => CloseInfo::lost(other.to_string()),
    }
}

/// Opens a session and its control stream (nothing is sent on it yet).
pub(crate) async fn open(url: &str, dial: Dial<'_>) -> Result<(WtSink, WtStream), Error> {
    let endpoint = match dial.endpoint {
        Some(shared) => shared.0.clone(),
        None => Arc::new(Endpoint::client(client_config(&dial))?),
    };
    let mut options = ConnectOptions::builder(url);
    if let Some(origin) = dial.origin {
        options = options.add_header("origin", origin);
    }
    let conn = endpoint
        .connect(options.build())
        .await
        .map_err(from_connecting)?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(from_connection)?
        .await
        .map_err(|e| Error::Transport(format!("opening the control stream: {e}")))?;
    let (ended, ended_rx) = watch::channel(None);
    let ended = Arc::new(ended);
    tokio::spawn(watch_close(conn.clone(), ended.clone()));
    let reader = Reader {
        recv,
        decoder: LineDecoder::new(MAX_LINE),
        buf: vec![0; dial.read_buffer.clamp(1024, 64 * 1024)].into_boxed_slice(),
        ended: ended_rx,
        done: false,
        _endpoint: endpoint,
    };
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        Some((item, reader))
    })
    .boxed();
    let sink = WtSink {
        conn,
        send: Some(send),
        buf: BytesMut::new(),
        ended,
        closing: None,
        closed: false,
    };
    Ok((sink, WtStream(stream)))
}

/// Waits for the session's end (the server's capsule, or the connection's
/// close or loss) and records it; refuses streams the server opens. Ends
/// early when the reader is gone, so that it does not keep the connection.
async fn watch_close(conn: Connection, ended: Ended) {
    let error = loop {
        tokio::select! {
            () = ended.closed() => return,
            accepted = conn.accept_uni() => match accepted {
                Ok(stream) => stream.stop(VarInt::from_u32(CANCELLED)),
                Err(e) => break e,
            },
        }
    };
    tracing::debug!(error = %error, "WebTransport session ended");
    set_ended(&ended, close_info(&error));
}

/// The receiving half: one [`Incoming::Text`] per line, then one
/// [`Incoming::Closed`].
pub(crate) struct WtStream(BoxStream<'static, Result<Incoming, Error>>);

impl std::fmt::Debug for WtStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtStream").finish_non_exhaustive()
    }
}

impl futures_util::Stream for WtStream {
    type Item = Result<Incoming, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_next_unpin(cx)
    }
}

struct Reader {
    recv: RecvStream,
    decoder: LineDecoder,
    buf: Box<[u8]>,
    ended: watch::Receiver<Option<CloseInfo>>,
    done: bool,
    /// Kept for as long as the connection is read.
    _endpoint: Arc<Endpoint<ClientSide>>,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Incoming, Error>> {
        if self.done {
            return None;
        }
        loop {
            match self.decoder.next_line() {
                Ok(Some(line)) => return Some(Ok(Incoming::Text(line))),
                Ok(None) => {}
                Err(too_long) => {
                    self.done = true;
                    return Some(Err(Error::Protocol(format!(
                        "the server sent a {too_long}"
                    ))));
                }
            }
            let n = self.decoder.room_left().min(self.buf.len());
            // Lines already received come before the close: read first.
            let why = tokio::select! {
                biased;
                read = self.recv.read(&mut self.buf[..n]) => match read {
                    Ok(Some(k)) => {
                        self.decoder.extend(&self.buf[..k]);
                        continue;
                    }
                    Ok(None) => "the server finished the control stream without closing the session".to_owned(),
                    Err(e) => format!("control stream: {e}"),
                },
                ended = self.ended.wait_for(Option::is_some).map(|r| r.ok().and_then(|v| v.clone())) => {
                    if let Some(info) = ended {
                        self.done = true;
                        return Some(Ok(Incoming::Closed(info)));
                    }
                    "the session ended".to_owned()
                }
            };
            return Some(Ok(Incoming::Closed(self.end(why).await)));
        }
    }

    /// The control stream ended: the session's close follows (or came).
    async fn end(&mut self, why: String) -> CloseInfo {
        self.done = true;
        let ended = self
            .ended
            .wait_for(Option::is_some)
            .map(|r| r.ok().and_then(|v| v.clone()));
        match tokio::time::timeout(SERVER_CLOSE_WAIT, ended).await {
            Ok(Some(info)) => info,
            _ => CloseInfo::lost(why),
        }
    }
}

/// The sending half: NDJSON lines on the control stream, one write per
/// batch; [`Outgoing::Close`] closes the session (see the module docs).
pub(crate) struct WtSink {
    conn: Connection,
    /// `None` once a close took it.
    send: Option<SendStream>,
    buf: BytesMut,
    ended: Ended,
    closing: Option<BoxFuture<'static, ()>>,
    closed: bool,
}

impl std::fmt::Debug for WtSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtSink")
            .field("buffered", &self.buf.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WtSink {
    fn closed_error() -> Error {
        Error::Closed {
            code: None,
            reason: "the WebTransport session is closing".into(),
        }
    }

    /// Writes what is buffered.
    fn poll_write_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.buf.is_empty() {
            let Some(send) = self.send.as_mut() else {
                self.buf.clear();
                return Poll::Ready(Err(Self::closed_error()));
            };
            let n = ready!(Pin::new(send).poll_write(cx, &self.buf))?;
            self.buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn start_close(&mut self, code: u16, reason: String) {
        self.closed = true;
        let goodbye = code == 0 || code == 1000;
        let mut send = self.send.take();
        let rest = self.buf.split().freeze();
        let (conn, ended) = (self.conn.clone(), self.ended.clone());
        self.closing = Some(
            async move {
                let wire = if goodbye { 0 } else { code };
                if let Some(send) = send.as_mut() {
                    if goodbye {
                        // The FIN, acknowledged, is the goodbye; the
                        // messages before it go first.
                        if send.write_all(&rest).await.is_ok() {
                            let _ = send.finish().await;
                        }
                    } else {
                        // No FIN: dropped unfinished, quinn would send one.
                        let _ = send.reset(VarInt::from_u32(CANCELLED));
                    }
                }
                set_ended(
                    &ended,
                    CloseInfo {
                        code: Some(wire),
                        reason: reason.clone(),
                    },
                );
                conn.close(VarInt::from_u32(wire.into()), reason.as_bytes());
            }
            .boxed(),
        );
    }
}

impl Sink<Outgoing> for WtSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.closed {
            return Poll::Ready(Err(Self::closed_error()));
        }
        if self.buf.len() >= FLUSH_AT {
            ready!(self.poll_write_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), Error> {
        if self.closed {
            return Err(Self::closed_error());
        }
        match item {
            Outgoing::Text(text) => {
                self.buf.reserve(text.len() + 1);
                self.buf.put_slice(text.as_bytes());
                self.buf.put_u8(b'\n');
            }
            // No binary frames over WebTransport: the bytes go on the stream
            // as they are (tests use it for partial and malformed lines).
            Outgoing::Binary(bytes) => self.buf.put_slice(&bytes),
            Outgoing::Close { code, reason } => self.start_close(code, reason),
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_buf(cx))?;
        if let Some(closing) = self.closing.as_mut() {
            ready!(closing.poll_unpin(cx));
            self.closing = None;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_flush(cx)
    }
}

impl Drop for WtSink {
    fn drop(&mut self) {
        if let Some(send) = self.send.as_mut() {
            // quinn finishes a dropped stream, and a FIN is a goodbye.
            let _ = send.reset(VarInt::from_u32(CANCELLED));
        }
    }
}

/// Fetches the SHA-256 digest of the gateway's self-signed WebTransport
/// certificate from `GET /webtransport/cert-hash` on its HTTP port, for
/// [`crate::Options::cert_hashes`].
///
/// `http_base_url` is `http://HOST:PORT` (a path after it is ignored).
/// A plain HTTP/1.1 request over TCP: the endpoint exists while the
/// certificate is self-signed, so on the plain-text port; `https://` is not
/// supported.
///
/// ```no_run
/// # async fn t() -> Result<(), pantheon_client::Error> {
/// use pantheon_client::{Client, Options, fetch_cert_hash};
/// let hash = fetch_cert_hash("http://127.0.0.1:3000").await?;
/// let client = Client::connect_with("https://127.0.0.1:3000/wt", Options::with_cert_hash(hash)).await?;
/// # Ok(()) }
/// ```
pub async fn fetch_cert_hash(http_base_url: &str) -> Result<[u8; 32], Error> {
    let authority = http_base_url
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            Error::InvalidInput(format!("{http_base_url}: expected http://HOST:PORT"))
        })?;
    let body = tokio::time::timeout(HTTP_TIMEOUT, http_get(authority, "/webtransport/cert-hash"))
        .await
        .map_err(|_| Error::Timeout(HTTP_TIMEOUT))??;
    parse_cert_hash(&body)
}

/// `GET path` on a fresh connection; the body of a 200 answer.
async fn http_get(authority: &str, path: &str) -> Result<Vec<u8>, Error> {
    // "host" or "[v6]" without a port: 80.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Protocol(format!("GET {path}: no end of the response head")))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = &raw[end + 4..];
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("GET {path}: bad status line in {head:?}")))?;
    if status != 200 {
        return Err(Error::Handshake {
            status: Some(status),
            message: format!("GET {path} answered {status}"),
        });
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")
        })
    });
    if chunked {
        dechunk(body).ok_or_else(|| Error::Protocol(format!("GET {path}: bad chunked body")))
    } else {
        Ok(body.to_vec())
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// `{"algorithm": "sha-256", "value": "<base64>", ...}` → the digest.
fn parse_cert_hash(body: &[u8]) -> Result<[u8; 32], Error> {
    let bad = |why: &str| Error::Protocol(format!("/webtransport/cert-hash: {why}"));
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    if json["algorithm"] != "sha-256" {
        return Err(bad(&format!(
            "algorithm {} is not sha-256",
            json["algorithm"]
        )));
    }
    let value = json["value"].as_str().ok_or_else(|| bad("no value"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| bad(&format!("value is not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(&format!("value has {} bytes, not 32", b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_codes_come_back_from_the_http3_space() {
        // web-transport-proto's error_to_http3.
        let to_http3 = |code: u32| WT_ERROR_FIRST + u64::from(code) + u64::from(code) / 0x1e;
        for code in [0u32, 1, 0x1d, 0x1e, 0x1f, 1000, 4010, 65535, u32::MAX] {
            assert_eq!(from_http3(to_http3(code)), Some(u64::from(code)), "{code}");
        }
        assert_eq!(from_http3(4010), None);
        assert_eq!(from_http3(WT_ERROR_FIRST - 1), None);
    }

    #[test]
    fn cert_hash_bodies_are_checked() {
        let value = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let body = format!(
            r#"{{"algorithm":"sha-256","value":"{value}","expires_at":"2030-01-01T00:00:00Z"}}"#
        );
        assert_eq!(parse_cert_hash(body.as_bytes()).unwrap(), [7; 32]);
        for bad in [
            "nope".to_owned(),
            r#"{"algorithm":"sha-1","value":"AAAA"}"#.to_owned(),
            r#"{"algorithm":"sha-256","value":"AAAA"}"#.to_owned(),
            r#"{"algorithm":"sha-256","value":"!!"}"#.to_owned(),
            r#"{"algorithm":"sha-256"}"#.to_owned(),
        ] {
            assert!(
                matches!(parse_cert_hash(bad.as_bytes()), Err(Error::Protocol(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
    }

    #[tokio::test]
    async fn cert_hash_urls_must_be_plain_http() {
        for url in [
            "https://127.0.0.1:3000",
            "ws://x/ws",
            "http://",
            "127.0.0.1:3000",
        ] {
            assert!(
                matches!(fetch_cert_hash(url).await, Err(Error::InvalidInput(_))),
                "{url}"
            );
        }
    }
}
