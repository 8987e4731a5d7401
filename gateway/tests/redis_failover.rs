//! An instance that dies (SIGKILL) or drains (SIGTERM): its sessions
//! resume on other instances without losing or repeating a directed
//! message, and each member it loses for good leaves every room exactly
//! once (DESIGN.md "Failure semantics").

mod common;
mod scale;

use common::{WAIT, assert_nothing_pending, next, until_closed, within};
use pantheon_client::protocol::ServerMessage;
use pantheon_testkit::{Redis, RedisOptions};
use scale::{
    GRACE, INSTANCE_TTL, Seen, assert_keys_expire, connect, connect_with, disconnected, instance,
    join_all, members, numbered, observe, peers_of, resume,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_peer_left_per_lost_member_and_resumed_sessions_lose_nothing() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let gw_a = instance("gw-a", "local", &env).spawn().await;
    let mut gw_b = instance("gw-b", "local", &env).spawn().await;
    let gw_c = instance("gw-c", "local", &env).spawn().await;

    let mut x = connect(&gw_a).await;
    let mut y = connect(&gw_c).await;
    // On the instance that will die: two that resume elsewhere (one before
    // the others can know it is dead, one after), two that never come back.
    let mut early = connect(&gw_b).await;
    let mut late = connect(&gw_b).await;
    let mut lost1 = connect(&gw_b).await;
    let mut lost2 = connect(&gw_b).await;
    join_all(
        "r",
        &mut [
            &mut x, &mut y, &mut early, &mut late, &mut lost1, &mut lost2,
        ],
    )
    .await;
    join_all("t", &mut [&mut x, &mut lost1]).await;
    let (early_id, late_id) = (early.peer().clone(), late.peer().clone());
    let (lost1_id, lost2_id) = (lost1.peer().clone(), lost2.peer().clone());
    let early_info = early.resume_info();
    let late_info = late.resume_info();

    let killed = Instant::now();
    gw_b.kill();
    drop((early, late, lost1, lost2));

    // Directed messages to the sessions of the dead instance are accepted
    // and kept for them.
    for i in 0..10 {
        x.signal("r", &early_id, json!({"i": i})).await.unwrap();
        y.signal("r", &early_id, json!({"i": i})).await.unwrap();
        x.signal("r", &late_id, json!({"i": i})).await.unwrap();
        y.signal("r", &late_id, json!({"i": i})).await.unwrap();
    }

    // `early` resumes on A, long before B's liveness key expires.
    let mut early = connect_with(
        &gw_a,
        pantheon_client::Options {
            resume: Some(early_info.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        early.welcome().resumed,
        "resume on A within the grace window"
    );
    assert_eq!(early.peer(), &early_id, "same peer");
    assert_eq!(early.welcome().server, "gw-a");
    for i in 10..15 {
        x.signal("r", &early_id, json!({"i": i})).await.unwrap();
    }

    // `late` resumes on C once B has surely been declared dead, still
    // within the grace window that then started.
    tokio::time::sleep_until(killed + INSTANCE_TTL + Duration::from_millis(300)).await;
    let mut late = connect_with(
        &gw_c,
        pantheon_client::Options {
            resume: Some(late_info.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        late.welcome().resumed,
        "resume on C {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(late.peer(), &late_id);
    for i in 10..15 {
        y.signal("r", &late_id, json!({"i": i})).await.unwrap();
    }

    // Everyone still here gets exactly the messages meant for it.
    let lost_r = disconnected(&[("r", &lost1_id), ("r", &lost2_id)]);
    let lost_x = disconnected(&[("r", &lost1_id), ("r", &lost2_id), ("t", &lost1_id)]);
    let limit = INSTANCE_TTL + GRACE + Duration::from_secs(5);
    let mut seen_x = Seen::default();
    let mut seen_y = Seen::default();
    let mut seen_early = Seen::default();
    let mut seen_late = Seen::default();
    observe(&mut x, &mut seen_x, limit, "x", |s| s.left.len() >= 3).await;
    observe(&mut y, &mut seen_y, limit, "y", |s| s.left.len() >= 2).await;
    let (xp, yp) = (x.peer().clone(), y.peer().clone());
    observe(&mut early, &mut seen_early, limit, "early", |s| {
        s.left.len() >= 2 && s.from(&xp).len() >= 15 && s.from(&yp).len() >= 10
    })
    .await;
    observe(&mut late, &mut seen_late, limit, "late", |s| {
        s.left.len() >= 2 && s.from(&xp).len() >= 10 && s.from(&yp).len() >= 15
    })
    .await;
    assert_eq!(seen_x.left_sorted(), lost_x);
    assert_eq!(seen_y.left_sorted(), lost_r);
    assert_eq!(seen_early.left_sorted(), lost_r);
    assert_eq!(seen_late.left_sorted(), lost_r);
    for s in [&seen_x, &seen_y, &seen_early, &seen_late] {
        assert!(s.other.is_empty(), "unexpected messages {:?}", s.other);
        for (room, peer, _, at) in &s.left {
            let after = *at - killed;
            assert!(
                after >= GRACE,
                "peer_left of {peer} in {room} {after:?} after the kill, before the grace window could end"
            );
        }
    }
    // In order, none lost, none twice, and the sequence continues.
    assert_eq!(seen_early.from(&xp), numbered(0..15));
    assert_eq!(seen_early.from(&yp), numbered(0..10));
    assert_eq!(seen_late.from(&xp), numbered(0..10));
    assert_eq!(seen_late.from(&yp), numbered(0..15));
    assert_eq!(seen_early.first_seq, Some(early_info.last_seq + 1));
    assert_eq!(seen_late.first_seq, Some(late_info.last_seq + 1));

    // Nothing more comes, not even once the dead instance's clean-up could
    // have been claimed again.
    tokio::time::sleep(INSTANCE_TTL).await;
    for c in [&mut x, &mut y, &mut early, &mut late] {
        assert_nothing_pending(c).await;
        assert_eq!(c.seq_errors(), 0);
    }
    // Membership is exact everywhere, metas kept across the resume.
    let expect = |me: &str| {
        let mut m = members(&[]);
        for (peer, n) in [(&xp, 0), (&yp, 1), (&early_id, 2), (&late_id, 3)] {
            if peer.as_str() != me {
                m.insert(peer.to_string(), json!({ "n": n }));
            }
        }
        m
    };
    assert_eq!(peers_of(&x, "r").await, expect(xp.as_str()));
    assert_eq!(peers_of(&y, "r").await, expect(yp.as_str()));
    assert_eq!(peers_of(&early, "r").await, expect(early_id.as_str()));
    assert_eq!(peers_of(&late, "r").await, expect(late_id.as_str()));
    assert!(peers_of(&x, "t").await.is_empty());
    // The resumed sessions signal from their new homes.
    early.signal("r", &late_id, json!("hi")).await.unwrap();
    scale::expect_signal(&mut late, "r", &early_id, &json!("hi")).await;
    late.signal("r", &xp, json!("hey")).await.unwrap();
    scale::expect_signal(&mut x, "r", &late_id, &json!("hey")).await;
    for mut c in [x, y, early, late] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_into_resumes_on_another_instance() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let gw_a = instance("gw-a", "local", &env).spawn().await;
    let mut gw_b = instance("gw-b", "local", &env)
        .env("DRAIN_TIMEOUT_MS", "20000")
        .spawn()
        .await;
    let mut x = connect(&gw_a).await;
    let mut m1 = connect(&gw_b).await;
    let mut m2 = connect(&gw_b).await;
    join_all("r", &mut [&mut x, &mut m1, &mut m2]).await;

    let started = Instant::now();
    gw_b.terminate();
    for m in [&mut m1, &mut m2] {
        match next(m).await {
            ServerMessage::Reconnect { reason, .. } => assert_eq!(reason, "draining"),
            other => panic!("expected reconnect, got {other:?}"),
        }
    }
    let not_ready = pantheon_testkit::poll(Duration::from_secs(3), || async {
        (gw_b.ready_status().await == 503).then_some(())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "/ready of a draining instance stays 200"
    );

    // m1 drops its connection, then resumes on A; what was sent meanwhile
    // is replayed.
    let info1 = m1.resume_info();
    m1.abort().await;
    for i in 0..5 {
        x.signal("r", m1.peer(), json!({"i": i})).await.unwrap();
    }
    let mut m1b = connect_with(&gw_a, resume(&m1)).await;
    assert!(m1b.welcome().resumed);
    assert_eq!(m1b.peer(), m1.peer());
    for i in 0..5 {
        scale::expect_signal(&mut m1b, "r", x.peer(), &json!({"i": i})).await;
    }
    assert_eq!(m1b.last_seq(), info1.last_seq + 5);

    // m2 resumes on A while its old connection is still open: it is taken
    // over, and everything after the resume point comes once, in order.
    let info2 = m2.resume_info();
    for i in 0..5 {
        x.signal("r", m2.peer(), json!({"i": i})).await.unwrap();
    }
    let mut m2b = connect_with(
        &gw_a,
        pantheon_client::Options {
            resume: Some(info2.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(m2b.welcome().resumed);
    assert_eq!(m2b.peer(), m2.peer());
    for i in 0..5 {
        scale::expect_signal(&mut m2b, "r", x.peer(), &json!({"i": i})).await;
    }
    let (code, _) = until_closed(&mut m2, WAIT).await;
    assert_eq!(code, Some(4010), "the old connection is taken over");

    // With every session moved, B exits long before DRAIN_TIMEOUT_MS.
    let status = gw_b.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "B still running {:?} after SIGTERM with no sessions left",
            started.elapsed()
        )
    });
    assert!(status.success(), "B exited with {status}");

    // The room never saw them leave: not now, not after B's keys expire.
    tokio::time::sleep(INSTANCE_TTL + GRACE).await;
    for c in [&mut x, &mut m1b, &mut m2b] {
        assert_nothing_pending(c).await;
        assert_eq!(c.seq_errors(), 0);
    }
    assert_eq!(
        peers_of(&x, "r").await,
        members(&[(&m1b, json!({"n": 1})), (&m2b, json!({"n": 2}))])
    );
    m1b.signal("r", m2b.peer(), json!("moved")).await.unwrap();
    scale::expect_signal(&mut m2b, "r", m1b.peer(), &json!("moved")).await;
    m2b.broadcast("r", json!("all")).await.unwrap();
    scale::expect_broadcast(&mut x, "r", m2b.peer(), &json!("all")).await;
    scale::expect_broadcast(&mut m1b, "r", m2b.peer(), &json!("all")).await;
    for mut c in [x, m1b, m2b] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
    assert_keys_expire(&redis, "pantheon").await;
}

/// Signals that keep coming while a session of a dead instance is being
/// claimed elsewhere: once the claim moves the session in Redis, senders
/// route to the new instance, which may get them before the session is
/// attached there. None may be lost or repeated, whether the sender is on
/// the claiming instance or on a third one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_racing_a_resume_after_sigkill_are_neither_lost_nor_repeated() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let gw_a = scale::unlimited(instance("gw-a", "local", &env))
        .spawn()
        .await;
    let mut gw_b = scale::unlimited(instance("gw-b", "local", &env))
        .spawn()
        .await;
    let gw_c = scale::unlimited(instance("gw-c", "local", &env))
        .spawn()
        .await;
    let mut x = connect(&gw_a).await;
    let mut y = connect(&gw_c).await;
    const VICTIMS: usize = 4;
    let mut victims = Vec::new();
    for _ in 0..VICTIMS {
        victims.push(connect(&gw_b).await);
    }
    {
        let mut all: Vec<&mut pantheon_client::Client> = vec![&mut x, &mut y];
        all.extend(victims.iter_mut());
        join_all("r", &mut all).await;
    }
    let infos: Vec<_> = victims.iter().map(|v| v.resume_info()).collect();
    let ids: Vec<_> = victims.iter().map(|v| v.peer().clone()).collect();
    gw_b.kill();
    drop(victims);

    // x (on the claiming instance) and y (on a third) signal every victim
    // in turn, as fast as acks come, while the victims resume on A one
    // after another.
    let stop = AtomicBool::new(false);
    let resumer = async {
        let mut resumed = Vec::new();
        for info in &infos {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let c = connect_with(
                &gw_a,
                pantheon_client::Options {
                    resume: Some(info.clone()),
                    ..Default::default()
                },
            )
            .await;
            assert!(c.welcome().resumed);
            resumed.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        resumed
    };
    let (sent_x, sent_y, resumed) = tokio::join!(
        keep_signalling(&x, &ids, &stop),
        keep_signalling(&y, &ids, &stop),
        resumer
    );
    let (xp, yp) = (x.peer().clone(), y.peer().clone());
    for (mut v, id) in resumed.into_iter().zip(&ids) {
        let mut seen = Seen::default();
        observe(&mut v, &mut seen, WAIT, id.as_str(), |s| {
            s.from(&xp).len() as u64 >= sent_x && s.from(&yp).len() as u64 >= sent_y
        })
        .await;
        assert_eq!(seen.from(&xp), numbered(0..sent_x), "{id} from x");
        assert_eq!(seen.from(&yp), numbered(0..sent_y), "{id} from y");
        assert!(seen.other.is_empty(), "{:?}", seen.other);
        assert_nothing_pending(&mut v).await;
        assert_eq!(v.seq_errors(), 0);
    }
    drop(gw_c);
}

/// Signals each of `ids` in turn, `{"i": n}` in round `n`, waiting for each
/// ack, until `stop`; returns the number of rounds.
async fn keep_signalling(
    c: &pantheon_client::Client,
    ids: &[pantheon_client::protocol::PeerId],
    stop: &AtomicBool,
) -> u64 {
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for id in ids {
            c.signal("r", id, json!({ "i": sent })).await.unwrap();
        }
        sent += 1;
    }
    sent
}
