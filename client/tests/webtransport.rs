//! pantheon-client over WebTransport (wtransport) against the gateway's
//! WebTransport listener (web-transport-quinn), with WebSocket peers in the
//! same rooms.

mod common;

use common::*;
use pantheon_client::protocol::{ErrorCode, ServerMessage};
use pantheon_client::raw::RawSession;
use pantheon_client::{Client, Error, Event, Options, Transport};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WT: Transport = Transport::WebTransport;
const WS: Transport = Transport::WebSocket;

/// Expects a `signal` from `from` in `room`; returns its data.
async fn expect_signal(c: &mut Client, room: &str, from: &Client) -> Value {
    match next(c).await {
        ServerMessage::Signal {
            room: r,
            from: f,
            data,
        } if r.as_str() == room && &f == from.peer() => json_of(&data),
        other => panic!(
            "expected a signal from {} in {room}, got {other:?}",
            from.peer()
        ),
    }
}

/// Expects a `broadcast` from `from` in `room`; returns its data.
async fn expect_broadcast(c: &mut Client, room: &str, from: &Client) -> Value {
    match next(c).await {
        ServerMessage::Broadcast {
            room: r,
            from: f,
            data,
        } if r.as_str() == room && &f == from.peer() => json_of(&data),
        other => panic!(
            "expected a broadcast from {} in {room}, got {other:?}",
            from.peer()
        ),
    }
}

#[tokio::test]
async fn hello_and_welcome() {
    let gw = Gw::start().await;
    let options = Options {
        hello_id: Some(7),
        ..Options::default()
    };
    let c = gw.client_with(WT, options).await;
    let welcome = c.welcome();
    assert_eq!(welcome.id, Some(7));
    assert_eq!(welcome.v, 1);
    assert!(!welcome.resumed);
    assert_eq!(welcome.server, "test");
    within(WAIT, "pong", c.ping()).await.expect("ping");
    assert_eq!(c.last_seq(), 1);
    assert_eq!((c.seq_errors(), c.protocol_errors()), (0, 0));
    // Counted as WebTransport, not WebSocket.
    assert_eq!(gw.connections(WT), 1);
    assert_eq!(gw.connections(WS), 0);
}

#[tokio::test]
async fn join_and_signal_to_a_websocket_peer_and_back() {
    let gw = Gw::start().await;
    let mut wt = gw.client(WT).await;
    let mut ws = gw.client(WS).await;
    assert!(
        wt.join("r1", Some(json!({"t": "wt"})))
            .await
            .unwrap()
            .is_empty()
    );
    let peers = ws.join("r1", None).await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(&peers[0].peer, wt.peer());
    assert_eq!(json_of_meta(&peers[0].meta), json!({"t": "wt"}));
    expect_peer_joined(&mut wt, "r1", ws.peer()).await;

    let offer = json!({"type": "offer", "sdp": "v=0 offer"});
    wt.signal("r1", ws.peer(), &offer)
        .await
        .expect("signal ack");
    assert_eq!(expect_signal(&mut ws, "r1", &wt).await, offer);
    let answer = json!({"type": "answer", "sdp": "v=0 answer"});
    ws.signal("r1", wt.peer(), &answer)
        .await
        .expect("signal ack");
    assert_eq!(expect_signal(&mut wt, "r1", &ws).await, answer);
    assert_eq!(wt.seq_errors() + ws.seq_errors(), 0);
}

fn json_of_meta(meta: &pantheon_client::protocol::Meta) -> Value {
    serde_json::from_str(meta.as_str()).unwrap()
}

#[tokio::test]
async fn broadcast_reaches_both_transports() {
    let gw = Gw::start().await;
    let mut a = gw.client(WT).await;
    let mut b = gw.client(WS).await;
    let mut c = gw.client(WT).await;
    a.join("b", None).await.unwrap();
    b.join("b", None).await.unwrap();
    expect_peer_joined(&mut a, "b", b.peer()).await;
    c.join("b", None).await.unwrap();
    expect_peer_joined(&mut a, "b", c.peer()).await;
    expect_peer_joined(&mut b, "b", c.peer()).await;

    a.broadcast("b", json!({"from": "a"})).await.unwrap();
    assert_eq!(
        expect_broadcast(&mut b, "b", &a).await,
        json!({"from": "a"})
    );
    assert_eq!(
        expect_broadcast(&mut c, "b", &a).await,
        json!({"from": "a"})
    );
    b.broadcast("b", json!([1, 2])).await.unwrap();
    assert_eq!(expect_broadcast(&mut a, "b", &b).await, json!([1, 2]));
    assert_eq!(expect_broadcast(&mut c, "b", &b).await, json!([1, 2]));
    // Nothing to the sender itself.
    assert_nothing_pending(&mut a).await;
}

#[tokio::test]
async fn close_says_goodbye_with_code_0() {
    // A long grace window: `left` can only come from a goodbye.
    let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut ws, mut wt) = pair(&gw, "bye", WS, WT).await;
    let peer = wt.peer().clone();
    let started = Instant::now();
    let info = within(WAIT, "close", wt.close()).await.expect("close");
    assert_eq!(info.code, Some(0), "{info}");
    assert_eq!(expect_peer_left(&mut ws, "bye", &peer).await, "left");
    assert!(started.elapsed() < Duration::from_secs(2));
    gw.until("the session to be gone", |g| g.connections(WT) == 0)
        .await;
    // The closed client reports its end, then nothing.
    assert_eq!(
        wt.next_event().await,
        Some(Event::Closed {
            code: Some(0),
            reason: String::new()
        })
    );
    assert_eq!(wt.next_event().await, None);
    assert!(matches!(
        wt.ping().await,
        Err(Error::Closed { code: Some(0), .. })
    ));
}

#[tokio::test]
async fn close_with_1001_is_a_loss_that_starts_the_grace_window() {
    let grace = Duration::from_millis(400);
    let gw = Gw::with(|c| c.resume_grace = grace).await;
    let (mut ws, mut wt) = pair(&gw, "away", WS, WT).await;
    let peer = wt.peer().clone();
    let started = Instant::now();
    let info = within(WAIT, "close", wt.close_with(1001, "unloading"))
        .await
        .expect("close");
    assert_eq!(info.code, Some(1001));
    assert_eq!(
        expect_peer_left(&mut ws, "away", &peer).await,
        "disconnected"
    );
    assert!(
        started.elapsed() >= grace,
        "peer_left after {:?}, before the grace window ended",
        started.elapsed()
    );
}

#[tokio::test]
async fn abort_then_resume_over_websocket_keeps_the_peer_and_replays_in_order() {
    let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut ws, mut wt) = pair(&gw, "res", WS, WT).await;
    within(WAIT, "pong", wt.ping()).await.unwrap();
    let peer = wt.peer().clone();
    wt.abort().await;
    let resume = wt.resume_info();
    // `joined` and `pong`.
    assert_eq!(resume.last_seq, 2);
    // Sent while the peer is away: acknowledged, kept for it.
    for n in 0..20 {
        ws.signal("res", &peer, json!({"n": n})).await.expect("ack");
    }
    let options = Options {
        resume: Some(resume.clone()),
        ..Options::default()
    };
    let mut back = gw.client_with(WS, options).await;
    assert!(back.welcome().resumed);
    assert_eq!(back.peer(), &peer);
    for n in 0..20u64 {
        let (seq, message) = next_msg(&mut back).await;
        assert_eq!(seq, Some(resume.last_seq + 1 + n));
        match message {
            ServerMessage::Signal { from, data, .. } if &from == ws.peer() => {
                assert_eq!(json_of(&data), json!({"n": n}));
            }
            other => panic!("expected signal {n}, got {other:?}"),
        }
    }
    assert_eq!(back.seq_errors(), 0);
    // The other member saw neither peer_left nor peer_joined.
    fence(&back, &mut ws, "res").await;
    // The aborted client reports a loss without a code.
    match wt.next_event().await {
        Some(Event::Closed { code: None, .. }) => {}
        other => panic!("expected a codeless end, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resume_elsewhere_closes_the_webtransport_session_with_4010() {
    let gw = Gw::start().await;
    let mut wt = gw.client(WT).await;
    within(WAIT, "pong", wt.ping()).await.unwrap();
    let options = Options {
        resume: Some(wt.resume_info()),
        ..Options::default()
    };
    let ws = gw.client_with(WS, options).await;
    assert!(ws.welcome().resumed);
    let (code, seen) = until_closed(&mut wt, WAIT).await;
    assert_eq!(code, Some(4010), "after {seen:?}");
    let info = wt.close_info().expect("closed");
    assert_eq!(info.reason, "session taken over");
    assert_eq!(
        info.close_code(),
        Some(pantheon_client::protocol::CloseCode::TakenOver)
    );
}

#[tokio::test]
async fn silence_before_hello_closes_with_4001() {
    let gw = Gw::with(|c| c.hello_timeout = Duration::from_millis(200)).await;
    let mut raw = gw.raw(WT).await;
    assert_eq!(raw.transport(), WT);
    let info = within(WAIT, "the close", raw.recv_close()).await.unwrap();
    assert_eq!(
        (info.code, info.reason.as_str()),
        (Some(4001), "hello expected")
    );
}

#[tokio::test]
async fn a_thousand_signals_arrive_in_order() {
    let gw = Gw::with(|c| {
        c.limits.rate_per_sec = 100_000;
        c.limits.rate_burst = 100_000;
    })
    .await;
    for (ts, tr) in [(WT, WT), (WT, WS), (WS, WT)] {
        let room = format!("order-{}-{}", ts.as_str(), tr.as_str());
        let (mut receiver, sender) = pair(&gw, &room, tr, ts).await;
        let to = receiver.peer().clone();
        let sending = {
            let sender = sender.handle();
            let room = room.clone();
            tokio::spawn(async move {
                for n in 0..1000 {
                    sender
                        .signal_no_ack(room.as_str(), &to, json!({"n": n}))
                        .await
                        .expect("queued");
                }
            })
        };
        let first = receiver.last_seq() + 1;
        for n in 0..1000u64 {
            let (seq, message) = next_msg(&mut receiver).await;
            assert_eq!(seq, Some(first + n), "{ts} -> {tr}");
            match message {
                ServerMessage::Signal { data, .. } => {
                    assert_eq!(json_of(&data), json!({"n": n}), "{ts} -> {tr}")
                }
                other => panic!("{ts} -> {tr}: expected signal {n}, got {other:?}"),
            }
        }
        sending.await.unwrap();
        assert_eq!(receiver.seq_errors() + sender.seq_errors(), 0);
        assert_eq!(receiver.protocol_errors(), 0);
    }
}

#[tokio::test]
async fn drain_sends_reconnect_then_closes_with_1001() {
    let mut gw = Gw::with(|c| c.drain_timeout = Duration::from_millis(300)).await;
    let mut wt = gw.client(WT).await;
    gw.drain();
    match next(&mut wt).await {
        ServerMessage::Reconnect { reason, .. } => assert_eq!(reason, "draining"),
        other => panic!("expected reconnect, got {other:?}"),
    }
    let (code, _) = until_closed(&mut wt, WAIT).await;
    assert_eq!(code, Some(1001));
}

#[tokio::test]
async fn certificate_trust() {
    let gw = Gw::start().await;
    let url = gw.url(WT);
    // Pinned by hash (every other test), or not verified at all.
    let c = within(
        WAIT,
        "connect",
        Client::connect_with(&url, Options::insecure()),
    )
    .await
    .expect("insecure connect");
    c.ping().await.unwrap();
    // Another hash: refused.
    let wrong = within(
        WAIT,
        "connect",
        Client::connect_with(&url, Options::with_cert_hash([7; 32])),
    )
    .await;
    assert!(wrong.is_err(), "a wrong hash was accepted");
    // No hash: the system's roots, which do not know a self-signed
    // certificate.
    let unknown = within(
        WAIT,
        "connect",
        Client::connect_with(&url, Options::default()),
    )
    .await;
    assert!(unknown.is_err(), "a self-signed certificate was trusted");
    // The cert-hash endpoint is on the TCP port only.
    let udp_port = format!("http://127.0.0.1:{}", gw.wt.port());
    let not_http = pantheon_client::fetch_cert_hash(&udp_port);
    assert!(within(WAIT, "GET", not_http).await.is_err());
}

#[tokio::test]
async fn refused_connects_are_errors() {
    let gw = Gw::with(|c| c.allowed_origins = Some(vec!["https://app.example".into()])).await;
    let evil = Options {
        origin: Some("https://evil.example".into()),
        ..Options::default()
    };
    match gw.connect(WT, evil).await {
        Err(Error::Handshake { .. }) => {}
        other => panic!("expected a refused CONNECT, got {other:?}"),
    }
    let good = Options {
        origin: Some("https://app.example".into()),
        ..Options::default()
    };
    gw.connect(WT, good).await.expect("allowed origin");
    let elsewhere = format!("https://127.0.0.1:{}/elsewhere", gw.wt.port());
    let refused = within(
        WAIT,
        "connect",
        Client::connect_with(&elsewhere, gw.options()),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::Handshake { .. })),
        "{refused:?}"
    );
    // Not a URL of either transport.
    let http = format!("http://{}/ws", gw.http);
    assert!(matches!(
        Client::connect(&http).await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn raw_bytes_and_lines_over_the_control_stream() {
    let gw = Gw::with(|c| c.limits.max_message_bytes = 1024).await;
    let mut raw: RawSession = gw.raw(WT).await;
    // One message split over two writes, then garbage.
    raw.send_bytes(b"{\"type\":\"hello\",\"id\":1}\n{\"type\":\"pi".to_vec())
        .await
        .unwrap();
    raw.send_bytes(b"ng\",\"id\":2}\r\n".to_vec())
        .await
        .unwrap();
    raw.send_text("not json").await.unwrap();
    let welcome = within(WAIT, "welcome", raw.recv_message()).await.unwrap();
    assert!(matches!(welcome.message, ServerMessage::Welcome(_)));
    let pong = within(WAIT, "pong", raw.recv_message()).await.unwrap();
    assert_eq!(
        (pong.seq, pong.message),
        (Some(1), ServerMessage::Pong { id: Some(2) })
    );
    let error = within(WAIT, "error", raw.recv_message()).await.unwrap();
    assert!(
        matches!(
            error.message,
            ServerMessage::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{error:?}"
    );
    // A line over 4 × max_message_bytes: 1009.
    raw.send_bytes(vec![b'x'; 5000]).await.unwrap();
    let info = within(WAIT, "the close", raw.recv_close()).await.unwrap();
    assert_eq!(info.code, Some(1009), "{info}");
}

#[tokio::test]
async fn connections_can_share_one_endpoint() {
    let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let endpoint = pantheon_client::WtEndpoint::new(&gw.options()).expect("endpoint");
    // Its own trust applies: no hash in the connection's options.
    let shared = || Options {
        wt_endpoint: Some(endpoint.clone()),
        ..Options::default()
    };
    let url = gw.url(WT);
    let mut a = within(WAIT, "connect", Client::connect_with(&url, shared()))
        .await
        .expect("a");
    let mut b = within(WAIT, "connect", Client::connect_with(&url, shared()))
        .await
        .expect("b");
    let c = within(WAIT, "connect", Client::connect_with(&url, shared()))
        .await
        .expect("c");
    a.join("s", None).await.unwrap();
    b.join("s", None).await.unwrap();
    expect_peer_joined(&mut a, "s", b.peer()).await;
    c.join("s", None).await.unwrap();
    expect_peer_joined(&mut a, "s", c.peer()).await;
    expect_peer_joined(&mut b, "s", c.peer()).await;
    // One connection ending leaves the others alone: a goodbye, then a
    // loss.
    let c_peer = c.peer().clone();
    drop(c);
    b.signal("s", a.peer(), json!("over the shared socket"))
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut a, "s", &b).await,
        json!("over the shared socket")
    );
    let b_peer = b.peer().clone();
    within(WAIT, "close", b.close()).await.unwrap();
    assert_eq!(expect_peer_left(&mut a, "s", &b_peer).await, "left");
    // c is in its grace window: still a member, without a connection.
    let peers = a.peers("s").await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer, c_peer);
    gw.until("only a connected", |g| g.connections(WT) == 1)
        .await;
}
