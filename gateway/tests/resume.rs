//! PROTOCOL.md §2–3: resume within the grace window, replay of what was
//! missed with continuous `seq`s, and every way a resume fails.

mod common;

use common::{
    TestGateway, WAIT, assert_nothing_pending, expect_peer_left, fence, json_of, next_msg, pair,
    resume_of, within,
};
use pantheon_client::Options;
use pantheon_client::protocol::{ErrorCode, Resume, ServerMessage};
use pantheon_client::raw::RawSocket;
use serde_json::json;
use std::time::Duration;

fn resume_token(session: &str, last_seq: u64) -> Options {
    Options {
        resume: Some(Resume {
            session: session.to_owned(),
            last_seq,
        }),
        ..Options::default()
    }
}

#[tokio::test]
async fn resume_within_grace_replays_what_was_missed() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    b.join("s", Some(json!({"in": "s"}))).await.unwrap();
    let last_seq = b.last_seq();
    b.abort().await;
    // b is resuming: still a member, so signals to it are accepted.
    for n in 0..5 {
        a.signal("r", b.peer(), json!({"n": n})).await.expect("ack");
    }
    a.broadcast("r", json!("to all")).await.unwrap();

    let mut b2 = gw.client_with(resume_of(&b)).await;
    let w = b2.welcome();
    assert!(w.resumed);
    assert_eq!(&w.peer, b.peer(), "same peer");
    assert_eq!(w.session, b.session(), "the token stays valid");
    for n in 0..5u64 {
        let (seq, msg) = next_msg(&mut b2).await;
        assert_eq!(seq, Some(last_seq + 1 + n), "replayed with its own seq");
        match msg {
            ServerMessage::Signal { data, from, room } => {
                assert_eq!(json_of(&data), json!({"n": n}));
                assert_eq!(&from, a.peer());
                assert_eq!(room.as_str(), "r");
            }
            other => panic!("expected signal {n}, got {other:?}"),
        }
    }
    let (seq, msg) = next_msg(&mut b2).await;
    assert_eq!(seq, Some(last_seq + 6));
    assert!(matches!(msg, ServerMessage::Broadcast { .. }), "{msg:?}");
    // Nothing twice, nothing more, and new messages continue the sequence.
    assert_nothing_pending(&mut b2).await;
    assert_eq!(b2.last_seq(), last_seq + 7, "the pong took the next seq");
    assert_eq!(b2.seq_errors(), 0);
    // Same rooms (with the same meta).
    assert_eq!(&b2.peers("r").await.unwrap()[0].peer, a.peer());
    assert!(b2.peers("s").await.unwrap().is_empty());
    let listed = a.peers("r").await.unwrap();
    assert_eq!(&listed[0].peer, b.peer());
    // The room saw no peer_left / peer_joined.
    fence(&b2, &mut a, "r").await;
}

#[tokio::test]
async fn resume_with_nothing_missed_continues_the_sequence() {
    let gw = TestGateway::start().await;
    let mut raw = gw.raw().await;
    raw.send_text(r#"{"type":"hello","v":1}"#).await.unwrap();
    let w = match within(WAIT, "welcome", raw.recv_message()).await.unwrap() {
        pantheon_client::protocol::Received {
            message: ServerMessage::Welcome(w),
            ..
        } => w,
        other => panic!("{other:?}"),
    };
    for id in 1..=3 {
        raw.send_text(format!(r#"{{"type":"ping","id":{id}}}"#))
            .await
            .unwrap();
        assert_eq!(
            within(WAIT, "pong", raw.recv_message()).await.unwrap().seq,
            Some(id)
        );
    }
    drop(raw);
    let mut again = RawSocket::connect(&gw.ws_url()).await.unwrap();
    again
        .send_text(format!(
            r#"{{"type":"hello","v":1,"id":7,"resume":{{"session":"{}","last_seq":3}}}}"#,
            w.session
        ))
        .await
        .unwrap();
    match within(WAIT, "welcome", again.recv_message()).await.unwrap() {
        pantheon_client::protocol::Received {
            seq: None,
            message: ServerMessage::Welcome(w2),
        } => {
            assert!(w2.resumed);
            assert_eq!(w2.id, Some(7));
            assert_eq!(w2.peer, w.peer);
        }
        other => panic!("{other:?}"),
    }
    again.send_text(r#"{"type":"ping","id":8}"#).await.unwrap();
    let r = within(WAIT, "pong", again.recv_message()).await.unwrap();
    assert_eq!(
        r.seq,
        Some(4),
        "after a resume the first message has last_seq + 1"
    );
    assert_eq!(r.message, ServerMessage::Pong { id: Some(8) });
}

#[tokio::test]
async fn resume_from_an_earlier_last_seq_replays_from_there() {
    // A client may have received messages it did not process: it resumes
    // from what it processed and gets the rest again, with the same seqs.
    let gw = TestGateway::start().await;
    let (a, mut b) = pair(&gw, "r").await;
    let before = b.last_seq();
    for n in 0..3 {
        a.signal("r", b.peer(), json!(n)).await.unwrap();
    }
    for _ in 0..3 {
        next_msg(&mut b).await;
    }
    b.abort().await;
    let mut b2 = gw.client_with(resume_token(b.session(), before + 1)).await;
    assert!(b2.welcome().resumed);
    for n in 1..3u64 {
        let (seq, msg) = next_msg(&mut b2).await;
        assert_eq!(seq, Some(before + 1 + n));
        match msg {
            ServerMessage::Signal { data, .. } => assert_eq!(json_of(&data), json!(n)),
            other => panic!("{other:?}"),
        }
    }
    assert_nothing_pending(&mut b2).await;
    assert_eq!(b2.seq_errors(), 0);
}

#[tokio::test]
async fn resume_twice_in_a_row() {
    let gw = TestGateway::start().await;
    let (a, mut b) = pair(&gw, "r").await;
    for round in 0..3 {
        b.abort().await;
        a.signal("r", b.peer(), json!(round)).await.unwrap();
        let mut next_b = gw.client_with(resume_of(&b)).await;
        assert!(next_b.welcome().resumed, "round {round}");
        match next_msg(&mut next_b).await.1 {
            ServerMessage::Signal { data, .. } => assert_eq!(json_of(&data), json!(round)),
            other => panic!("{other:?}"),
        }
        assert_eq!(next_b.seq_errors(), 0);
        b = next_b;
    }
}

#[tokio::test]
async fn resume_past_the_replay_buffer_fails_and_ends_the_old_session() {
    let gw = TestGateway::with(|c| {
        c.resume_buffer = 3;
        c.resume_grace = Duration::from_secs(30);
    })
    .await;
    let (mut a, mut b) = pair(&gw, "r").await;
    b.abort().await;
    for n in 0..5 {
        a.signal("r", b.peer(), json!(n)).await.unwrap();
    }
    let b2 = gw.client_with(resume_of(&b)).await;
    assert!(!b2.welcome().resumed, "two of the missed messages are gone");
    assert_ne!(b2.peer(), b.peer(), "a new peer");
    // At once, not after the 30 s grace window.
    assert_eq!(
        expect_peer_left(&mut a, "r", b.peer()).await,
        "disconnected"
    );
    // The new session starts from scratch: no rooms, seq from 1.
    let e = b2.peers("r").await.unwrap_err();
    assert_eq!(e.server_code(), Some(ErrorCode::NotInRoom));
    assert_eq!(b2.seq_errors(), 0);
    assert_eq!(b2.last_seq(), 1);
    assert_eq!(gw.shared.hub.counts(), (1, 2));
    // And the old token is dead for good.
    let b3 = gw.client_with(resume_of(&b)).await;
    assert!(!b3.welcome().resumed);
}

#[tokio::test]
async fn resume_with_an_unknown_token_opens_a_new_session() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, b) = pair(&gw, "r").await;
    let (id, secret) = b.session().rsplit_once('.').unwrap_or((b.session(), ""));
    let wrong_secret = format!("{id}.{}", "0".repeat(secret.len().max(1)));
    for token in [
        "garbage".to_owned(),
        String::new(),
        "p_00000000000000000000.0123456789abcdef".to_owned(),
        wrong_secret,
        b.peer().to_string(),
        format!("{}x", b.session()),
    ] {
        let c = gw.client_with(resume_token(&token, 0)).await;
        assert!(!c.welcome().resumed, "{token:?}");
        assert_ne!(c.peer(), b.peer(), "{token:?}");
        assert_ne!(c.peer(), a.peer(), "{token:?}");
    }
    // None of them disturbed b's session.
    assert!(b.close_info().is_none());
    b.ping().await.expect("b is still attached");
    fence(&b, &mut a, "r").await;
}

#[tokio::test]
async fn resume_after_the_grace_window_fails() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_millis(200)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    b.abort().await;
    assert_eq!(
        expect_peer_left(&mut a, "r", b.peer()).await,
        "disconnected"
    );
    let b2 = gw.client_with(resume_of(&b)).await;
    assert!(!b2.welcome().resumed);
    assert_ne!(b2.peer(), b.peer());
    assert_eq!(gw.shared.hub.counts(), (1, 2));
}

#[tokio::test]
async fn a_resumed_session_can_be_left_for_good() {
    let gw = TestGateway::with(|c| c.resume_grace = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    b.abort().await;
    let mut b2 = gw.client_with(resume_of(&b)).await;
    assert!(b2.welcome().resumed);
    within(WAIT, "close", b2.close()).await.unwrap();
    assert_eq!(expect_peer_left(&mut a, "r", b.peer()).await, "left");
}
