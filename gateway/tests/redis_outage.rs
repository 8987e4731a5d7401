//! Redis going away: cross-instance requests fail fast with `internal`
//! while local rooms keep working, `/ready` and `/health` tell the truth,
//! and a Redis that comes back empty is healed by the instances within
//! seconds (DESIGN.md "Redis down").

mod common;
mod scale;

use common::{WAIT, assert_nothing_pending, within};
use pantheon_client::Client;
use pantheon_client::protocol::{ErrorCode, PeerId};
use pantheon_testkit::{Gateway, Redis, RedisOptions};
use scale::{
    assert_keys_expire, code_of, connect, expect_broadcast, expect_peer_updated, expect_signal,
    instance, join_all, members, peers_of,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long a broken Redis may take to show in `/ready` and `/health`.
const DETECT: Duration = Duration::from_secs(5);
/// How fast a cross-instance request must fail while Redis is broken.
const FAIL_FAST: Duration = Duration::from_secs(2);
/// How soon routing must work again after Redis is back.
const HEAL: Duration = Duration::from_secs(5);

async fn until_health(gw: &Gateway, redis: &str, ready: u16, limit: Duration) {
    let got = pantheon_testkit::poll(limit, || async {
        let h = gw.health().await;
        (h["redis"] == redis && gw.ready_status().await == ready).then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "{}: /health redis is {} and /ready {} after {limit:?}, expected {redis} and {ready}",
        gw.name(),
        gw.health().await["redis"],
        gw.ready_status().await
    );
}

/// Retries `from` → `to` signals until one is acknowledged, within `HEAL`
/// of `since`; the acknowledged one must be `to`'s next event (a refused
/// one is never delivered). Meanwhile only `internal`, or `peer_not_found`
/// while the instances re-assert their members, may answer. Returns how
/// long it took.
async fn signal_when_healed(
    from: &Client,
    to: &mut Client,
    room: &str,
    since: Instant,
) -> Duration {
    let to_id: PeerId = to.peer().clone();
    let mut attempt = 0u64;
    let mut refused = Vec::new();
    loop {
        attempt += 1;
        let data = json!({ "attempt": attempt });
        match within(
            FAIL_FAST,
            "a signal answer",
            from.signal(room, &to_id, data.clone()),
        )
        .await
        {
            Ok(()) => {
                expect_signal(to, room, from.peer(), &data).await;
                if !refused.is_empty() {
                    eprintln!("refused while healing: {refused:?}");
                }
                return since.elapsed();
            }
            Err(e)
                if matches!(
                    e.server_code(),
                    Some(ErrorCode::Internal | ErrorCode::PeerNotFound)
                ) =>
            {
                refused.push(format!("{:?}: {e}", since.elapsed()));
            }
            Err(e) => panic!("while Redis heals, a signal failed with {e}"),
        }
        assert!(
            since.elapsed() < HEAL,
            "no cross-instance signal got through within {HEAL:?} of the restart: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_healed_within_five_seconds() {
    let mut redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    let mut a1 = connect(&a).await;
    let mut a2 = connect(&a).await;
    let mut b1 = connect(&b).await;
    join_all("r", &mut [&mut a1, &mut a2, &mut b1]).await;
    join_all("s", &mut [&mut b1, &mut a1]).await;
    assert!(!redis.keys("pantheon").await.is_empty());

    redis.kill();
    until_health(&a, "down", 503, DETECT).await;
    until_health(&b, "down", 503, DETECT).await;
    redis.restart_empty().await;
    let restarted = Instant::now();

    let took = signal_when_healed(&a1, &mut b1, "r", restarted).await;
    signal_when_healed(&b1, &mut a1, "s", restarted).await;
    eprintln!("cross-instance signaling back {took:?} after the restart");

    // Membership converges to exactly what it was, metas included.
    let want_a1_r = members(&[(&a2, json!({"n": 1})), (&b1, json!({"n": 2}))]);
    let want_b1_r = members(&[(&a1, json!({"n": 0})), (&a2, json!({"n": 1}))]);
    let want_a1_s = members(&[(&b1, json!({"n": 0}))]);
    let want_b1_s = members(&[(&a1, json!({"n": 1}))]);
    let converged = pantheon_testkit::poll(HEAL.saturating_sub(restarted.elapsed()), || async {
        (peers_of(&a1, "r").await == want_a1_r
            && peers_of(&b1, "r").await == want_b1_r
            && peers_of(&a1, "s").await == want_a1_s
            && peers_of(&b1, "s").await == want_b1_s)
            .then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "membership not exact {:?} after the restart: a1 sees r {:?} s {:?}, b1 sees r {:?} s {:?}",
        restarted.elapsed(),
        peers_of(&a1, "r").await,
        peers_of(&a1, "s").await,
        peers_of(&b1, "r").await,
        peers_of(&b1, "s").await,
    );
    for gw in [&a, &b] {
        until_health(gw, "ok", 200, Duration::from_secs(1)).await;
    }
    // Broadcasts and updates cross again, both ways.
    b1.broadcast("r", json!("back")).await.unwrap();
    expect_broadcast(&mut a1, "r", b1.peer(), &json!("back")).await;
    expect_broadcast(&mut a2, "r", b1.peer(), &json!("back")).await;
    a2.update("r", json!({"n": 1, "v": 2})).await.unwrap();
    expect_peer_updated(&mut b1, "r", a2.peer(), &json!({"n": 1, "v": 2})).await;
    expect_peer_updated(&mut a1, "r", a2.peer(), &json!({"n": 1, "v": 2})).await;
    // Nobody saw anyone leave or join over it all.
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_nothing_pending(c).await;
        assert_eq!(c.seq_errors(), 0);
    }
    // A member that joins now is seen across instances.
    let b2 = connect(&b).await;
    b2.join("r", None).await.unwrap();
    for c in [&mut a1, &mut a2, &mut b1] {
        common::expect_peer_joined(c, "r", b2.peer()).await;
    }
    for mut c in [a1, a2, b1, b2] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
    assert_keys_expire(&redis, "pantheon").await;
}

/// Local traffic in `loc` between `a1` and `a2` (same instance) works.
async fn local_room_works(a1: &mut Client, a2: &mut Client, tag: &str) {
    a1.signal("loc", a2.peer(), json!(tag)).await.unwrap();
    expect_signal(a2, "loc", a1.peer(), &json!(tag)).await;
    a2.broadcast("loc", json!(tag)).await.unwrap();
    expect_broadcast(a1, "loc", a2.peer(), &json!(tag)).await;
    a2.update("loc", json!({ "tag": tag })).await.unwrap();
    expect_peer_updated(a1, "loc", a2.peer(), &json!({ "tag": tag })).await;
    assert_eq!(
        peers_of(a1, "loc").await,
        members(&[(a2, json!({ "tag": tag }))])
    );
    a1.ping().await.unwrap();
}

/// Cross-instance requests from `a1` to `b1` in `r` fail with `internal`
/// within `FAIL_FAST`.
async fn cross_instance_fails_fast(a1: &Client, b1: &Client) {
    let started = Instant::now();
    let r = within(
        FAIL_FAST + Duration::from_secs(3),
        "the signal's answer",
        a1.signal("r", b1.peer(), json!("while down")),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code_of(r), ErrorCode::Internal);
    assert!(took < FAIL_FAST, "the signal's internal took {took:?}");
    let started = Instant::now();
    let r = within(
        FAIL_FAST + Duration::from_secs(3),
        "the broadcast's answer",
        a1.broadcast("r", Value::from("while down")),
    )
    .await;
    assert_eq!(
        code_of(r),
        ErrorCode::Internal,
        "a broadcast with members elsewhere"
    );
    assert!(
        started.elapsed() < FAIL_FAST,
        "the broadcast's internal took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_cross_instance_fails_fast_and_local_rooms_work() {
    let mut redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    let mut a1 = connect(&a).await;
    let mut a2 = connect(&a).await;
    let mut b1 = connect(&b).await;
    join_all("r", &mut [&mut a1, &mut b1]).await;
    join_all("loc", &mut [&mut a1, &mut a2]).await;

    redis.kill();
    until_health(&a, "down", 503, DETECT).await;
    assert_eq!(
        a.health().await["status"],
        "ok",
        "the instance itself is fine"
    );
    cross_instance_fails_fast(&a1, &b1).await;
    cross_instance_fails_fast(&b1, &a1).await;
    local_room_works(&mut a1, &mut a2, "down").await;

    redis.restart_empty().await;
    let restarted = Instant::now();
    signal_when_healed(&a1, &mut b1, "r", restarted).await;
    until_health(&a, "ok", 200, HEAL).await;
    local_room_works(&mut a1, &mut a2, "up").await;
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_nothing_pending(c).await;
    }
    for mut c in [a1, a2, b1] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_cross_instance_fails_fast_and_recovers() {
    let mut redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    let mut a1 = connect(&a).await;
    let mut a2 = connect(&a).await;
    let mut b1 = connect(&b).await;
    join_all("r", &mut [&mut a1, &mut b1]).await;
    join_all("loc", &mut [&mut a1, &mut a2]).await;

    // Accepts connections, answers nothing: a hung server or a black hole.
    redis.pause();
    cross_instance_fails_fast(&a1, &b1).await;
    until_health(&a, "down", 503, DETECT).await;
    local_room_works(&mut a1, &mut a2, "hung").await;

    redis.unpause();
    let resumed = Instant::now();
    signal_when_healed(&a1, &mut b1, "r", resumed).await;
    until_health(&a, "ok", 200, HEAL).await;
    until_health(&b, "ok", 200, HEAL).await;
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_nothing_pending(c).await;
    }
    assert_keys_expire(&redis, "pantheon").await;
}

/// One instance's pub/sub connection drops and cannot come back for a
/// while, though Redis is up and its command connections work (a proxy or
/// load balancer resetting it, the moment of a failover): signals sent to
/// its sessions meanwhile find no subscriber on its channel and are kept in
/// their inboxes. Once re-subscribed, the instance delivers them, before
/// anything newer: every acknowledged signal arrives, once, in order — none
/// waits for a resume that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_while_an_instance_resubscribes_arrive_once_in_order() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    // gw-b signs in as its own ACL user, which can be barred from new
    // connections while the ones it has keep working.
    redis
        .cmd(&[
            "ACL",
            "SETUSER",
            "gwb",
            "on",
            ">gwb-pass",
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env)
        .env("REDIS_USERNAME", "gwb")
        .env("REDIS_PASSWORD", "gwb-pass")
        .spawn()
        .await;
    let mut a1 = connect(&a).await;
    let mut b1 = connect(&b).await;
    join_all("r", &mut [&mut a1, &mut b1]).await;
    a1.signal("r", b1.peer(), json!({"n": 0})).await.unwrap();
    expect_signal(&mut b1, "r", a1.peer(), &json!({"n": 0})).await;

    redis.cmd(&["ACL", "SETUSER", "gwb", "off"]).await;
    let killed = redis
        .cmd(&["CLIENT", "KILL", "USER", "gwb", "TYPE", "pubsub"])
        .await;
    assert_eq!(killed.int(), Some(1), "CLIENT KILL answered {killed:?}");
    until_health(&b, "down", 503, DETECT).await;
    let sent = 20u64;
    for n in 1..=sent {
        acked(&a1, b1.peer(), n).await;
    }
    let kept: Vec<String> = redis.keys("pantheon:inbox").await;
    assert_eq!(
        kept.len(),
        1,
        "the signals were kept in one inbox: {kept:?}"
    );
    redis.cmd(&["ACL", "SETUSER", "gwb", "on"]).await;
    // Sent while gw-b re-subscribes and after: they come after the kept ones.
    for n in sent + 1..=sent + 10 {
        acked(&a1, b1.peer(), n).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 1..=sent + 10 {
        expect_signal(&mut b1, "r", a1.peer(), &json!({"n": n})).await;
    }
    assert_nothing_pending(&mut b1).await;
    assert_eq!(b1.seq_errors(), 0);
    assert!(
        redis.keys("pantheon:inbox").await.is_empty(),
        "the inbox was taken"
    );
    for mut c in [a1, b1] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
}

/// Signal `{"n": n}` from `from` to `to` in room `r`, acknowledged in time.
async fn acked(from: &Client, to: &PeerId, n: u64) {
    within(
        FAIL_FAST,
        "a signal answer",
        from.signal("r", to, json!({"n": n})),
    )
    .await
    .unwrap_or_else(|e| panic!("signal {n} refused: {e}"));
}
