//! An instance in a "remote region": it reaches Redis through a TCP proxy
//! that holds every chunk 30 ms each way (this kernel has no netem).
//! Everything still works, and the cross-region traffic is counted.

mod common;
mod scale;

use common::{WAIT, assert_nothing_pending, within};
use pantheon_testkit::{DelayProxy, Gateway, Redis, RedisOptions};
use scale::{
    assert_keys_expire, connect, counter, cross_instance_basics, expect_signal, has_counter,
    instance, join_all, ordering_across_instances, unlimited,
};
use serde_json::json;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(30);

/// Redis, a proxy 30 ms each way in front of it, two instances in
/// `eu-west` next to Redis and one in `us-east` behind the proxy.
async fn regions() -> (Redis, DelayProxy, Gateway, Gateway, Gateway) {
    let redis = Redis::start(RedisOptions::plain()).await;
    let proxy = DelayProxy::start(redis.addr(), DELAY).await;
    let near = redis.env();
    let far = vec![
        ("REDIS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("REDIS_PORT".to_owned(), proxy.port().to_string()),
    ];
    let eu1 = unlimited(instance("gw-eu-1", "eu-west", &near))
        .spawn()
        .await;
    let us = unlimited(instance("gw-us", "us-east", &far)).spawn().await;
    let eu2 = unlimited(instance("gw-eu-2", "eu-west", &near))
        .spawn()
        .await;
    assert!(
        proxy.connections() > 0,
        "the far instance bypassed the proxy"
    );
    let h = us.health().await;
    assert_eq!(h["region"], "us-east");
    assert_eq!(h["redis"], "ok");
    (redis, proxy, eu1, us, eu2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_30ms_away_serves_rooms_shared_across_regions() {
    let (redis, _proxy, eu1, us, eu2) = regions().await;
    cross_instance_basics(&[&eu1, &us, &eu2]).await;
    // The recipient is the far one: it joins first, and those who join
    // after it, near Redis, must see it at once.
    ordering_across_instances(&[&eu1, &us, &eu2], 300).await;
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_region_round_trips_cross_the_delay_and_are_counted() {
    let (redis, proxy, eu1, us, eu2) = regions().await;

    // A round trip between the regions crosses the proxy twice (into the
    // far instance's subscription, out of its publish).
    let mut x = connect(&eu1).await;
    let mut y = connect(&us).await;
    let mut z = connect(&eu2).await;
    // The far member joins last, so no member near Redis joins right
    // after it (the first test covers that).
    join_all("m", &mut [&mut x, &mut z, &mut y]).await;
    for i in 0..5 {
        let started = Instant::now();
        x.signal("m", y.peer(), json!({"ping": i})).await.unwrap();
        expect_signal(&mut y, "m", x.peer(), &json!({"ping": i})).await;
        y.signal("m", x.peer(), json!({"pong": i})).await.unwrap();
        expect_signal(&mut x, "m", y.peer(), &json!({"pong": i})).await;
        let rtt = started.elapsed();
        assert!(
            rtt >= 2 * DELAY,
            "round trip {rtt:?} is shorter than the proxy's delay"
        );
        assert!(rtt < Duration::from_secs(2), "round trip {rtt:?}");
    }

    // Cross-region traffic is counted on both sides; traffic within the
    // region is not counted as cross-region.
    let m = eu1.metrics().await;
    assert!(
        has_counter(&m, "cross_region"),
        "no cross-region counter in /metrics:\n{m}"
    );
    let before = [
        counter(&eu1.metrics().await, "cross_region"),
        counter(&us.metrics().await, "cross_region"),
        counter(&eu2.metrics().await, "cross_region"),
    ];
    const N: u64 = 20;
    for i in 0..N {
        x.signal("m", y.peer(), json!({"i": i})).await.unwrap();
        y.signal("m", x.peer(), json!({"i": i})).await.unwrap();
        x.signal("m", z.peer(), json!({"i": i})).await.unwrap();
    }
    for i in 0..N {
        expect_signal(&mut y, "m", x.peer(), &json!({"i": i})).await;
        expect_signal(&mut x, "m", y.peer(), &json!({"i": i})).await;
        expect_signal(&mut z, "m", x.peer(), &json!({"i": i})).await;
    }
    let after = [
        counter(&eu1.metrics().await, "cross_region"),
        counter(&us.metrics().await, "cross_region"),
        counter(&eu2.metrics().await, "cross_region"),
    ];
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert!(
        delta[0] >= N as f64 && delta[1] >= N as f64,
        "cross-region messages counted eu-1 {} and us {} for {N} each way",
        delta[0],
        delta[1]
    );
    assert!(
        delta[0] + delta[1] >= 2.0 * N as f64,
        "{delta:?} for {N} each way"
    );
    assert_eq!(delta[2], 0.0, "eu-2 only talked to eu-1, in its own region");
    for c in [&mut x, &mut y, &mut z] {
        assert_nothing_pending(c).await;
    }
    for mut c in [x, y, z] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
    assert!(proxy.bytes() > 0);
    assert_keys_expire(&redis, "pantheon").await;
}
