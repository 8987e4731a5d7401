//! The same session behaviour over both transports: each test runs once
//! over WebSocket and once over WebTransport (`name::websocket`,
//! `name::webtransport`), and where a second connection is involved, over
//! each transport for it too.

mod common;

use common::*;
use pantheon_client::protocol::{ErrorCode, ServerMessage};
use pantheon_client::{Error, Event, Options, Transport};
use serde_json::json;
use std::time::{Duration, Instant};

/// `Client::close`'s code as the closing client reports it: the server's
/// answering close frame (1000) over WebSocket, the session close code 0
/// over WebTransport.
fn goodbye_code(t: Transport) -> Option<u16> {
    match t {
        Transport::WebSocket => Some(1000),
        Transport::WebTransport => Some(0),
    }
}

over_both! {
    async fn requests_replies_and_errors(t) {
        let gw = Gw::start().await;
        let mut c = gw.client(t).await;
        assert!(!c.welcome().resumed);
        assert!(c.join("room", Some(json!({"n": 1}))).await.unwrap().is_empty());
        assert!(c.peers("room").await.unwrap().is_empty());
        c.update("room", json!({"n": 2})).await.unwrap();
        // Errors are replies; the session stays.
        let err = c.signal("elsewhere", "p_x", json!(1)).await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::NotInRoom), "{err}");
        let err = c.signal("room", "p_nobody", json!(1)).await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::PeerNotFound), "{err}");
        let err = c.signal("room", c.peer(), json!(1)).await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
        c.send_raw_text("not json").await.unwrap();
        expect_error(&mut c, None, ErrorCode::BadRequest).await;
        c.leave("room").await.unwrap();
        let err = c.leave("room").await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::NotInRoom), "{err}");
        c.ping().await.unwrap();
        assert_eq!((c.seq_errors(), c.protocol_errors()), (0, 0));
        assert_eq!(gw.connections(t), 1);
    }

    async fn a_message_over_the_limit_is_too_large_and_the_session_stays(t) {
        let gw = Gw::with(|c| c.limits.max_message_bytes = 1024).await;
        let mut c = gw.client(t).await;
        let big = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2000));
        c.send_raw_text(big).await.unwrap();
        expect_error(&mut c, None, ErrorCode::TooLarge).await;
        c.ping().await.unwrap();
    }

    async fn close_is_a_goodbye(t) {
        let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
        for other in BOTH {
            let room = format!("bye-{}", other.as_str());
            let (mut a, mut b) = pair(&gw, &room, other, t).await;
            let peer = b.peer().clone();
            let info = within(WAIT, "close", b.close()).await.expect("close");
            assert_eq!(info.code, goodbye_code(t), "{info}");
            // Before the 30 s grace window: only a goodbye does that.
            assert_eq!(expect_peer_left(&mut a, &room, &peer).await, "left");
        }
        gw.until("the sessions to be gone", |g| g.connections(t) == 0).await;
    }

    async fn close_with_1001_starts_the_grace_window(t) {
        let grace = Duration::from_millis(400);
        let gw = Gw::with(|c| c.resume_grace = grace).await;
        let (mut a, mut b) = pair(&gw, "away", Transport::WebSocket, t).await;
        let peer = b.peer().clone();
        let started = Instant::now();
        within(WAIT, "close", b.close_with(1001, "unloading")).await.expect("close");
        assert_eq!(expect_peer_left(&mut a, "away", &peer).await, "disconnected");
        assert!(started.elapsed() >= grace, "peer_left after {:?}", started.elapsed());
    }

    async fn abort_then_resume_over_either_transport(t) {
        let gw = Gw::with(|c| c.resume_grace = Duration::from_secs(30)).await;
        for to in BOTH {
            let room = format!("resume-{}", to.as_str());
            let (mut other, mut c) = pair(&gw, &room, Transport::WebSocket, t).await;
            c.ping().await.unwrap();
            let peer = c.peer().clone();
            c.abort().await;
            let resume = c.resume_info();
            for n in 0..5 {
                other.signal(&room, &peer, json!({"n": n})).await.expect("ack");
            }
            let options = Options { resume: Some(resume.clone()), ..Options::default() };
            let mut back = gw.client_with(to, options).await;
            assert!(back.welcome().resumed, "{t} -> {to}");
            assert_eq!(back.peer(), &peer);
            for n in 0..5u64 {
                let (seq, message) = next_msg(&mut back).await;
                assert_eq!(seq, Some(resume.last_seq + 1 + n), "{t} -> {to}");
                match message {
                    ServerMessage::Signal { data, .. } => assert_eq!(json_of(&data), json!({"n": n})),
                    other => panic!("{t} -> {to}: expected signal {n}, got {other:?}"),
                }
            }
            fence(&back, &mut other, &room).await;
            back.close().await.unwrap();
        }
    }

    async fn a_resume_elsewhere_takes_over_with_4010(t) {
        let gw = Gw::start().await;
        for to in BOTH {
            let mut c = gw.client(t).await;
            c.ping().await.unwrap();
            let options = Options { resume: Some(c.resume_info()), ..Options::default() };
            let taker = gw.client_with(to, options).await;
            assert!(taker.welcome().resumed, "{t} taken over by {to}");
            let (code, _) = until_closed(&mut c, WAIT).await;
            assert_eq!(code, Some(4010), "{t} taken over by {to}");
            // The old connection's requests fail with its close.
            let err = c.ping().await.unwrap_err();
            assert_eq!(err.close_code(), Some(4010));
        }
    }

    async fn silence_before_hello_closes_with_4001(t) {
        let gw = Gw::with(|c| c.hello_timeout = Duration::from_millis(200)).await;
        let mut raw = gw.raw(t).await;
        let info = within(WAIT, "the close", raw.recv_close()).await.unwrap();
        assert_eq!(info.code, Some(4001), "{info}");
    }

    async fn an_unsupported_version_gets_the_error_then_4002(t) {
        let gw = Gw::start().await;
        let options = Options { version: Some(2), ..Options::default() };
        match gw.connect(t, options).await {
            Err(Error::Server { code: ErrorCode::UnsupportedVersion, .. }) => {}
            other => panic!("expected unsupported_version, got {other:?}"),
        }
        let mut raw = gw.raw(t).await;
        raw.send_text(r#"{"type":"hello","v":2,"id":3}"#).await.unwrap();
        let error = within(WAIT, "the error", raw.recv_message()).await.unwrap();
        assert!(matches!(
            error.message,
            ServerMessage::Error { code: ErrorCode::UnsupportedVersion, id: Some(3), .. }
        ), "{error:?}");
        assert_eq!(within(WAIT, "the close", raw.recv_close()).await.unwrap().code, Some(4002));
    }

    async fn signals_keep_their_order_in_volume(t) {
        let gw = Gw::with(|c| {
            c.limits.rate_per_sec = 100_000;
            c.limits.rate_burst = 100_000;
        })
        .await;
        for to in BOTH {
            let room = format!("volume-{}", to.as_str());
            let (mut receiver, sender) = pair(&gw, &room, to, t).await;
            let peer = receiver.peer().clone();
            for n in 0..500 {
                sender.signal_no_ack(&room, &peer, json!([n])).await.unwrap();
            }
            let mut got = 0;
            while got < 500 {
                match within(WAIT, "a signal", receiver.next_event()).await {
                    Some(Event::Message { message: ServerMessage::Signal { data, .. }, .. }) => {
                        assert_eq!(json_of(&data), json!([got]), "{t} -> {to}");
                        got += 1;
                    }
                    other => panic!("{t} -> {to}: expected signal {got}, got {other:?}"),
                }
            }
            assert_eq!(receiver.seq_errors(), 0);
        }
    }
}
