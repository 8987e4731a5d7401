//! PROTOCOL.md §1–3: the transport handshake (subprotocol, origin), `hello`
//! and `welcome`, and `seq` numbering.

mod common;

use common::{TestGateway, WAIT, within};
use pantheon_client::protocol::{
    ClientMessage, ErrorCode, Limits, Received, Request, ServerMessage, Welcome,
};
use pantheon_client::raw::{Frame, RawOptions, RawSocket};
use pantheon_client::{Error, Options};
use std::time::{Duration, Instant};

fn hello(id: Option<u64>, v: Option<u64>) -> ClientMessage {
    ClientMessage {
        id,
        request: Request::Hello {
            v,
            token: None,
            resume: None,
        },
    }
}

async fn recv(ws: &mut RawSocket) -> Received {
    within(WAIT, "a message", ws.recv_message())
        .await
        .expect("a protocol message")
}

async fn recv_welcome(ws: &mut RawSocket) -> Welcome {
    match recv(ws).await {
        Received {
            seq: None,
            message: ServerMessage::Welcome(w),
        } => w,
        other => panic!("expected welcome without seq, got {other:?}"),
    }
}

#[tokio::test]
async fn welcome_carries_every_field() {
    let gw = TestGateway::with(|c| {
        c.server_id = "server-1".into();
        c.region = "us-east".into();
        c.ping_interval = Duration::from_millis(25_000);
        c.limits = Limits {
            max_message_bytes: 4096,
            max_rooms: 7,
            max_room_peers: 9,
            rate_per_sec: 11,
            rate_burst: 13,
        };
    })
    .await;
    let a = gw
        .client_with(Options {
            hello_id: Some(42),
            ..Options::default()
        })
        .await;
    let b = gw.client().await;
    let w = a.welcome();
    assert_eq!(w.id, Some(42), "welcome echoes hello's id");
    assert_eq!(w.v, 1);
    assert!(
        w.peer.as_str().starts_with("p_"),
        "server-assigned peer id: {}",
        w.peer
    );
    assert_ne!(w.peer, b.welcome().peer, "every session gets its own peer");
    assert!(!w.session.is_empty(), "a resume token");
    assert_ne!(w.session, b.welcome().session);
    assert!(!w.resumed);
    assert_eq!(w.server, "server-1");
    assert_eq!(w.region, "us-east");
    assert_eq!(w.heartbeat_ms, 25_000);
    assert_eq!(
        w.limits,
        Limits {
            max_message_bytes: 4096,
            max_rooms: 7,
            max_room_peers: 9,
            rate_per_sec: 11,
            rate_burst: 13,
        }
    );
    assert_eq!(w.ice_servers, None, "no STUN/TURN configured");
    assert_eq!(b.welcome().id, None, "no id in hello, none in welcome");
}

#[tokio::test]
async fn peer_is_never_chosen_by_the_client() {
    let gw = TestGateway::start().await;
    let mut ws = gw.raw().await;
    // A `peer` field in hello is an unknown field: ignored.
    ws.send_text(r#"{"type":"hello","v":1,"peer":"p_mine","id":1}"#)
        .await
        .unwrap();
    let w = recv_welcome(&mut ws).await;
    assert_ne!(w.peer.as_str(), "p_mine");
    assert!(w.peer.as_str().starts_with("p_"));
}

#[tokio::test]
async fn welcome_has_no_seq_and_numbering_starts_at_one() {
    let gw = TestGateway::start().await;
    let mut ws = gw.raw().await;
    ws.send_message(&hello(Some(5), Some(1))).await.unwrap();
    let w = recv_welcome(&mut ws).await;
    assert_eq!(w.id, Some(5));
    for (i, id) in (6..10).enumerate() {
        ws.send_text(format!(r#"{{"type":"ping","id":{id}}}"#))
            .await
            .unwrap();
        let r = recv(&mut ws).await;
        assert_eq!(r.seq, Some(i as u64 + 1));
        assert_eq!(r.message, ServerMessage::Pong { id: Some(id) });
    }
}

#[tokio::test]
async fn seqs_never_gap_or_repeat() {
    let gw = TestGateway::start().await;
    let (mut a, b) = common::pair(&gw, "r").await;
    assert_eq!(a.last_seq(), 2, "joined, then peer_joined");
    for i in 0..20 {
        b.signal("r", a.peer(), serde_json::json!(i)).await.unwrap();
        a.ping().await.unwrap();
    }
    b.broadcast("r", serde_json::json!("all")).await.unwrap();
    let mut seqs = Vec::new();
    for _ in 0..21 {
        seqs.push(common::next_msg(&mut a).await.0.expect("seq"));
    }
    // Events and replies share one sequence: 20 signals interleaved with
    // 20 pongs, then the broadcast.
    assert_eq!(a.last_seq(), 2 + 41);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(a.seq_errors(), 0);
    assert_eq!(b.seq_errors(), 0);
    assert_eq!(a.protocol_errors(), 0);
}

#[tokio::test]
async fn silence_instead_of_hello_closes_with_4001() {
    let gw = TestGateway::with(|c| c.hello_timeout = Duration::from_millis(200)).await;
    let mut ws = gw.raw().await;
    let start = Instant::now();
    let close = within(WAIT, "close", ws.recv_close()).await.unwrap();
    assert_eq!(close.code, Some(4001));
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn pings_are_not_a_hello() {
    let gw = TestGateway::with(|c| c.hello_timeout = Duration::from_millis(200)).await;
    // A raw socket that sends a ping keeps the transport alive but is still
    // not a hello.
    let mut ws = gw.raw().await;
    ws.send_ping(b"x".to_vec()).await.unwrap();
    let close = within(WAIT, "close", ws.recv_close()).await.unwrap();
    assert_eq!(close.code, Some(4001));
}

#[tokio::test]
async fn anything_but_hello_first_closes_with_4001() {
    let gw = TestGateway::start().await;
    for first in [
        r#"{"type":"ping","id":3}"#,
        r#"{"type":"join","room":"r"}"#,
        "not json",
    ] {
        let mut ws = gw.raw().await;
        ws.send_text(first).await.unwrap();
        let mut texts = Vec::new();
        let code = loop {
            match within(WAIT, "close", ws.recv()).await.unwrap() {
                Some(Frame::Close { code, .. }) => break code,
                Some(Frame::Text(t)) => texts.push(t),
                Some(_) => {}
                None => break None,
            }
        };
        assert_eq!(code, Some(4001), "after {first}");
        // The gateway may explain first; what it says is an error, never a
        // welcome.
        for t in texts {
            assert!(t.contains(r#""type":"error""#), "{t}");
            assert!(!t.contains("seq"), "nothing before welcome has a seq: {t}");
        }
    }
    // A binary first frame too.
    let mut ws = gw.raw().await;
    ws.send_binary(vec![1, 2, 3]).await.unwrap();
    let close = within(WAIT, "close", ws.recv_close()).await.unwrap();
    assert_eq!(close.code, Some(4001));
}

#[tokio::test]
async fn unsupported_version_is_an_error_then_4002() {
    let gw = TestGateway::start().await;
    let mut ws = gw.raw().await;
    ws.send_message(&hello(Some(9), Some(2))).await.unwrap();
    match recv(&mut ws).await.message {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert_eq!(id, Some(9));
        }
        other => panic!("expected unsupported_version, got {other:?}"),
    }
    let close = within(WAIT, "close", ws.recv_close()).await.unwrap();
    assert_eq!(close.code, Some(4002));

    // The client library reports it as the server's error.
    let err = pantheon_client::Client::connect_with(
        &gw.ws_url(),
        Options {
            version: Some(2),
            ..Options::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.server_code(),
        Some(ErrorCode::UnsupportedVersion),
        "{err}"
    );
}

#[tokio::test]
async fn hello_without_v_means_version_1() {
    let gw = TestGateway::start().await;
    let c = gw
        .client_with(Options {
            version: None,
            ..Options::default()
        })
        .await;
    assert_eq!(c.welcome().v, 1);
}

#[tokio::test]
async fn subprotocol_is_selected_when_offered() {
    let gw = TestGateway::start().await;
    let ws = gw.raw().await;
    assert_eq!(ws.subprotocol(), Some("pantheon.v1"));
    // Among others, too.
    let ws = gw
        .raw_with(&RawOptions {
            subprotocol: Some("chat, pantheon.v1".into()),
            ..RawOptions::default()
        })
        .await
        .expect("pantheon.v1 among others is accepted");
    assert_eq!(ws.subprotocol(), Some("pantheon.v1"));
}

#[tokio::test]
async fn no_subprotocol_is_accepted() {
    let gw = TestGateway::start().await;
    let mut ws = gw
        .raw_with(&RawOptions {
            subprotocol: None,
            ..RawOptions::default()
        })
        .await
        .expect("no subprotocol is fine");
    assert_eq!(ws.subprotocol(), None);
    ws.send_message(&hello(None, Some(1))).await.unwrap();
    recv_welcome(&mut ws).await;
    // And with the client library.
    let c = gw
        .client_with(Options {
            subprotocol: None,
            ..Options::default()
        })
        .await;
    c.ping().await.unwrap();
}

#[tokio::test]
async fn unknown_subprotocol_alone_is_refused() {
    let gw = TestGateway::start().await;
    let err = gw
        .raw_with(&RawOptions {
            subprotocol: Some("pantheon.v2".into()),
            ..RawOptions::default()
        })
        .await
        .unwrap_err();
    match err {
        Error::Handshake { status, .. } => assert_eq!(status, Some(400)),
        other => panic!("expected a refused upgrade, got {other}"),
    }
}

#[tokio::test]
async fn origin_is_checked_when_allowed_origins_is_set() {
    let gw = TestGateway::with(|c| {
        c.allowed_origins = Some(vec![
            "https://app.example".into(),
            "http://localhost:8080".into(),
        ]);
    })
    .await;
    let with_origin = |o: Option<&str>| RawOptions {
        origin: o.map(str::to_owned),
        ..RawOptions::default()
    };
    for ok in ["https://app.example", "http://localhost:8080"] {
        let mut ws = gw.raw_with(&with_origin(Some(ok))).await.expect(ok);
        ws.send_message(&hello(None, None)).await.unwrap();
        recv_welcome(&mut ws).await;
    }
    for bad in ["https://evil.example", "https://app.example.evil", "null"] {
        match gw.raw_with(&with_origin(Some(bad))).await {
            Err(Error::Handshake { status, .. }) => assert_eq!(status, Some(403), "{bad}"),
            other => panic!("{bad}: expected 403, got {other:?}"),
        }
    }
    // Non-browser clients send no Origin.
    let mut ws = gw.raw_with(&with_origin(None)).await.expect("no Origin");
    ws.send_message(&hello(None, None)).await.unwrap();
    recv_welcome(&mut ws).await;
}

#[tokio::test]
async fn any_origin_when_allowed_origins_is_unset() {
    let gw = TestGateway::start().await;
    let c = gw
        .client_with(Options {
            origin: Some("https://anything.example".into()),
            ..Options::default()
        })
        .await;
    c.ping().await.unwrap();
}

#[tokio::test]
async fn second_hello_is_a_bad_request() {
    let gw = TestGateway::start().await;
    let c = gw.client().await;
    let err = c
        .request(Request::Hello {
            v: Some(1),
            token: None,
            resume: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest));
    c.ping().await.expect("the connection stays open");
}

#[tokio::test]
async fn ping_pong() {
    let gw = TestGateway::start().await;
    let mut c = gw.client().await;
    c.ping().await.unwrap();
    // Without id, the pong comes without id, as an event.
    c.send(Request::Ping, false).await.unwrap();
    let (seq, msg) = common::next_msg(&mut c).await;
    assert_eq!(msg, ServerMessage::Pong { id: None });
    assert_eq!(seq, Some(2));
}
