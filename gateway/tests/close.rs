//! PROTOCOL.md §3.4–3.5 and §6 close codes: goodbye vs. loss, keepalive,
//! slow consumers (4009) and takeover (4010).

mod common;

use common::{
    BareFrame, BareSocket, TestGateway, WAIT, assert_nothing_pending, expect_peer_left, fence,
    json_of, next, pair, resume_of, until_closed, within,
};
use pantheon_client::Options;
use pantheon_client::protocol::{ClientMessage, Request, Resume, ServerMessage};
use pantheon_client::raw::Frame;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn normal_close_ends_the_session_at_once() {
    // A long grace window: `left` must not wait for it.
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    let token = b.resume_info();
    let info = within(WAIT, "close", b.close()).await.unwrap();
    assert_eq!(info.code, Some(1000), "the server answers the close");
    assert_eq!(expect_peer_left(&mut a, "r", b.peer()).await, "left");
    assert_eq!(gw.shared.hub.counts(), (1, 1), "b's session is gone");
    // Nothing left to resume.
    let again = gw
        .client_with(Options {
            resume: Some(token),
            ..Options::default()
        })
        .await;
    assert!(!again.welcome().resumed);
}

#[tokio::test]
async fn abrupt_drop_is_silent_until_the_grace_window_ends() {
    let grace = Duration::from_millis(400);
    let gw = TestGateway::with(|c| c.resume_grace = grace).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    let dropped = Instant::now();
    b.abort().await;
    // The very next thing a sees is the peer_left, once the window is over.
    assert_eq!(
        expect_peer_left(&mut a, "r", b.peer()).await,
        "disconnected"
    );
    let waited = dropped.elapsed();
    assert!(waited >= grace, "peer_left after only {waited:?}");
    assert_eq!(gw.shared.hub.counts(), (1, 1));
}

#[tokio::test]
async fn close_1001_starts_the_grace_window() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    let info = within(WAIT, "close", b.close_with(1001, "page unloading"))
        .await
        .unwrap();
    assert!(info.code.is_some(), "{info}");
    // The server has seen the close frame (it answered it): no peer_left.
    assert_nothing_pending(&mut a).await;
    let b2 = gw.client_with(resume_of(&b)).await;
    assert!(b2.welcome().resumed);
    assert_eq!(b2.peer(), b.peer());
    fence(&b2, &mut a, "r").await;
}

#[tokio::test]
async fn close_without_a_status_code_is_a_goodbye_too() {
    // Ambiguity: PROTOCOL.md names code 1000 as the goodbye. A browser's
    // plain `ws.close()` sends a close frame without a status (seen as 1005);
    // the sensible reading is that it is a goodbye as well.
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let mut a = gw.client().await;
    a.join("r", None).await.unwrap();
    let mut ws = BareSocket::connect(gw.addr).await;
    ws.send_text(r#"{"type":"hello","v":1}"#).await;
    ws.send_text(r#"{"type":"join","room":"r"}"#).await;
    let peer = match next(&mut a).await {
        ServerMessage::PeerJoined { peer, .. } => peer,
        other => panic!("{other:?}"),
    };
    ws.send_close(None).await;
    assert_eq!(expect_peer_left(&mut a, "r", &peer).await, "left");
}

#[tokio::test]
async fn close_with_another_code_starts_the_grace_window() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    within(WAIT, "close", b.close_with(4000, "app reason"))
        .await
        .unwrap();
    assert_nothing_pending(&mut a).await;
    let b2 = gw.client_with(resume_of(&b)).await;
    assert!(b2.welcome().resumed);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let gw = TestGateway::with(|c| {
        c.ping_interval = Duration::from_millis(50);
        c.ping_timeout = Duration::from_millis(200);
    })
    .await;
    let c = gw.client().await;
    assert_eq!(c.welcome().heartbeat_ms, 50);
    let mut ws = gw.raw().await;
    ws.send_message(&ClientMessage {
        id: None,
        request: Request::Hello {
            v: Some(1),
            token: None,
            resume: None,
        },
    })
    .await
    .unwrap();
    // Read (and so answer pings) for three ping timeouts.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(600) {
        match tokio::time::timeout(Duration::from_millis(100), ws.recv()).await {
            Err(_) => {}
            Ok(Ok(Some(Frame::Ping(_)))) => pings += 1,
            Ok(Ok(Some(Frame::Text(_)))) => {}
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
    assert!(pings >= 5, "the server pings every 50 ms; saw {pings}");
    // The client library answers pings while it reads, and it always reads.
    c.ping().await.expect("still connected");
    assert!(c.close_info().is_none());
    assert_eq!(gw.websocket_connections(), 2);
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_its_session_kept() {
    let timeout = Duration::from_millis(300);
    let gw = TestGateway::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.ping_timeout = timeout;
        c.resume_grace = Duration::from_secs(30);
    })
    .await;
    let mut a = gw.client().await;
    a.join("r", None).await.unwrap();
    let mut ws = BareSocket::connect(gw.addr).await;
    ws.send_text(r#"{"type":"hello","v":1}"#).await;
    ws.send_text(r#"{"type":"join","room":"r"}"#).await;
    let joined_at = Instant::now();
    let peer = match next(&mut a).await {
        ServerMessage::PeerJoined { peer, .. } => peer,
        other => panic!("{other:?}"),
    };
    // Never read, so never answer a ping: the server gives up.
    gw.until("the silent connection to be closed", |gw| {
        gw.websocket_connections() == 1
    })
    .await;
    assert!(joined_at.elapsed() >= timeout, "{:?}", joined_at.elapsed());
    // What it sent: welcome, joined, pings, and a close frame.
    let mut session = None;
    let mut pings = 0;
    let close = loop {
        match within(WAIT, "frames", ws.read_frame()).await {
            Some(BareFrame::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "welcome" {
                    session = v["session"].as_str().map(str::to_owned);
                }
            }
            Some(BareFrame::Ping) => pings += 1,
            Some(BareFrame::Close(code)) => break code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert!(pings >= 2, "pinged before giving up: {pings}");
    // PROTOCOL.md names no code for a keepalive timeout; the gateway uses
    // 1001 (going away). Any code will do as long as a close frame comes.
    assert!(close.is_some());
    // A keepalive timeout is a loss, not a goodbye: the session waits for a
    // resume and the room saw nothing.
    assert_nothing_pending(&mut a).await;
    let resumed = gw
        .client_with(Options {
            resume: Some(Resume {
                session: session.expect("welcome had a session"),
                last_seq: 1,
            }),
            ..Options::default()
        })
        .await;
    assert!(resumed.welcome().resumed);
    assert_eq!(resumed.peer(), &peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4009_and_resumes_without_a_gap() {
    const N: u64 = 300;
    let gw = TestGateway::with(|c| {
        c.outbound_queue = 16;
        c.resume_buffer = 4000;
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
    })
    .await;
    let a = gw.client().await;
    // b reads at most 4 events ahead of the application, which reads none
    // until the flood is over.
    let mut b = gw
        .client_with(Options {
            event_buffer: 4,
            ..Options::default()
        })
        .await;
    a.join("r", None).await.unwrap();
    b.join("r", None).await.unwrap();
    // 300 × 32 KiB: twice what the socket buffers between gateway and b
    // hold on loopback, and quick enough that b starts reading well within
    // the 5 s the gateway gives a closing connection to take its close frame.
    let pad = "x".repeat(32 * 1024);
    for n in 0..N {
        a.signal_no_ack("r", b.peer(), json!({"n": n, "pad": pad}))
            .await
            .unwrap();
    }
    // Answered after the gateway has delivered every signal to b's session.
    within(Duration::from_secs(30), "a's pong", a.ping())
        .await
        .unwrap();

    let mut got = Vec::new();
    let (code, seen) = until_closed(&mut b, Duration::from_secs(30)).await;
    for m in seen {
        match m {
            ServerMessage::Signal { data, .. } => got.push(json_of(&data)["n"].as_u64().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        code,
        Some(4009),
        "b read {} of {N} signals (on loopback about 4 MB, 130 of them, fit in \
         the socket buffers between gateway and b)",
        got.len()
    );
    assert!((got.len() as u64) < N, "b cannot have read everything");
    assert_eq!(b.seq_errors(), 0);

    let mut b2 = gw
        .client_with(Options {
            resume: Some(b.resume_info()),
            ..Options::default()
        })
        .await;
    assert!(b2.welcome().resumed, "resumable from the replay buffer");
    assert_eq!(b2.peer(), b.peer());
    while (got.len() as u64) < N {
        match next(&mut b2).await {
            ServerMessage::Signal { data, .. } => got.push(json_of(&data)["n"].as_u64().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every signal once, in order"
    );
    assert_eq!(b2.seq_errors(), 0);
    assert_nothing_pending(&mut b2).await;
}

#[tokio::test]
async fn resuming_an_attached_session_takes_it_over_with_4010() {
    let gw = TestGateway::start().await;
    let (mut a, mut b) = pair(&gw, "r").await;
    let b2 = gw.client_with(resume_of(&b)).await;
    assert!(b2.welcome().resumed);
    assert_eq!(b2.peer(), b.peer());
    let (code, _) = until_closed(&mut b, WAIT).await;
    assert_eq!(code, Some(4010));
    // The room saw nothing; the session lives on in b2.
    fence(&b2, &mut a, "r").await;
    a.signal("r", b2.peer(), json!("to the new connection"))
        .await
        .unwrap();
    let mut b2 = b2;
    match next(&mut b2).await {
        ServerMessage::Signal { data, .. } => {
            assert_eq!(json_of(&data), json!("to the new connection"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b2.seq_errors(), 0);
}
