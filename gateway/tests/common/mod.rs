//! The harness every integration test shares: a gateway started in-process
//! on `127.0.0.1:0`, real WebSocket clients, a raw HTTP/1.1 client, and
//! helpers that await events with a timeout and fail the test clearly.
//!
//! Each test binary uses only part of it.
#![allow(dead_code, unreachable_pub)]

use pantheon_client::protocol::{Data, PeerId, ServerMessage};
use pantheon_client::raw::{RawOptions, RawSocket};
use pantheon_client::{Client, Event, Options};
use pantheon_gateway::gateway::Shared;
use pantheon_gateway::{Config, Gateway};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expected event may take. Generous: it bounds a
/// failing test, not a passing one.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut` for at most `limit`, failing the test with `what` if it
/// takes longer.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A gateway running in this test's runtime.
#[derive(Debug)]
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where WebTransport listens (UDP), when started with it.
    pub wt: Option<SocketAddr>,
    /// Its shared state (hub, metrics, ...).
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    /// The task running `Gateway::run`.
    pub join_handle: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// A gateway with the test defaults (`Config::for_tests`).
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A gateway whose config `adjust` changed first.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::build(adjust, false).await
    }

    /// A gateway serving WebTransport too (self-signed certificate; connect
    /// with [`Options::insecure`]).
    pub async fn with_webtransport(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::build(adjust, true).await
    }

    async fn build(adjust: impl FnOnce(&mut Config), webtransport: bool) -> Self {
        let mut cfg = Config::for_tests(0);
        adjust(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut wt = None;
        let gw = if webtransport {
            let certs = Arc::new(
                pantheon_certs::Store::new(pantheon_certs::Source::self_signed_local())
                    .expect("dev cert"),
            );
            let listener = pantheon_gateway::webtransport::Listener::bind(
                "127.0.0.1:0".parse().unwrap(),
                &certs,
                &cfg,
            )
            .expect("bind WebTransport");
            wt = Some(listener.local_addr().unwrap());
            Gateway::builder(cfg).webtransport(certs, listener).build()
        } else {
            Gateway::new(cfg)
        };
        let shared = gw.shared().clone();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let join_handle = tokio::spawn(gw.run(listener, async move {
            stop_rx.await.ok();
        }));
        Self {
            addr,
            wt,
            shared,
            stop: Some(stop),
            join_handle,
        }
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The WebTransport URL (started [`Self::with_webtransport`]).
    pub fn wt_url(&self) -> String {
        let wt = self.wt.expect("started without WebTransport");
        format!("https://{wt}/wt")
    }

    /// Refused connections counted for `transport` and `reason`.
    pub fn refused(
        &self,
        transport: pantheon_gateway::metrics::Transport,
        reason: &'static str,
    ) -> u64 {
        self.shared.metrics.refused_count(transport, reason)
    }

    /// A welcomed client with default options.
    pub async fn client(&self) -> Client {
        self.client_with(Options::default()).await
    }

    /// A welcomed client.
    pub async fn client_with(&self, options: Options) -> Client {
        within(
            WAIT,
            "connect",
            Client::connect_with(&self.ws_url(), options),
        )
        .await
        .expect("connect")
    }

    /// A bare WebSocket (nothing sent yet).
    pub async fn raw(&self) -> RawSocket {
        self.raw_with(&RawOptions::default())
            .await
            .expect("raw connect")
    }

    /// A bare WebSocket with options; the upgrade may fail.
    pub async fn raw_with(
        &self,
        options: &RawOptions,
    ) -> Result<RawSocket, pantheon_client::Error> {
        within(
            WAIT,
            "raw connect",
            RawSocket::connect_with(&self.ws_url(), options),
        )
        .await
    }

    /// `GET path`: the status and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let r = self.http("GET", path, &[]).await;
        (r.status, r.body)
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        within(
            WAIT,
            "HTTP response",
            http_request(self.addr, method, path, headers),
        )
        .await
    }

    /// Starts the drain (as SIGTERM would).
    pub fn drain(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return.
    pub async fn stopped(&mut self, limit: Duration) -> std::io::Result<()> {
        within(limit, "Gateway::run to return", &mut self.join_handle)
            .await
            .expect("gateway task panicked")
    }

    /// Open WebSocket connections, as the gateway counts them.
    pub fn websocket_connections(&self) -> i64 {
        self.shared
            .metrics
            .connections(pantheon_gateway::metrics::Transport::websocket)
            .get()
    }

    /// Polls `cond` (on the gateway's own state) until it holds.
    pub async fn until(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        within(WAIT, what, async {
            while !cond(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request to `addr` on a fresh connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("HTTP connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("HTTP write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("HTTP read");
    let text = String::from_utf8(raw).expect("HTTP response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The next event, which must be a message: its `seq` and the message.
pub async fn next_msg(c: &mut Client) -> (Option<u64>, ServerMessage) {
    match within(WAIT, "the next event", c.next_event()).await {
        Some(Event::Message { seq, message }) => (seq, message),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event's message.
pub async fn next(c: &mut Client) -> ServerMessage {
    next_msg(c).await.1
}

/// Reads events until the connection ends; returns the close code and the
/// messages that came before it.
pub async fn until_closed(c: &mut Client, limit: Duration) -> (Option<u16>, Vec<ServerMessage>) {
    within(limit, "the connection to close", async {
        let mut seen = Vec::new();
        loop {
            match c.next_event().await {
                Some(Event::Message { message, .. }) => seen.push(message),
                Some(Event::Closed { code, .. }) => return (code, seen),
                None => return (None, seen),
            }
        }
    })
    .await
}

/// Asserts that no event is buffered right now.
pub fn assert_quiet(c: &mut Client) {
    if let Some(e) = c.try_next_event() {
        panic!("unexpected event {e:?}");
    }
}

static FENCES: AtomicU64 = AtomicU64::new(1);

/// Proves `to` received nothing from `from`'s actions so far except what the
/// caller already read: `from` signals `to` in `room`, and that signal must be
/// `to`'s very next event (one sender's messages to one recipient arrive in
/// order, so anything `from` caused earlier would come first).
pub async fn fence(from: &Client, to: &mut Client, room: &str) {
    let n = FENCES.fetch_add(1, Ordering::Relaxed);
    let marker = json!({ "fence": n });
    within(
        WAIT,
        "fence signal ack",
        from.signal(room, to.peer(), &marker),
    )
    .await
    .expect("fence signal");
    match next(to).await {
        ServerMessage::Signal { from: f, data, .. }
            if &f == from.peer() && json_of(&data) == marker => {}
        other => panic!("expected only the fence signal {marker}, got {other:?} first"),
    }
}

/// `data` as a JSON value.
pub fn json_of(data: &Data) -> Value {
    serde_json::from_str(data.as_str()).expect("data is JSON")
}

/// Expects `peer_joined` of `peer` in `room`; returns its meta as JSON.
pub async fn expect_peer_joined(c: &mut Client, room: &str, peer: &PeerId) -> Value {
    match next(c).await {
        ServerMessage::PeerJoined {
            room: r,
            peer: p,
            meta,
        } if r.as_str() == room && &p == peer => serde_json::from_str(meta.as_str()).unwrap(),
        other => panic!("expected peer_joined of {peer} in {room}, got {other:?}"),
    }
}

/// Expects `peer_left` of `peer` in `room`; returns the reason as text.
pub async fn expect_peer_left(c: &mut Client, room: &str, peer: &PeerId) -> String {
    match next(c).await {
        ServerMessage::PeerLeft {
            room: r,
            peer: p,
            reason,
        } if r.as_str() == room && &p == peer => serde_json::to_value(reason)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        other => panic!("expected peer_left of {peer} in {room}, got {other:?}"),
    }
}

/// Two clients in `room`, `a` first; `a`'s `peer_joined` of `b` consumed.
pub async fn pair(gw: &TestGateway, room: &str) -> (Client, Client) {
    let mut a = gw.client().await;
    let b = gw.client().await;
    a.join(room, None).await.expect("a joins");
    b.join(room, None).await.expect("b joins");
    expect_peer_joined(&mut a, room, b.peer()).await;
    (a, b)
}

/// Options that resume `c`'s session.
pub fn resume_of(c: &Client) -> Options {
    Options {
        resume: Some(c.resume_info()),
        ..Options::default()
    }
}

/// Proves nothing was delivered to `c` that it has not read: `c`'s own
/// `ping` is answered after everything queued for it before, so once the
/// `pong` is back any earlier event is already buffered, and there must be
/// none. Callers make sure whatever they want to rule out happened first
/// (e.g. its sender's request was acknowledged).
pub async fn assert_nothing_pending(c: &mut Client) {
    within(WAIT, "pong", c.ping()).await.expect("ping");
    assert_quiet(c);
}

/// Expects an `error` event with `code` and `id`; returns its message.
pub async fn expect_error(
    c: &mut Client,
    id: Option<u64>,
    code: pantheon_client::protocol::ErrorCode,
) -> String {
    match next(c).await {
        ServerMessage::Error {
            id: got_id,
            code: got_code,
            message,
        } if got_id == id && got_code == code => message,
        other => panic!("expected error {code} with id {id:?}, got {other:?}"),
    }
}

/// A WebSocket spoken by hand over TCP: it writes only what it is told to
/// and reads only when asked, so it never answers a ping (tungstenite
/// answers them whenever its socket is read, and fails reading a closed
/// connection while flushing that answer).
#[derive(Debug)]
pub struct BareSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One frame read by a [`BareSocket`].
#[derive(Debug, PartialEq, Eq)]
pub enum BareFrame {
    /// Text.
    Text(String),
    /// Ping.
    Ping,
    /// Close, with its code.
    Close(Option<u16>),
    /// Any other opcode.
    Other(u8),
}

impl BareSocket {
    /// Upgrades `GET /ws` (no subprotocol offered).
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with_receive_buffer(addr, None).await
    }

    /// [`Self::connect`] with a small kernel receive buffer, for a client
    /// that stops reading and must be seen to stop soon.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, rcvbuf: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        Self { stream, buf }
    }

    /// Sends a text frame (masked with a zero key, as a client must mask).
    pub async fn send_text(&mut self, text: &str) {
        let frame = pantheon_client::raw::ws_frame(0x1, text.as_bytes());
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends bytes as they are (a frame, part of one, anything).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a close frame, with a status code or (as a browser's plain
    /// `WebSocket.close()` does) without one.
    pub async fn send_close(&mut self, code: Option<u16>) {
        let payload = code.map(u16::to_be_bytes);
        let payload: &[u8] = payload.as_ref().map_or(&[], |p| p);
        let mut frame = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// The next frame; `None` at the end of the connection.
    pub async fn read_frame(&mut self) -> Option<BareFrame> {
        if !self.fill(2).await {
            return None;
        }
        let opcode = self.buf[0] & 0x0f;
        let (len, header) = match self.buf[1] & 0x7f {
            126 => {
                if !self.fill(4).await {
                    return None;
                }
                (
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    4,
                )
            }
            127 => {
                if !self.fill(10).await {
                    return None;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (usize::from(n), 2),
        };
        if !self.fill(header + len).await {
            return None;
        }
        let payload: Vec<u8> = self.buf.drain(..header + len).skip(header).collect();
        Some(match opcode {
            1 => BareFrame::Text(String::from_utf8(payload).expect("UTF-8 text")),
            8 => BareFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            9 => BareFrame::Ping,
            other => BareFrame::Other(other),
        })
    }
}
