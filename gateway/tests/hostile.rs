//! What a hostile client cannot do, over every transport: one table of
//! attacks ([`ROWS`]), each run over each transport in [`Via::ALL`] against a
//! gateway that also serves a well-behaved pair of clients.
//!
//! Every row asserts the outcome PROTOCOL.md §6 documents (an `error` code
//! with the connection left open, or a close code), then that the gateway is
//! healthy (`/health`, a fresh session) and that the well-behaved pair's
//! relay round trip measured *during* the attack stayed within
//! [`slowdown_bound`] of its baseline, measured in quiet windows between
//! the rows. Attacks below the protocol (half-open QUIC, UDP garbage, HTTP
//! slowloris) are in `hostile_transport.rs`; the 2x latency target on a
//! release build, in benches/hostile.py. The suite ends by checking that the
//! gateway holds no state for the attackers and that the process's memory
//! grew by a bounded amount.
//!
//! A new transport (the legacy Socket.IO endpoint) is one more [`Via`] and
//! its arm in [`Conn`].

mod common;

use common::{BareFrame, BareSocket, TestGateway, WAIT, within};
use pantheon_client::protocol::{ErrorCode, ServerMessage, decode_server};
use pantheon_client::raw::{RawSession, ws_frame};
use pantheon_client::{Client, Options};
use pantheon_gateway::Config;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The transports every row runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    WebSocket,
    WebTransport,
}

impl Via {
    const ALL: [Via; 2] = [Via::WebSocket, Via::WebTransport];
}

/// What an attacker sends.
#[derive(Debug, Clone)]
enum Input {
    /// One message: a text frame, or a line.
    Text(String),
    /// A binary frame over WebSocket; the bytes and `\n` over WebTransport.
    Binary(Vec<u8>),
    /// A text frame / line whose bytes are not UTF-8.
    NotUtf8(Vec<u8>),
}

/// How a row attacks.
#[derive(Debug, Clone)]
enum Attack {
    /// `hello`, then these.
    After(Vec<Input>),
    /// `hello`, then `n` copies of a message (no waiting for answers).
    Flood(fn(usize) -> String, usize),
    /// Opens the transport and sends nothing.
    Silent,
    /// Sends `hello` one byte at a time, this far apart.
    DribbleHello(Duration),
    /// `hello`, then one message a byte at a time, this far apart, never
    /// finishing it.
    DribbleFrame(Duration),
    /// `hello` resuming the well-behaved `a`'s session with its token
    /// altered by this function.
    ResumeVictim(fn(&str) -> String),
    /// `hello` resuming a session that has ended (goodbye).
    ResumeStale,
    /// Joins a room that three senders flood, and never reads.
    NeverRead,
}

/// What the row must observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This reply type (`pong`, `ack`, ...), and the connection stays open.
    Reply(&'static str),
    /// An `error` with this code (and id), then the connection stays open.
    Error(ErrorCode, Option<u64>),
    /// At least one `rate_limited`, and the connection stays open.
    Limited,
    /// The connection is closed with this code.
    Close(u16),
    /// `welcome` with `resumed: false` and a new peer; the victim is
    /// untouched.
    NotResumed,
}

struct Row {
    name: &'static str,
    attack: fn() -> Attack,
    expect: fn(Via) -> Expect,
}

fn text(s: impl Into<String>) -> Input {
    Input::Text(s.into())
}

fn nested(levels: usize) -> String {
    "[".repeat(levels) + &"]".repeat(levels)
}

/// The table. `expect` gets the transport for the few rows whose documented
/// outcome differs by transport.
const ROWS: &[Row] = &[
    Row {
        name: "text that is not UTF-8",
        attack: || {
            Attack::After(vec![Input::NotUtf8(
                b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
            )])
        },
        // RFC 6455 §8.1: a WebSocket endpoint must fail the connection
        // (1007); an NDJSON line is bytes, and bytes that are not JSON are a
        // bad request.
        expect: |via| match via {
            Via::WebSocket => Expect::Close(1007),
            Via::WebTransport => Expect::Error(ErrorCode::BadRequest, None),
        },
    },
    Row {
        name: "binary frame",
        attack: || Attack::After(vec![Input::Binary(vec![0x00, 0x80, 0xff, 0x01])]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, None),
    },
    Row {
        name: "JSON nested 100 000 levels (200 kB)",
        attack: || Attack::After(vec![text(nested(100_000))]),
        expect: |_| Expect::Error(ErrorCode::TooLarge, None),
    },
    Row {
        name: "JSON nested 30 000 levels at the top",
        attack: || Attack::After(vec![text(nested(30_000))]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, None),
    },
    Row {
        name: "JSON nested 30 000 levels in an object",
        attack: || {
            Attack::After(vec![text(format!(
                "{{\"type\":\"ping\",\"id\":1,\"x\":{}}}",
                nested(30_000)
            ))])
        },
        // Unknown fields are ignored, however deep (skipped without
        // recursion).
        expect: |_| Expect::Reply("pong"),
    },
    Row {
        name: "JSON nested 30 000 levels in broadcast data",
        attack: || {
            Attack::After(vec![
                text(r#"{"type":"join","room":"hostile","id":1}"#),
                text(format!(
                    "{{\"type\":\"broadcast\",\"room\":\"hostile\",\"id\":2,\"data\":{}}}",
                    nested(30_000)
                )),
            ])
        },
        // `data` is any JSON value, relayed as it came.
        expect: |_| Expect::Reply("ack"),
    },
    Row {
        name: "huge id",
        attack: || Attack::After(vec![text(r#"{"type":"ping","id":1e400}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, None),
    },
    Row {
        name: "id past 2^53 - 1",
        attack: || Attack::After(vec![text(r#"{"type":"ping","id":9007199254740992}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, None),
    },
    Row {
        name: "huge number in meta",
        attack: || {
            Attack::After(vec![text(
                r#"{"type":"join","room":"hostile","id":3,"meta":{"n":1e999999,"m":-123456789012345678901234567890}}"#,
            )])
        },
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(3)),
    },
    Row {
        name: "megabyte string",
        attack: || {
            Attack::After(vec![text(format!(
                "{{\"type\":\"ping\",\"x\":\"{}\"}}",
                "a".repeat(1 << 20)
            ))])
        },
        expect: |_| Expect::Close(1009),
    },
    Row {
        name: "60 kB string in data",
        attack: || {
            Attack::After(vec![
                text(r#"{"type":"join","room":"hostile","id":1}"#),
                text(format!(
                    "{{\"type\":\"broadcast\",\"room\":\"hostile\",\"id\":2,\"data\":\"{}\"}}",
                    "é".repeat(30_000)
                )),
            ])
        },
        expect: |_| Expect::Reply("ack"),
    },
    Row {
        name: "escaped NUL in a string",
        attack: || Attack::After(vec![text(r#"{"type":"ping","id":4,"x":"a\u0000b"}"#)]),
        expect: |_| Expect::Reply("pong"),
    },
    Row {
        name: "raw NUL byte after the object",
        attack: || Attack::After(vec![text("{\"type\":\"ping\",\"id\":5}\u{0}")]),
        // Not JSON as a whole, so not even the id can be trusted.
        expect: |_| Expect::Error(ErrorCode::BadRequest, None),
    },
    Row {
        name: "NUL in a room name",
        attack: || Attack::After(vec![text(r#"{"type":"join","id":6,"room":"a\u0000b"}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(6)),
    },
    Row {
        name: "duplicate keys",
        attack: || Attack::After(vec![text(r#"{"type":"ping","id":7,"type":"join"}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(7)),
    },
    Row {
        name: "wrong types",
        attack: || Attack::After(vec![text(r#"{"type":"join","id":8,"room":["r"]}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(8)),
    },
    Row {
        name: "type that is not a string",
        attack: || Attack::After(vec![text(r#"{"type":{"join":1},"id":9}"#)]),
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(9)),
    },
    Row {
        name: "unknown fields",
        attack: || {
            Attack::After(vec![text(
                r#"{"type":"ping","id":10,"evil":{"__proto__":{"x":1}},"constructor":null}"#,
            )])
        },
        expect: |_| Expect::Reply("pong"),
    },
    Row {
        name: "signal to self",
        attack: || {
            Attack::After(vec![
                text(r#"{"type":"join","room":"hostile","id":1}"#),
                text(r#"{"type":"signal","room":"hostile","to":"{me}","id":11,"data":{}}"#),
            ])
        },
        expect: |_| Expect::Error(ErrorCode::BadRequest, Some(11)),
    },
    Row {
        name: "flood of join/leave",
        attack: || {
            Attack::Flood(
                |i| {
                    if i % 2 == 0 {
                        r#"{"type":"join","room":"churn"}"#.to_owned()
                    } else {
                        r#"{"type":"leave","room":"churn"}"#.to_owned()
                    }
                },
                2_000,
            )
        },
        expect: |_| Expect::Limited,
    },
    Row {
        name: "thousands of room names",
        attack: || Attack::Flood(|i| format!(r#"{{"type":"join","room":"room-{i}"}}"#), 5_000),
        expect: |_| Expect::Limited,
    },
    Row {
        name: "resume of another's session with a guessed secret",
        attack: || {
            Attack::ResumeVictim(|token| {
                let (peer, secret) = token.rsplit_once('.').unwrap();
                format!("{peer}.{}", "0".repeat(secret.len()))
            })
        },
        expect: |_| Expect::NotResumed,
    },
    Row {
        name: "resume of another's session with a truncated secret",
        attack: || Attack::ResumeVictim(|token| token[..token.len() - 1].to_owned()),
        expect: |_| Expect::NotResumed,
    },
    Row {
        name: "resume of another's session with the secret under another peer id",
        attack: || {
            Attack::ResumeVictim(|token| {
                let (_, secret) = token.rsplit_once('.').unwrap();
                format!("p_00000000000000000000.{secret}")
            })
        },
        expect: |_| Expect::NotResumed,
    },
    Row {
        name: "resume with a stale token",
        attack: || Attack::ResumeStale,
        expect: |_| Expect::NotResumed,
    },
    Row {
        name: "slowloris: never sends hello",
        attack: || Attack::Silent,
        expect: |_| Expect::Close(4001),
    },
    Row {
        name: "slowloris: hello a byte at a time",
        attack: || Attack::DribbleHello(Duration::from_millis(150)),
        expect: |_| Expect::Close(4001),
    },
    Row {
        name: "slowloris: a frame a byte at a time",
        attack: || Attack::DribbleFrame(Duration::from_millis(150)),
        // WebSocket: no complete frame (and no pong) within PING_TIMEOUT_MS
        // is silence, closed with 1001. WebTransport has no application
        // keepalive: the line is bounded by 4 x max_message_bytes and the
        // session is an idle one, as allowed; the check is that nothing
        // else is slowed.
        expect: |via| match via {
            Via::WebSocket => Expect::Close(1001),
            Via::WebTransport => Expect::Reply("nothing"),
        },
    },
    Row {
        name: "a client that never reads",
        attack: || Attack::NeverRead,
        expect: |_| Expect::Close(4009),
    },
];

/// The suite's gateway settings: short timeouts so slowloris rows end
/// quickly; an outbound queue long enough for the replies to a burst of
/// requests (100), short enough that a non-reader is found soon.
fn config(c: &mut Config) {
    c.hello_timeout = Duration::from_millis(1_000);
    c.ping_interval = Duration::from_millis(300);
    c.ping_timeout = Duration::from_millis(1_500);
    c.http_header_timeout = Duration::from_millis(1_000);
    c.outbound_queue = 256;
}

/// One attacker connection.
enum Conn {
    Ws(BareSocket),
    Wt(RawSession),
}

/// What an attacker reads.
#[derive(Debug)]
// Short-lived and matched by value everywhere; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
enum Next {
    Msg(ServerMessage),
    Closed(Option<u16>),
}

impl Conn {
    async fn open(gw: &TestGateway, via: Via) -> Self {
        match via {
            Via::WebSocket => Conn::Ws(BareSocket::connect(gw.addr).await),
            Via::WebTransport => Conn::Wt(
                within(
                    WAIT,
                    "WebTransport session",
                    RawSession::connect_with(&gw.wt_url(), &Options::insecure()),
                )
                .await
                .expect("WebTransport session"),
            ),
        }
    }

    /// A socket that cannot take much before the server must queue.
    async fn open_small(gw: &TestGateway, via: Via) -> Self {
        match via {
            Via::WebSocket => {
                Conn::Ws(BareSocket::connect_with_receive_buffer(gw.addr, Some(4096)).await)
            }
            Via::WebTransport => Self::open(gw, via).await,
        }
    }

    /// Sends; a failure means the server has closed the connection.
    async fn send(&mut self, input: &Input) -> bool {
        match (self, input) {
            (Conn::Ws(s), Input::Text(t)) => s.send_raw(&ws_frame(0x1, t.as_bytes())).await.is_ok(),
            (Conn::Ws(s), Input::NotUtf8(b)) => s.send_raw(&ws_frame(0x1, b)).await.is_ok(),
            (Conn::Ws(s), Input::Binary(b)) => s.send_raw(&ws_frame(0x2, b)).await.is_ok(),
            (Conn::Wt(s), Input::Text(t)) => s.send_text(t.clone()).await.is_ok(),
            (Conn::Wt(s), Input::NotUtf8(b) | Input::Binary(b)) => {
                let mut line = b.clone();
                line.push(b'\n');
                s.send_bytes(line).await.is_ok()
            }
        }
    }

    /// Bytes as they are: part of a frame or of a line.
    async fn send_partial(&mut self, bytes: &[u8]) -> bool {
        match self {
            Conn::Ws(s) => s.send_raw(bytes).await.is_ok(),
            Conn::Wt(s) => s.send_bytes(bytes.to_vec()).await.is_ok(),
        }
    }

    async fn next(&mut self) -> Next {
        match self {
            Conn::Ws(s) => loop {
                match s.read_frame().await {
                    Some(BareFrame::Text(t)) => {
                        return Next::Msg(
                            decode_server(t.as_bytes()).expect("server JSON").message,
                        );
                    }
                    Some(BareFrame::Close(code)) => return Next::Closed(code),
                    None => return Next::Closed(None),
                    Some(_) => {}
                }
            },
            Conn::Wt(s) => match s.recv_message().await {
                Ok(r) => Next::Msg(r.message),
                Err(pantheon_client::Error::Closed { code, .. }) => Next::Closed(code),
                Err(e) => panic!("WebTransport read: {e}"),
            },
        }
    }

    async fn next_within(&mut self, limit: Duration, what: &str) -> Next {
        within(limit, what, self.next()).await
    }

    /// `hello`, and the `welcome`'s peer.
    async fn hello(&mut self, resume: Option<(&str, u64)>) -> pantheon_client::protocol::Welcome {
        let mut hello = json!({"type": "hello", "v": 1});
        if let Some((session, last_seq)) = resume {
            hello["resume"] = json!({"session": session, "last_seq": last_seq});
        }
        assert!(self.send(&text(hello.to_string())).await);
        match self.next_within(WAIT, "welcome").await {
            Next::Msg(ServerMessage::Welcome(w)) => w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Proves the connection is open and served: a `ping` with an id is
    /// answered `pong` (retried while the rate limit drops it).
    async fn alive(&mut self) {
        within(
            Duration::from_secs(10),
            "pong on the attacker's connection",
            async {
                for id in 9_000u64.. {
                    assert!(
                        self.send(&text(format!(r#"{{"type":"ping","id":{id}}}"#)))
                            .await,
                        "send failed"
                    );
                    loop {
                        match self.next().await {
                            Next::Msg(ServerMessage::Pong { id: Some(got) }) if got == id => return,
                            Next::Msg(ServerMessage::Error {
                                code: ErrorCode::RateLimited,
                                id: Some(got),
                                ..
                            }) if got == id => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                break;
                            }
                            Next::Msg(_) => {}
                            Next::Closed(code) => panic!("closed ({code:?}) instead of answering"),
                        }
                    }
                }
            },
        )
        .await;
    }
}

/// The well-behaved pair: `a` signals `b`, and the time until `b` has it is
/// one relay round trip.
struct Calm {
    pair: Option<(Client, Client)>,
}

impl Calm {
    async fn new(gw: &TestGateway) -> Self {
        Self {
            pair: Some(common::pair(gw, "calm").await),
        }
    }

    fn a(&self) -> &Client {
        &self.pair.as_ref().expect("calm pair").0
    }

    async fn relay(a: &Client, b: &mut Client) -> Duration {
        let start = Instant::now();
        a.signal("calm", b.peer(), &json!({"t": 1}))
            .await
            .expect("calm signal");
        match common::next(b).await {
            ServerMessage::Signal { .. } => start.elapsed(),
            other => panic!("calm b got {other:?}"),
        }
    }

    /// Relay times until `done` resolves (at least `min` samples). The pair
    /// relays in a task of its own, so that an attacker's future that is
    /// busy when polled (reading a backlog of ready messages) does not
    /// count against the gateway, and no relay is cut off half-way.
    async fn measure_during<T>(
        &mut self,
        min: usize,
        done: impl Future<Output = T>,
    ) -> (Vec<Duration>, T) {
        let (a, mut b) = self.pair.take().expect("calm pair");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let relaying = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !(flag.load(Ordering::Relaxed) && samples.len() >= min) {
                samples.push(Self::relay(&a, &mut b).await);
                // Paced like real signaling, well within the rate limit.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (a, b, samples)
        });
        let out = done.await;
        stop.store(true, Ordering::Relaxed);
        let (a, b, samples) = relaying.await.expect("calm pair");
        self.pair = Some((a, b));
        (samples, out)
    }
}

/// The calm `a`'s session, which resume rows try to steal.
struct Victim {
    session: String,
    peer: pantheon_client::protocol::PeerId,
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64) * q).ceil() as usize;
    samples[i.clamp(1, samples.len()) - 1]
}

/// Relay samples the calm pair takes during each row's attack, and again
/// in a quiet window right after it: the baseline is interleaved with the
/// attacks (so drift on a shared machine affects both alike) and has as
/// many samples as the attacked pool, so their p99s are alike estimates
/// (with ~600 samples each, the p99 is the 6th-largest, not the maximum).
const SAMPLES_PER_ROW: usize = 20;

/// The most the calm pair's pooled p99 under attack may reach: twice the
/// pooled quiet p99, plus 25 ms for the scheduling noise of a debug build
/// sharing a CI machine with other tests (the attacker and the gateway run
/// in this process). Per row, with 20 samples, the median is held to the
/// same bound against the quiet median. The 2x target itself is measured
/// on a release build, with the attacker in a process of its own, by
/// benches/hostile.py (benches/README.md).
fn slowdown_bound(baseline: Duration) -> Duration {
    baseline * 2 + Duration::from_millis(25)
}

/// Resident memory of this process (the gateway runs in it), in kB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs one row's attack; returns what was observed, already checked.
async fn attack(gw: &TestGateway, via: Via, row: &Row, victim: &Victim) {
    let expect = (row.expect)(via);
    let what = format!("{} over {via:?}", row.name);
    match (row.attack)() {
        Attack::After(inputs) => {
            let mut c = Conn::open(gw, via).await;
            let me = c.hello(None).await.peer.to_string();
            for input in &inputs {
                let input = match input {
                    Input::Text(t) => Input::Text(t.replace("{me}", &me)),
                    other => other.clone(),
                };
                if !c.send(&input).await {
                    break;
                }
            }
            observe(&mut c, expect, &what).await;
        }
        Attack::Flood(message, n) => {
            let mut c = Conn::open(gw, via).await;
            c.hello(None).await;
            for i in 0..n {
                assert!(
                    c.send(&text(message(i))).await,
                    "{what}: closed during the flood"
                );
            }
            observe(&mut c, expect, &what).await;
        }
        Attack::Silent => {
            let mut c = Conn::open(gw, via).await;
            observe(&mut c, expect, &what).await;
        }
        Attack::DribbleHello(gap) => {
            let mut c = Conn::open(gw, via).await;
            let hello = b"{\"type\":\"hello\",\"v\":1}\n";
            let frame = match via {
                Via::WebSocket => ws_frame(0x1, &hello[..hello.len() - 1]),
                Via::WebTransport => hello.to_vec(),
            };
            let dribble = async {
                for b in frame {
                    if !c.send_partial(&[b]).await {
                        return c;
                    }
                    tokio::time::sleep(gap).await;
                }
                c
            };
            let mut c = dribble.await;
            observe(&mut c, expect, &what).await;
        }
        Attack::DribbleFrame(gap) => {
            let mut c = Conn::open(gw, via).await;
            c.hello(None).await;
            let body = br#"{"type":"ping","id":1}"#;
            let frame = match via {
                Via::WebSocket => ws_frame(0x1, body),
                Via::WebTransport => body.to_vec(),
            };
            // Never the last byte (nor, over WebTransport, the newline).
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut closed = None;
            for b in &frame[..frame.len() - 1] {
                if Instant::now() > deadline {
                    break;
                }
                if !c.send_partial(&[*b]).await {
                    break;
                }
                tokio::time::sleep(gap).await;
                if let Via::WebSocket = via {
                    // The server's close arrives while the frame is still
                    // dribbling.
                    if let Ok(next) = tokio::time::timeout(Duration::ZERO, c.next()).await {
                        closed = Some(next);
                        break;
                    }
                }
            }
            match expect {
                Expect::Close(code) => {
                    let next = match closed {
                        Some(n) => n,
                        None => c.next_within(WAIT, &what).await,
                    };
                    assert!(
                        matches!(next, Next::Closed(Some(c)) if c == code),
                        "{what}: {next:?}"
                    );
                }
                _ => assert!(closed.is_none(), "{what}: {closed:?}"),
            }
        }
        Attack::ResumeVictim(alter) => {
            let token = alter(&victim.session);
            let mut c = Conn::open(gw, via).await;
            let w = c.hello(Some((&token, 0))).await;
            assert_eq!(expect, Expect::NotResumed);
            assert!(!w.resumed, "{what}: resumed");
            assert_ne!(w.peer, victim.peer, "{what}: got the victim's peer id");
            c.alive().await;
        }
        Attack::ResumeStale => {
            let mut old = Conn::open(gw, via).await;
            let w = old.hello(None).await;
            let token = w.session.clone();
            // A goodbye ends the session at once.
            let goodbyes = gw.shared.metrics.closed_count("goodbye");
            match &mut old {
                Conn::Ws(s) => s.send_close(Some(1000)).await,
                Conn::Wt(s) => {
                    let _ = s.close(0, "bye").await;
                }
            }
            drop(old);
            gw.until("the old session to end", |gw| {
                gw.shared.metrics.closed_count("goodbye") > goodbyes
            })
            .await;
            let mut c = Conn::open(gw, via).await;
            let again = c.hello(Some((&token, 0))).await;
            assert!(!again.resumed, "{what}: a stale token resumed");
            assert_ne!(again.peer, w.peer);
            c.alive().await;
        }
        Attack::NeverRead => {
            let mut c = Conn::open_small(gw, via).await;
            let me = c.hello(None).await.peer;
            assert!(c.send(&text(r#"{"type":"join","room":"sink"}"#)).await);
            // Three senders, each within its rate limit, fill the room.
            let mut senders = Vec::new();
            for _ in 0..3 {
                let s = gw.client().await;
                s.join("sink", None).await.expect("sender joins");
                senders.push(s);
            }
            let big = json!({"pad": "x".repeat(60_000)});
            let before = gw.shared.metrics.closed_count("slow_consumer");
            // The metric is written once the session has ended, which
            // includes up to CLOSE_FLUSH (5 s) trying to send the close
            // frame to a client that does not read.
            within(Duration::from_secs(40), &what, async {
                while gw.shared.metrics.closed_count("slow_consumer") == before {
                    for s in &senders {
                        // Over its burst a sender's signal is dropped
                        // (rate_limited); the others keep the queue growing.
                        let _ = s.signal_no_ack("sink", &me, &big).await;
                    }
                    // Alive, though not reading: a WebSocket client that
                    // stayed silent would be closed for silence (1001).
                    if via == Via::WebSocket {
                        let _ = c.send_partial(&ws_frame(0x9, b"")).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            // What it finds once it reads: the head of its queue, then the
            // end: with 4009 when the close frame got through, without a
            // code when even that could not be written (it never read).
            let end = within(Duration::from_secs(20), &what, async {
                loop {
                    if let Next::Closed(code) = c.next().await {
                        return code;
                    }
                }
            })
            .await;
            let Expect::Close(code) = expect else {
                unreachable!()
            };
            assert!(end.is_none_or(|end| end == code), "{what}: {end:?}");
        }
    }
}

/// Checks `expect` on an attacker's connection.
async fn observe(c: &mut Conn, expect: Expect, what: &str) {
    match expect {
        Expect::Reply(kind) => {
            if kind != "nothing" {
                loop {
                    match c.next_within(WAIT, what).await {
                        Next::Msg(m) if m.kind().as_str() == kind => break,
                        Next::Msg(ServerMessage::Error { code, message, .. }) => {
                            panic!("{what}: error {code}: {message}")
                        }
                        Next::Msg(_) => {}
                        Next::Closed(code) => panic!("{what}: closed with {code:?}"),
                    }
                }
            }
            c.alive().await;
        }
        Expect::Error(want, want_id) => {
            loop {
                match c.next_within(WAIT, what).await {
                    Next::Msg(ServerMessage::Error { code, id, message }) => {
                        assert_eq!((code, id), (want, want_id), "{what}: {message}");
                        break;
                    }
                    Next::Msg(ServerMessage::Joined { .. }) => {}
                    Next::Msg(m) => panic!("{what}: expected error {want}, got {m:?}"),
                    Next::Closed(code) => panic!("{what}: closed with {code:?}"),
                }
            }
            c.alive().await;
        }
        Expect::Limited => {
            loop {
                match c.next_within(WAIT, what).await {
                    Next::Msg(ServerMessage::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    }) => break,
                    Next::Msg(_) => {}
                    Next::Closed(code) => panic!("{what}: closed with {code:?}"),
                }
            }
            c.alive().await;
        }
        Expect::Close(want) => {
            let got = within(WAIT, what, async {
                loop {
                    if let Next::Closed(code) = c.next().await {
                        return code;
                    }
                }
            })
            .await;
            assert_eq!(got, Some(want), "{what}");
        }
        Expect::NotResumed => unreachable!("resume rows check themselves"),
    }
}

async fn suite(via: Via) {
    let gw = TestGateway::with_webtransport(config).await;
    let mut calm = Calm::new(&gw).await;
    // Warm-up.
    calm.measure_during(20, async {}).await;
    let (mut base, ()) = calm.measure_during(SAMPLES_PER_ROW, async {}).await;
    let victim = Victim {
        session: calm.a().resume_info().session,
        peer: calm.a().peer().clone(),
    };
    let rss_before = rss_kb();
    let mut report = Vec::new();
    let mut all = Vec::new();
    for row in ROWS {
        let (mut during, ()) = calm
            .measure_during(SAMPLES_PER_ROW, attack(&gw, via, row, &victim))
            .await;
        // Healthy: HTTP answers, a new session is welcomed.
        assert_eq!(gw.http_get("/health").await.0, 200, "{}", row.name);
        let mut fresh = Conn::open(&gw, via).await;
        fresh.hello(None).await;
        fresh.alive().await;
        drop(fresh);
        let (mut quiet, ()) = calm.measure_during(SAMPLES_PER_ROW, async {}).await;
        let (p50, max) = (quantile(&mut during, 0.5), quantile(&mut during, 1.0));
        let quiet_p50 = quantile(&mut quiet, 0.5);
        report.push(format!(
            "{:>8.3} ms p50 {:>8.3} ms max ({:>3} samples; quiet after: p50 {:>8.3} ms)  {}",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            during.len(),
            quiet_p50.as_secs_f64() * 1e3,
            row.name
        ));
        eprintln!("{via:?}: {}", report.last().unwrap());
        base.extend(quiet);
        let base_p50 = quantile(&mut base, 0.5);
        assert!(
            p50 <= slowdown_bound(base_p50),
            "{} over {via:?}: calm median {p50:?} against a quiet median of {base_p50:?}",
            row.name
        );
        all.extend(during);
    }
    let (base_p50, base_p99) = (quantile(&mut base, 0.5), quantile(&mut base, 0.99));
    let attacked_p99 = quantile(&mut all, 0.99);
    eprintln!(
        "calm relay over WebSocket while attacked over {via:?}: quiet p50 {:.3} ms, p99 {:.3} ms \
         ({} samples); under attack p99 {:.3} ms ({} samples)\n{}",
        base_p50.as_secs_f64() * 1e3,
        base_p99.as_secs_f64() * 1e3,
        base.len(),
        attacked_p99.as_secs_f64() * 1e3,
        all.len(),
        report.join("\n")
    );
    // Enough samples on both sides for a p99 that is not the maximum.
    assert!(
        all.len() >= 500 && base.len() >= 500,
        "{} / {}",
        all.len(),
        base.len()
    );
    assert!(
        attacked_p99 <= slowdown_bound(base_p99),
        "over {via:?}: calm p99 {attacked_p99:?} under attack against a baseline of {base_p99:?}"
    );
    // Bounded: no room or session is left of the attackers once their
    // connections have ended and their grace windows passed.
    let grown_mb = rss_kb().saturating_sub(rss_before) / 1024;
    eprintln!("resident memory grew by {grown_mb} MB over the suite");
    assert!(grown_mb < 256, "resident memory grew by {grown_mb} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_over_websocket() {
    suite(Via::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_over_webtransport() {
    suite(Via::WebTransport).await;
}

#[test]
fn every_row_runs_over_every_transport() {
    // The table is complete: each row has an outcome for each transport.
    for row in ROWS {
        for via in Via::ALL {
            let _ = (row.expect)(via);
        }
    }
    assert!(ROWS.len() >= 25);
}
