//! WebTransport end to end: a gateway on loopback with its WebTransport
//! listener, spoken to by the wtransport client (an implementation
//! independent of the server's web-transport-quinn) and, where WebSocket is
//! the other side, by pantheon-client's raw WebSocket.

use base64::Engine as _;
use pantheon_certs::{Source, Store};
use pantheon_client::raw::{Frame, RawSocket};
use pantheon_gateway::gateway::Shared;
use pantheon_gateway::metrics::Transport;
use pantheon_gateway::{Config, Gateway, webtransport};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use wtransport::endpoint::ConnectOptions;
use wtransport::error::ConnectionError;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream, VarInt};

const WAIT: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A gateway serving WebSocket on TCP and WebTransport on UDP, both on
/// loopback with free ports.
struct Gw {
    http: SocketAddr,
    wt: SocketAddr,
    certs: Arc<Store>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<std::io::Result<()>>,
}

impl Gw {
    async fn start() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::on("127.0.0.1:0".parse().unwrap(), adjust).await
    }

    /// With the WebTransport listener bound to `wt_addr`.
    async fn on(wt_addr: SocketAddr, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests(0);
        adjust(&mut config);
        let certs = Arc::new(Store::new(Source::self_signed_local()).expect("dev cert"));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wt = webtransport::Listener::bind(wt_addr, &certs, &config).expect("bind WebTransport");
        let (http, wt_addr) = (tcp.local_addr().unwrap(), wt.local_addr().unwrap());
        let gateway = Gateway::builder(config)
            .webtransport(certs.clone(), wt)
            .build();
        let shared = gateway.shared().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(gateway.run(tcp, async move {
            let _ = stopped.await;
        }));
        Self {
            http,
            wt: wt_addr,
            certs,
            shared,
            stop: Some(stop),
            run,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/wt", self.wt.port())
    }

    /// A client that pins the gateway's certificate by hash, as a browser's
    /// `serverCertificateHashes` does.
    fn client_config(&self) -> ClientConfig {
        let hash = self.certs.current_hash().expect("self-signed");
        let digest: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(&hash.value)
            .unwrap()
            .try_into()
            .unwrap();
        ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(digest)])
            .build()
    }

    async fn connect_to(
        &self,
        options: ConnectOptions,
    ) -> Result<Connection, wtransport::error::ConnectingError> {
        let endpoint = Endpoint::client(self.client_config()).unwrap();
        within("WebTransport connect", endpoint.connect(options)).await
    }

    /// A WebTransport session with its control stream open, nothing sent.
    async fn wt(&self) -> Wt {
        let conn = self
            .connect_to(ConnectOptions::builder(self.url()).build())
            .await
            .expect("WebTransport session");
        Wt::open(conn).await
    }

    /// A welcomed WebTransport session.
    async fn wt_hello(&self) -> (Wt, Value) {
        let mut wt = self.wt().await;
        wt.send(json!({"type": "hello", "v": 1, "id": 1})).await;
        let welcome = wt.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (wt, welcome)
    }

    async fn ws(&self) -> Ws {
        let raw = within(
            "WebSocket connect",
            RawSocket::connect(&format!("ws://{}/ws", self.http)),
        )
        .await
        .expect("WebSocket");
        Ws(raw)
    }

    async fn ws_hello(&self) -> (Ws, Value) {
        let mut ws = self.ws().await;
        ws.send(json!({"type": "hello", "v": 1})).await;
        let welcome = ws.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        within("HTTP response", s.read_to_string(&mut raw))
            .await
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    fn wt_sessions(&self) -> i64 {
        self.shared
            .metrics
            .connections(Transport::webtransport)
            .get()
    }

    async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        within(what, async {
            while !cond(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    fn refused(&self, reason: &str) -> bool {
        self.shared.metrics.encode().lines().any(|l| {
            l.starts_with("pantheon_connections_refused_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.run.abort();
    }
}

/// A WebTransport session and its NDJSON control stream.
struct Wt {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    buf: Vec<u8>,
}

impl Wt {
    async fn open(conn: Connection) -> Self {
        let (send, recv) = within("control stream", async {
            conn.open_bi().await.unwrap().await
        })
        .await
        .expect("control stream");
        Self {
            conn,
            send,
            recv,
            buf: Vec::new(),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("write control stream");
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// The next line, or `None` once the stream ended.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8(line[..pos].to_vec()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn recv(&mut self) -> Value {
        let line = within("a message", self.line())
            .await
            .expect("a message, not the end");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Skips messages until the session closes; its application code and
    /// reason.
    async fn closed(&mut self) -> (u32, String) {
        within("the session close", async {
            while self.line().await.is_some() {}
            // wtransport reports the CLOSE_WEBTRANSPORT_SESSION capsule
            // through pending accepts, not through `closed()`.
            match self.conn.accept_uni().await {
                Err(ConnectionError::ApplicationClosed(close)) => (
                    close.code().into_inner() as u32,
                    String::from_utf8_lossy(close.reason()).into_owned(),
                ),
                other => panic!("expected an application close, got {:?}", other.err()),
            }
        })
        .await
    }
}

struct Ws(RawSocket);

impl Ws {
    async fn send(&mut self, msg: Value) {
        self.0.send_text(msg.to_string()).await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        loop {
            match within("a WebSocket message", self.0.recv()).await.unwrap() {
                Some(Frame::Text(t)) => return serde_json::from_str(&t).unwrap(),
                Some(Frame::Ping(_) | Frame::Pong(_)) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    async fn close_code(&mut self) -> Option<u16> {
        within("the WebSocket close", self.0.recv_close())
            .await
            .unwrap()
            .code
    }
}

#[tokio::test]
async fn hello_and_welcome_over_ndjson() {
    let gw = Gw::start().await;
    let (mut wt, welcome) = gw.wt_hello().await;
    assert_eq!(welcome["id"], 1);
    assert_eq!(welcome["v"], 1);
    assert_eq!(welcome["resumed"], false);
    assert!(welcome.get("seq").is_none());
    // Two messages in one write, the second split over two writes.
    wt.send_raw(b"{\"type\":\"ping\",\"id\":2}\n{\"type\":\"pi")
        .await;
    wt.send_raw(b"ng\",\"id\":3}\r\n").await;
    let pong = wt.recv().await;
    assert_eq!(
        (
            pong["type"].as_str(),
            pong["id"].as_u64(),
            pong["seq"].as_u64()
        ),
        (Some("pong"), Some(2), Some(1))
    );
    let pong = wt.recv().await;
    assert_eq!(
        (pong["id"].as_u64(), pong["seq"].as_u64()),
        (Some(3), Some(2))
    );

    // Counted as a WebTransport connection, in metrics and /health.
    assert_eq!(gw.wt_sessions(), 1);
    let (status, body) = gw.get("/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["connections"]["webtransport"], 1, "{health}");
    assert_eq!(health["connections"]["websocket"], 0, "{health}");
}

#[tokio::test]
async fn an_unspecified_ipv6_address_serves_ipv4_and_ipv6() {
    // `localhost` makes browsers try ::1 first.
    let gw = Gw::on("[::]:0".parse().unwrap(), |_| {}).await;
    for host in ["127.0.0.1", "[::1]", "localhost"] {
        let url = format!("https://{host}:{}/wt", gw.wt.port());
        let conn = gw
            .connect_to(ConnectOptions::builder(url).build())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let mut wt = Wt::open(conn).await;
        wt.send(json!({"type": "hello"})).await;
        assert_eq!(wt.recv().await["type"], "welcome", "{host}");
    }
}

#[tokio::test]
async fn webtransport_and_websocket_peers_signal_both_ways() {
    let gw = Gw::start().await;
    let (mut wt, wt_welcome) = gw.wt_hello().await;
    let (mut ws, ws_welcome) = gw.ws_hello().await;
    let (wt_peer, ws_peer) = (wt_welcome["peer"].clone(), ws_welcome["peer"].clone());

    wt.send(json!({"type": "join", "room": "r1", "id": 10, "meta": {"t": "wt"}}))
        .await;
    let joined = wt.recv().await;
    assert_eq!(
        (joined["type"].as_str(), joined["id"].as_u64()),
        (Some("joined"), Some(10))
    );
    ws.send(json!({"type": "join", "room": "r1", "id": 20}))
        .await;
    let joined = ws.recv().await;
    assert_eq!(
        joined["peers"],
        json!([{"peer": wt_peer, "meta": {"t": "wt"}}])
    );
    let notice = wt.recv().await;
    assert_eq!(
        (notice["type"].as_str(), &notice["peer"]),
        (Some("peer_joined"), &ws_peer)
    );

    let offer = json!({"sdp": "v=0 offer", "type": "offer"});
    wt.send(json!({"type": "signal", "room": "r1", "to": ws_peer, "data": offer, "id": 11}))
        .await;
    assert_eq!(wt.recv().await["type"], "ack");
    let got = ws.recv().await;
    assert_eq!(
        (got["type"].as_str(), &got["from"], &got["data"]),
        (Some("signal"), &wt_peer, &offer)
    );

    let answer = json!({"sdp": "v=0 answer", "type": "answer"});
    ws.send(json!({"type": "signal", "room": "r1", "to": wt_peer, "data": answer, "id": 21}))
        .await;
    assert_eq!(ws.recv().await["type"], "ack");
    let got = wt.recv().await;
    assert_eq!(
        (got["type"].as_str(), &got["from"], &got["data"]),
        (Some("signal"), &ws_peer, &answer)
    );
}

/// Joins `room` with a WebTransport and a WebSocket peer; the WebSocket side
/// has seen the other join.
async fn pair(gw: &Gw, room: &str) -> (Wt, Value, Ws) {
    let (mut wt, welcome) = gw.wt_hello().await;
    let (mut ws, _) = gw.ws_hello().await;
    ws.send(json!({"type": "join", "room": room})).await;
    assert_eq!(ws.recv().await["type"], "joined");
    wt.send(json!({"type": "join", "room": room})).await;
    assert_eq!(wt.recv().await["type"], "joined");
    assert_eq!(ws.recv().await["type"], "peer_joined");
    (wt, welcome, ws)
}

#[tokio::test]
async fn finishing_the_control_stream_then_closing_is_a_goodbye() {
    let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut wt, welcome, mut ws) = pair(&gw, "bye").await;
    // wtransport cannot send the CLOSE_WEBTRANSPORT_SESSION capsule; its
    // orderly goodbye is a FIN on the control stream, then close(0).
    within("FIN acknowledged", wt.send.finish()).await.unwrap();
    wt.conn.close(VarInt::from_u32(0), b"");
    let left = ws.recv().await;
    assert_eq!(
        (
            left["type"].as_str(),
            &left["peer"],
            left["reason"].as_str()
        ),
        (Some("peer_left"), &welcome["peer"], Some("left"))
    );
    gw.until("the session to be gone", |g| g.wt_sessions() == 0)
        .await;
}

#[tokio::test]
async fn a_bare_quic_close_or_a_reset_control_stream_is_a_loss() {
    let grace = Duration::from_millis(300);
    let gw = Gw::with(|c| c.resume_grace = grace).await;
    for (room, reset) in [("bare", false), ("reset", true)] {
        let (mut wt, welcome, mut ws) = pair(&gw, room).await;
        let started = Instant::now();
        if reset {
            wt.send.reset(VarInt::from_u32(7)).unwrap();
        } else {
            wt.conn.close(VarInt::from_u32(0), b"");
        }
        let left = ws.recv().await;
        assert_eq!(
            (
                left["type"].as_str(),
                &left["peer"],
                left["reason"].as_str()
            ),
            (Some("peer_left"), &welcome["peer"], Some("disconnected")),
            "{room}"
        );
        assert!(
            started.elapsed() >= grace,
            "{room}: peer_left before the grace window ended"
        );
    }
}

#[tokio::test]
async fn capsule_close_with_code_0_is_a_goodbye_and_other_codes_are_not() {
    // The CLOSE_WEBTRANSPORT_SESSION capsule is what browsers send on
    // wt.close(); wtransport cannot send one, web-transport-quinn's client
    // can.
    let gw = Gw::with(|c| c.resume_grace = Duration::from_millis(300)).await;
    let hash = gw.certs.current_hash().unwrap();
    let digest = base64::engine::general_purpose::STANDARD
        .decode(&hash.value)
        .unwrap();
    for (code, reason) in [(0u32, "left"), (1001, "disconnected")] {
        let room = format!("caps{code}");
        let client = web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![digest.clone()])
            .unwrap();
        let session = within(
            "connect",
            client.connect(url::Url::parse(&gw.url()).unwrap()),
        )
        .await
        .unwrap();
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        let lines = format!("{{\"type\":\"hello\"}}\n{{\"type\":\"join\",\"room\":\"{room}\"}}\n");
        send.write_all(lines.as_bytes()).await.unwrap();
        let (mut ws, _) = gw.ws_hello().await;
        ws.send(json!({"type": "join", "room": room})).await;
        let joined = ws.recv().await;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.iter().filter(|&&b| b == b'\n').count() < 2 {
            let n = within("welcome and joined", recv.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let peer = joined["peers"][0]["peer"].clone();
        let started = Instant::now();
        session.close(code, b"bye");
        let left = ws.recv().await;
        assert_eq!(
            (
                left["type"].as_str(),
                &left["peer"],
                left["reason"].as_str()
            ),
            (Some("peer_left"), &peer, Some(reason)),
            "close code {code}"
        );
        if code != 0 {
            assert!(
                started.elapsed() >= Duration::from_millis(300),
                "peer_left before the grace window ended"
            );
        }
    }
}

/// A UDP relay in front of the gateway that can be cut, so a client
/// vanishes without closing anything.
async fn relay(to: SocketAddr, cut: watch::Receiver<bool>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(to).await.unwrap();
    let addr = front.local_addr().unwrap();
    let (client_tx, client_rx) = watch::channel(None::<SocketAddr>);
    {
        let (front, back, cut) = (front.clone(), back.clone(), cut.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                let _ = client_tx.send(Some(from));
                let is_cut = *cut.borrow();
                if !is_cut {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client_rx.borrow();
            let is_cut = *cut.borrow();
            if let (Some(to), false) = (to, is_cut) {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_vanished_client_is_lost_after_the_idle_timeout_then_the_grace_window() {
    let gw = Gw::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(600);
        c.resume_grace = Duration::from_millis(400);
    })
    .await;
    let (cut_tx, cut_rx) = watch::channel(false);
    let front = relay(gw.wt, cut_rx).await;
    let url = format!("https://127.0.0.1:{}/wt", front.port());
    let conn = gw
        .connect_to(ConnectOptions::builder(url).build())
        .await
        .unwrap();
    let mut wt = Wt::open(conn).await;
    wt.send(json!({"type": "hello"})).await;
    let welcome = wt.recv().await;
    wt.send(json!({"type": "join", "room": "gone"})).await;
    assert_eq!(wt.recv().await["type"], "joined");
    let (mut ws, _) = gw.ws_hello().await;
    ws.send(json!({"type": "join", "room": "gone"})).await;
    assert_eq!(ws.recv().await["type"], "joined");
    // Quiet for longer than the idle timeout: the keep-alive holds it. (The
    // WebSocket answers the gateway's pings meanwhile.)
    let _ = tokio::time::timeout(Duration::from_millis(900), async {
        loop {
            let _ = ws.0.recv().await;
        }
    })
    .await;
    assert_eq!(
        gw.wt_sessions(),
        1,
        "keep-alive should hold an idle session open"
    );

    cut_tx.send(true).unwrap();
    let cut = Instant::now();
    let left = ws.recv().await;
    let after = cut.elapsed();
    assert_eq!(
        (
            left["type"].as_str(),
            &left["peer"],
            left["reason"].as_str()
        ),
        (Some("peer_left"), &welcome["peer"], Some("disconnected"))
    );
    assert!(
        after >= Duration::from_millis(900),
        "peer_left after {after:?}: before idle timeout + grace"
    );
    assert!(after < Duration::from_secs(4), "peer_left after {after:?}");
    assert_eq!(gw.wt_sessions(), 0);
}

#[tokio::test]
async fn silence_before_hello_closes_with_4001() {
    let gw = Gw::with(|c| c.hello_timeout = Duration::from_millis(200)).await;
    let mut wt = gw.wt().await;
    assert_eq!(wt.closed().await, (4001, "hello expected".to_owned()));

    // Also when the client never opens its control stream.
    let conn = gw
        .connect_to(ConnectOptions::builder(gw.url()).build())
        .await
        .unwrap();
    let closed = within("close", conn.accept_uni()).await;
    match closed {
        Err(ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.code().into_inner(), 4001)
        }
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn an_unsupported_version_gets_the_error_then_4002() {
    let gw = Gw::start().await;
    let mut wt = gw.wt().await;
    wt.send(json!({"type": "hello", "v": 2, "id": 7})).await;
    let error = wt.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_u64()),
        (Some("unsupported_version"), Some(7))
    );
    assert_eq!(wt.closed().await.0, 4002);
}

#[tokio::test]
async fn a_resume_elsewhere_closes_the_old_session_with_4010() {
    let gw = Gw::start().await;
    let (mut wt, welcome) = gw.wt_hello().await;
    wt.send(json!({"type": "ping"})).await;
    assert_eq!(wt.recv().await["seq"], 1);
    // Resumed over WebSocket while the WebTransport session is attached.
    let mut ws = gw.ws().await;
    ws.send(json!({"type": "hello", "resume": {"session": welcome["session"], "last_seq": 1}}))
        .await;
    let resumed = ws.recv().await;
    assert_eq!(
        (resumed["resumed"].as_bool(), &resumed["peer"]),
        (Some(true), &welcome["peer"])
    );
    assert_eq!(wt.closed().await, (4010, "session taken over".to_owned()));

    // And the other way round: a WebTransport resume takes over a WebSocket.
    let mut wt2 = gw.wt().await;
    wt2.send(json!({"type": "hello", "resume": {"session": welcome["session"], "last_seq": 1}}))
        .await;
    assert_eq!(wt2.recv().await["resumed"], true);
    assert_eq!(ws.close_code().await, Some(4010));
}

#[tokio::test]
async fn garbage_lines_get_bad_request_and_the_session_stays() {
    let gw = Gw::start().await;
    let (mut wt, _) = gw.wt_hello().await;
    wt.send_raw(b"not json\n[1,2]\n{\"type\":\"nope\",\"id\":4}\n\n   \n")
        .await;
    for _ in 0..3 {
        let e = wt.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{e}"
        );
    }
    wt.send(json!({"type": "ping", "id": 5})).await;
    let pong = wt.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(5))
    );
}

#[tokio::test]
async fn a_line_over_the_limit_closes_with_1009_without_being_read_whole() {
    let gw = Gw::with(|c| c.limits.max_message_bytes = 1024).await;
    let (mut wt, _) = gw.wt_hello().await;
    // Over max_message_bytes but under 4x: an error, the session stays.
    let mut line = vec![b'x'; 2000];
    line.push(b'\n');
    wt.send_raw(&line).await;
    let e = wt.recv().await;
    assert_eq!(e["code"], "too_large", "{e}");
    // Over 4x without a newline: 1009. The writer keeps going (up to 1 MB)
    // while the gateway has long stopped reading.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..64 {
            if wt.send.write_all(&chunk).await.is_err() {
                break;
            }
        }
        wt
    });
    let mut wt = within("the writer to stop", writer).await.unwrap();
    assert_eq!(wt.closed().await, (1009, "message too large".to_owned()));
}

#[tokio::test]
async fn extra_streams_and_datagrams_are_refused_without_touching_the_control_stream() {
    let gw = Gw::start().await;
    let (mut wt, _) = gw.wt_hello().await;

    // A second bidirectional stream: stopped and reset.
    let (mut send2, mut recv2) = wt.conn.open_bi().await.unwrap().await.unwrap();
    let _ = send2.write_all(b"{\"type\":\"ping\"}\n").await;
    let mut buf = [0u8; 16];
    let read = within("the extra stream's reset", recv2.read(&mut buf)).await;
    assert!(
        matches!(read, Err(wtransport::error::StreamReadError::Reset(_))),
        "{read:?}"
    );
    let stopped = within("the extra stream's stop", send2.stopped()).await;
    assert!(
        matches!(stopped, wtransport::error::StreamWriteError::Stopped(_)),
        "{stopped:?}"
    );

    // Unidirectional streams: stopped, again and again.
    for _ in 0..8 {
        let mut uni = wt.conn.open_uni().await.unwrap().await.unwrap();
        let _ = uni.write_all(&[b'u'; 1000]).await;
        let stopped = within("the uni stream's stop", uni.stopped()).await;
        assert!(
            matches!(stopped, wtransport::error::StreamWriteError::Stopped(_)),
            "{stopped:?}"
        );
    }
    // Datagrams: dropped.
    for _ in 0..100 {
        let _ = wt.conn.send_datagram(b"{\"type\":\"ping\"}");
    }

    wt.send(json!({"type": "ping", "id": 1})).await;
    let pong = wt.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(1))
    );
    assert_eq!(gw.wt_sessions(), 1);
}

#[tokio::test]
async fn connect_requests_are_vetted() {
    let gw = Gw::with(|c| c.allowed_origins = Some(vec!["https://app.example".into()])).await;
    let base = format!("https://127.0.0.1:{}", gw.wt.port());
    for (path, origin, reason) in [
        ("/elsewhere", None, "not_found"),
        ("/wt?v=2", None, "version"),
        ("/wt", Some("https://evil.example"), "origin"),
    ] {
        let mut options = ConnectOptions::builder(format!("{base}{path}"));
        if let Some(origin) = origin {
            options = options.add_header("origin", origin);
        }
        let refused = gw.connect_to(options.build()).await;
        assert!(
            matches!(
                refused,
                Err(wtransport::error::ConnectingError::SessionRejected)
            ),
            "{path}: {:?}",
            refused.err()
        );
        assert!(gw.refused(reason), "{reason} not counted");
    }
    for (path, origin) in [("/wt?v=1", Some("https://app.example")), ("/wt", None)] {
        let mut options = ConnectOptions::builder(format!("{base}{path}"));
        if let Some(origin) = origin {
            options = options.add_header("origin", origin);
        }
        let conn = gw.connect_to(options.build()).await.expect("admitted");
        let mut wt = Wt::open(conn).await;
        wt.send(json!({"type": "hello"})).await;
        assert_eq!(wt.recv().await["type"], "welcome");
    }
}

#[tokio::test]
async fn max_connections_counts_both_transports() {
    let gw = Gw::with(|c| c.max_connections = 1).await;
    let (_ws, _) = gw.ws_hello().await;
    let refused = gw
        .connect_to(ConnectOptions::builder(gw.url()).build())
        .await;
    assert!(refused.is_err(), "a second connection was admitted");
    assert!(gw.refused("max_connections"));
}

#[tokio::test]
async fn drain_sends_reconnect_refuses_new_sessions_then_closes_with_1001() {
    let mut gw = Gw::with(|c| c.drain_timeout = Duration::from_millis(500)).await;
    let (mut wt, _) = gw.wt_hello().await;
    let _ = gw.stop.take().unwrap().send(());
    let reconnect = wt.recv().await;
    assert_eq!(
        (reconnect["type"].as_str(), reconnect["reason"].as_str()),
        (Some("reconnect"), Some("draining"))
    );
    let refused = gw
        .connect_to(ConnectOptions::builder(gw.url()).build())
        .await;
    assert!(refused.is_err(), "admitted while draining");
    assert_eq!(wt.closed().await.0, 1001);
    within("Gateway::run to return", &mut gw.run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn cert_hash_endpoint_serves_the_self_signed_hash() {
    let gw = Gw::start().await;
    let (status, body) = gw.get("/webtransport/cert-hash").await;
    assert_eq!(status, 200, "{body}");
    let hash: Value = serde_json::from_str(&body).unwrap();
    let current = gw.certs.current_hash().unwrap();
    assert_eq!(hash["algorithm"], "sha-256");
    assert_eq!(hash["value"], current.value.as_str());
    assert_eq!(hash["value"].as_str().unwrap().len(), 44);
    assert!(
        hash["expires_at"].as_str().unwrap().ends_with('Z'),
        "{hash}"
    );
    assert_eq!(hash.as_object().unwrap().len(), 3, "{hash}");

    // The hash is the one the QUIC handshake presents: a client pinning it
    // connects (every other test does), and a client pinning another does not.
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new([7; 32])])
        .build();
    let wrong = within(
        "connect",
        Endpoint::client(config).unwrap().connect(gw.url()),
    )
    .await;
    assert!(wrong.is_err());

    // A gateway without WebTransport has no such certificate.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    let run = tokio::spawn(Gateway::new(Config::for_tests(0)).run(plain, std::future::pending()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /webtransport/cert-hash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    run.abort();
}
