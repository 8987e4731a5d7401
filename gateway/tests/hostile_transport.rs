//! Hostile clients below the protocol, over the transport each concerns:
//! half-open QUIC (handshakes started and never finished, QUIC connections
//! that never open the WebTransport session, sessions that never say
//! `hello`), UDP garbage on `WT_PORT`, and HTTP slowloris on `PORT`
//! (request headers a byte at a time, connections that send nothing).
//!
//! Each test asserts the documented outcome (dropped within
//! `HTTP_HEADER_TIMEOUT_MS` / `HELLO_TIMEOUT_MS`, counted in
//! `pantheon_connections_refused_total` or `pantheon_connections_closed_total`),
//! bounded resources (connection permits and per-address slots all given
//! back), that fresh clients are served meanwhile, and that a calm pair
//! keeps relaying throughout. Attackers connect from 127.0.0.2, the calm
//! clients from 127.0.0.1, so per-address limits can be seen to apply to
//! the one and not the other.

mod common;

use common::{TestGateway, WAIT, within};
use pantheon_client::protocol::ServerMessage;
use pantheon_client::raw::RawSession;
use pantheon_client::{Client, Options};
use pantheon_gateway::Config;
use pantheon_gateway::metrics::Transport;
use pantheon_gateway::webtransport::RETRY_ABOVE_HANDSHAKES;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Where attackers connect from.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The timeouts under test, short so that the tests are.
const HEADER_TIMEOUT: Duration = Duration::from_millis(2_000);
const HELLO_TIMEOUT: Duration = Duration::from_millis(2_000);
/// How late after its timeout a connection may still be open: scheduling
/// on a loaded CI machine, plus quinn's close.
const MARGIN: Duration = Duration::from_millis(1_500);

fn config(per_ip: Option<u32>) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.http_header_timeout = HEADER_TIMEOUT;
        c.hello_timeout = HELLO_TIMEOUT;
        c.max_connections = 1_000;
        c.admission.max_connections_per_ip = per_ip;
    }
}

/// A well-behaved pair relaying in the background (one signal every 20 ms)
/// while an attack runs; [`Calm::stop`] returns the relay times, and panics
/// if a relay failed or took more than 2 s.
struct Calm {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Duration>>,
}

impl Calm {
    async fn start(gw: &TestGateway) -> Self {
        let (a, mut b) = common::pair(gw, "calm").await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                a.signal("calm", b.peer(), &json!({"t": 1}))
                    .await
                    .expect("calm signal");
                let got = within(Duration::from_secs(2), "calm relay", common::next(&mut b)).await;
                assert!(
                    matches!(got, ServerMessage::Signal { .. }),
                    "calm b got {got:?}"
                );
                samples.push(start.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops relaying; at least `min` relays must have happened.
    async fn stop(self, min: usize, what: &str) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = self.task.await.expect("calm pair");
        assert!(
            samples.len() >= min,
            "{what}: only {} relays",
            samples.len()
        );
        samples.sort();
        eprintln!(
            "{what}: calm relay p50 {:?}, max {:?} ({} relays)",
            samples[samples.len() / 2],
            samples[samples.len() - 1],
            samples.len()
        );
        samples
    }
}

/// A fresh WebTransport session is welcomed and answers a ping.
async fn fresh_wt(gw: &TestGateway, what: &str) {
    let mut s = within(
        WAIT,
        what,
        RawSession::connect_with(&gw.wt_url(), &Options::insecure()),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    s.send_text(json!({"type": "hello", "v": 1}).to_string())
        .await
        .expect("hello");
    let w = within(WAIT, what, s.recv_message()).await.expect("welcome");
    assert!(
        matches!(w.message, ServerMessage::Welcome(_)),
        "{what}: {w:?}"
    );
    let _ = s.close(1000, "done").await;
}

/// A fresh WebSocket session is welcomed and answers a ping.
async fn fresh_ws(gw: &TestGateway, what: &str) {
    let mut c: Client = within(WAIT, what, gw.client()).await;
    within(WAIT, what, c.ping()).await.expect("ping");
    let _ = c.close().await;
}

// ---- QUIC ----

/// A raw QUIC client endpoint on `from`, speaking ALPN `h3` (what the
/// gateway accepts) and nothing above it unless told to.
fn quic_endpoint(from: IpAddr) -> quinn::Endpoint {
    // The attacker does not care who the server is.
    let mut tls = pantheon_client::raw::insecure_tls_config();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client config");
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(from, 0)).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A black hole between QUIC clients and the gateway: the first Initial
/// packet of each connection reaches the gateway (from [`ATTACKER`]), and
/// nothing else does (no retransmission either); what the gateway answers
/// never reaches the clients. Every handshake through it is started and
/// never completed.
struct BlackHole {
    /// Where clients connect to.
    addr: SocketAddr,
    /// Datagrams forwarded to the gateway.
    forwarded: Arc<AtomicUsize>,
    /// Retry packets the gateway answered with.
    retries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl BlackHole {
    async fn open(gateway: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind(SocketAddr::new(ATTACKER, 0)).await.unwrap());
        let forwarded = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicUsize::new(0));
        let (f, b, n) = (front.clone(), back.clone(), forwarded.clone());
        let forward = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut seen = std::collections::HashSet::new();
            while let Ok((len, _)) = f.recv_from(&mut buf).await {
                // Long header: flags, version (4), DCID length, DCID.
                let d = &buf[..len];
                let Some(dcid) = d.get(6..6 + usize::from(*d.get(5).unwrap_or(&0))) else {
                    continue;
                };
                if seen.insert(dcid.to_vec()) {
                    let _ = b.send_to(d, gateway).await;
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let r = retries.clone();
        let swallow = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((len, _)) = back.recv_from(&mut buf).await {
                // QUIC v1 long header, packet type 3: Retry (RFC 9000 §17.2.5).
                if len > 0 && buf[0] & 0xc0 == 0xc0 && (buf[0] >> 4) & 0x3 == 0x3 {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            addr: front.local_addr().unwrap(),
            forwarded,
            retries,
            tasks: vec![forward, swallow],
        }
    }

    /// Starts `n` QUIC handshakes through the hole (each its own
    /// connection ID), which it leaves hanging.
    fn start(&self, endpoint: &quinn::Endpoint, n: usize) -> Vec<JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let connecting = endpoint.connect(self.addr, "localhost").expect("connect");
                // Polled so that quinn sends the Initial; it can only fail.
                tokio::spawn(async move {
                    let _ = connecting.await;
                })
            })
            .collect()
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn refused(gw: &TestGateway, transport: Transport, reason: &'static str) -> u64 {
    gw.shared.metrics.refused_count(transport, reason)
}

/// Waits until `cond`, at most `limit`; returns how long it took.
async fn until_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    within(limit, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_quic_handshakes_are_bounded_per_address_and_dropped_in_time() {
    const PER_IP: u32 = 20;
    let gw = TestGateway::with_webtransport(config(Some(PER_IP))).await;
    let calm = Calm::start(&gw).await;
    let permits = gw.shared.connections.available_permits();
    let hole = BlackHole::open(gw.wt.unwrap()).await;
    let client = quic_endpoint(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let started = Instant::now();
    let handshakes = hole.start(&client, 2 * PER_IP as usize);

    // PER_IP of them hang in the handshake; the others are refused at once.
    until_within(WAIT, "half-open handshakes held", || {
        gw.shared.admission.pending_from(ATTACKER) == PER_IP
            && refused(&gw, Transport::webtransport, "max_connections_per_ip") >= u64::from(PER_IP)
    })
    .await;
    assert!(hole.forwarded.load(Ordering::Relaxed) >= 2 * PER_IP as usize);
    assert_eq!(
        gw.shared.admission.pending_from(ATTACKER),
        PER_IP,
        "never more than MAX_CONNECTIONS_PER_IP half-open"
    );
    // Meanwhile another address connects over both transports.
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "too slow to check while they hang"
    );
    fresh_wt(&gw, "a WebTransport session during the half-open flood").await;
    fresh_ws(&gw, "a WebSocket session during the half-open flood").await;
    assert_eq!(gw.http_get("/health").await.0, 200);

    // Dropped once HTTP_HEADER_TIMEOUT_MS has passed, and counted.
    let took = until_within(
        HEADER_TIMEOUT + MARGIN,
        "half-open handshakes dropped",
        || gw.shared.admission.pending_from(ATTACKER) == 0,
    )
    .await;
    assert!(
        started.elapsed() >= HEADER_TIMEOUT,
        "dropped before the timeout ({took:?})"
    );
    assert!(refused(&gw, Transport::webtransport, "handshake_timeout") >= u64::from(PER_IP));
    // Every permit given back (the fresh sessions have closed by now or
    // will within their close).
    until_within(WAIT, "connection permits back", || {
        gw.shared.connections.available_permits() >= permits
    })
    .await;
    calm.stop(20, "half-open QUIC handshakes").await;
    for h in handshakes {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_address_handshakes_beyond_the_threshold_must_answer_a_retry() {
    // No per-address limit: as if every Initial came from another, forged,
    // address.
    let gw = TestGateway::with_webtransport(config(None)).await;
    let calm = Calm::start(&gw).await;
    let permits = gw.shared.connections.available_permits();
    let hole = BlackHole::open(gw.wt.unwrap()).await;
    let client = quic_endpoint(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let n = 3 * RETRY_ABOVE_HANDSHAKES;
    // The most handshakes held for the attacker at any time.
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (shared, most) = (gw.shared.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let held = shared.admission.pending_from(ATTACKER) as usize;
                most.fetch_max(held, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let handshakes = hole.start(&client, n);
    let answered = within(WAIT, "Retry answers", async {
        loop {
            let retries = hole.retries.load(Ordering::Relaxed);
            if retries >= n - RETRY_ABOVE_HANDSHAKES {
                break retries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!("{answered} Initials answered with a Retry");
    // A real client answers the Retry and is served.
    fresh_wt(&gw, "a WebTransport session past the Retry threshold").await;
    // Past the forwarding window and the header timeout, nothing is held.
    until_within(
        HEADER_TIMEOUT + MARGIN,
        "half-open handshakes dropped",
        || gw.shared.admission.pending_from(ATTACKER) == 0,
    )
    .await;
    sampler.abort();
    let most = most.load(Ordering::Relaxed);
    assert!(
        (1..=RETRY_ABOVE_HANDSHAKES).contains(&most),
        "{most} handshakes held at once for unvalidated addresses"
    );
    assert!(refused(&gw, Transport::webtransport, "handshake_timeout") >= most as u64);
    until_within(WAIT, "connection permits back", || {
        gw.shared.connections.available_permits() >= permits
    })
    .await;
    calm.stop(10, "forged-address QUIC handshakes").await;
    for h in handshakes {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_that_never_open_a_session_or_say_hello_are_closed() {
    const N: usize = 10;
    let gw = TestGateway::with_webtransport(config(Some(2 * N as u32))).await;
    let calm = Calm::start(&gw).await;
    let permits = gw.shared.connections.available_permits();
    let endpoint = quic_endpoint(ATTACKER);
    let started = Instant::now();

    // QUIC + TLS completed, then nothing: no HTTP/3 SETTINGS, no CONNECT.
    let silent = futures_util::future::join_all((0..N).map(|_| async {
        let conn = endpoint
            .connect(gw.wt.unwrap(), "localhost")
            .unwrap()
            .await
            .expect("QUIC handshake");
        (conn, Instant::now())
    }))
    .await;
    // WebTransport sessions (CONNECT answered) that never send hello: from
    // 127.0.0.1, each on its own endpoint.
    let mut mute = Vec::new();
    for _ in 0..N {
        mute.push(
            RawSession::connect_with(&gw.wt_url(), &Options::insecure())
                .await
                .expect("session"),
        );
    }
    fresh_wt(&gw, "a WebTransport session among silent ones").await;

    // The connections without a session: closed by the gateway once
    // HTTP_HEADER_TIMEOUT_MS has passed since they started, not before.
    for (conn, established) in &silent {
        let why = within(HEADER_TIMEOUT + MARGIN, "silent QUIC closed", conn.closed()).await;
        assert!(
            !matches!(why, quinn::ConnectionError::LocallyClosed),
            "{why}"
        );
        let lived = established.elapsed();
        assert!(lived >= HEADER_TIMEOUT / 2, "closed after {lived:?}");
    }
    assert!(started.elapsed() >= HEADER_TIMEOUT);
    until_within(WAIT, "slots given back", || {
        gw.shared.admission.pending_from(ATTACKER) == 0
    })
    .await;
    assert!(refused(&gw, Transport::webtransport, "handshake_timeout") >= N as u64);
    // The sessions without hello: closed with 4001 after HELLO_TIMEOUT_MS.
    for s in &mut mute {
        let end = within(
            HELLO_TIMEOUT + MARGIN + WAIT,
            "mute session closed",
            async {
                loop {
                    match s.recv_message().await {
                        Ok(_) => {}
                        Err(pantheon_client::Error::Closed { code, .. }) => return code,
                        Err(e) => panic!("mute session: {e}"),
                    }
                }
            },
        )
        .await;
        assert_eq!(end, Some(4001));
    }
    until_within(WAIT, "hello timeouts counted", || {
        gw.shared.metrics.closed_count("hello_timeout") >= N as u64
    })
    .await;
    until_within(WAIT, "connection permits back", || {
        gw.shared.connections.available_permits() >= permits
    })
    .await;
    calm.stop(20, "QUIC without session or hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_garbage_on_the_webtransport_port_is_ignored() {
    let gw = TestGateway::with_webtransport(config(Some(4))).await;
    let calm = Calm::start(&gw).await;
    let permits = gw.shared.connections.available_permits();
    let socket = UdpSocket::bind(SocketAddr::new(ATTACKER, 0)).await.unwrap();
    let target = gw.wt.unwrap();
    let mut replies = 0usize;
    let mut buf = vec![0u8; 2048];
    for i in 0..3_000usize {
        let len = match i % 4 {
            0 => 1 + rand::random::<u32>() as usize % 64,
            1 => 1200 + rand::random::<u32>() as usize % 300,
            _ => 1 + rand::random::<u32>() as usize % 1500,
        };
        let mut d: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        if i % 4 == 1 {
            // Looks like a QUIC v1 Initial (long header, type 0, version 1)
            // whose protection cannot be removed.
            d[0] = 0xc0 | (d[0] & 0x0f);
            d[1..5].copy_from_slice(&1u32.to_be_bytes());
            d[5] = 8;
        }
        socket.send_to(&d, target).await.unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
        while let Ok((_, _)) = socket.try_recv_from(&mut buf) {
            replies += 1;
        }
    }
    // A session is still welcomed, HTTP answers, nothing is held.
    fresh_wt(&gw, "a WebTransport session after UDP garbage").await;
    assert_eq!(gw.http_get("/health").await.0, 200);
    until_within(HEADER_TIMEOUT + MARGIN, "nothing held for garbage", || {
        gw.shared.admission.pending_from(ATTACKER) == 0
            && gw.shared.connections.available_permits() >= permits
    })
    .await;
    eprintln!("UDP garbage: 3000 datagrams, {replies} answered (version negotiation, resets)");
    calm.stop(20, "UDP garbage").await;
    assert!(!gw.join_handle.is_finished(), "the gateway stopped");
}

// ---- TCP ----

/// A TCP connection to `addr` from `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_slowloris_is_bounded_per_address_and_closed_after_the_header_timeout() {
    const PER_IP: u32 = 16;
    let gw = TestGateway::with(config(Some(PER_IP))).await;
    let calm = Calm::start(&gw).await;
    let header_timeouts = refused(&gw, Transport::websocket, "header_timeout");
    let started = Instant::now();

    // Half of the address's allowance dribbles request headers a byte every
    // 100 ms, never finishing them; the other half sends nothing.
    let mut attackers = Vec::new();
    for i in 0..PER_IP {
        let mut s = tcp_from(ATTACKER, gw.addr).await;
        attackers.push(tokio::spawn(async move {
            let opened = Instant::now();
            if i % 2 == 0 {
                let head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for b in head.iter().cycle() {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } else {
                let _ = read_to_close(&mut s).await;
            }
            opened.elapsed()
        }));
    }
    until_within(WAIT, "slow connections counted", || {
        gw.shared.admission.pending_from(ATTACKER) == PER_IP
    })
    .await;
    // Beyond the allowance: answered 429 at once, without waiting for a
    // request.
    for _ in 0..4 {
        let mut s = tcp_from(ATTACKER, gw.addr).await;
        let answer = within(
            Duration::from_millis(500),
            "early 429",
            read_to_close(&mut s),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
        assert!(answer.contains("retry-after: 5"), "{answer:?}");
    }
    assert!(refused(&gw, Transport::websocket, "max_connections_per_ip") >= 4);
    // Meanwhile another address is served.
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "too slow to check meanwhile"
    );
    assert_eq!(gw.http_get("/health").await.0, 200);
    fresh_ws(&gw, "a WebSocket session during the slowloris").await;
    // A connection that made one request and then idles is closed alike.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle_since = Instant::now();
    let answer = within(
        HEADER_TIMEOUT + MARGIN,
        "idle keep-alive closed",
        read_to_close(&mut idle),
    )
    .await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(idle_since.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100));

    // Every slow connection closed by the server after the header timeout,
    // dribbling or not.
    for a in attackers {
        let lived = within(HEADER_TIMEOUT + MARGIN, "slow connection closed", a)
            .await
            .unwrap();
        assert!(
            lived >= HEADER_TIMEOUT - Duration::from_millis(100),
            "closed after {lived:?}"
        );
    }
    until_within(WAIT, "slots given back", || {
        gw.shared.admission.pending_from(ATTACKER) == 0
    })
    .await;
    assert!(
        refused(&gw, Transport::websocket, "header_timeout") - header_timeouts >= u64::from(PER_IP),
        "header timeouts counted"
    );
    // The address may connect again, and upgrade.
    let mut s = tcp_from(ATTACKER, gw.addr).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = within(WAIT, "health after", read_to_close(&mut s)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    calm.stop(20, "HTTP slowloris").await;
}
