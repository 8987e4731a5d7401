//! Several gateway processes over one plain `redis-server`: one signaling
//! system (DESIGN.md "Cross-instance routing").

mod common;
mod scale;

use pantheon_testkit::{Redis, RedisOptions};
use scale::{
    assert_keys_expire, connect, counter, cross_instance_basics, has_counter, instance,
    ordering_across_instances, unlimited,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_over_redis_host_and_port() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    let c = instance("gw-c", "local", &env).spawn().await;
    for gw in [&a, &b, &c] {
        let h = gw.health().await;
        assert_eq!(h["redis"], "ok", "{h}");
        assert_eq!(h["server"], gw.name());
        assert_eq!(gw.ready_status().await, 200);
    }
    cross_instance_basics(&[&a, &b, &c]).await;
    let m = a.metrics().await;
    assert!(
        has_counter(&m, "cross_instance"),
        "no cross-instance counter in /metrics:\n{m}"
    );
    assert!(
        counter(&m, "cross_instance") > 0.0,
        "cross-instance traffic not counted"
    );
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_redis_url_with_a_key_prefix() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let mut env = redis.url_env();
    env.push(("REDIS_KEY_PREFIX".into(), "tenant7".into()));
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    cross_instance_basics(&[&a, &b]).await;
    // Everything is under the prefix.
    let c1 = connect(&a).await;
    c1.join("kept", Some(json!({"k": 1}))).await.unwrap();
    let keys = redis.keys("").await;
    assert!(!keys.is_empty(), "the gateways wrote nothing to Redis");
    let outside: Vec<&String> = keys.iter().filter(|k| !k.starts_with("tenant7")).collect();
    assert!(outside.is_empty(), "keys outside the prefix: {outside:?}");
    assert_keys_expire(&redis, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signals_per_sender_stay_in_order_across_instances() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = unlimited(instance("gw-a", "local", &env)).spawn().await;
    let b = unlimited(instance("gw-b", "local", &env)).spawn().await;
    let c = unlimited(instance("gw-c", "local", &env)).spawn().await;
    ordering_across_instances(&[&a, &b, &c], 1000).await;
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_and_health_carry_the_region_and_local_counts() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = instance("gw-a", "eu-west", &env).spawn().await;
    let b = instance("gw-b", "us-east", &env).spawn().await;
    let mut x = connect(&a).await;
    let mut y = connect(&b).await;
    assert_eq!(x.welcome().region, "eu-west");
    assert_eq!(y.welcome().region, "us-east");
    x.join("shared", None).await.unwrap();
    y.join("shared", None).await.unwrap();
    common::expect_peer_joined(&mut x, "shared", y.peer()).await;
    // /health counts this instance's own peers and rooms only.
    for (gw, region) in [(&a, "eu-west"), (&b, "us-east")] {
        let h = gw.health().await;
        assert_eq!(h["region"], region, "{h}");
        assert_eq!(h["peers"], 1, "{h}");
        assert_eq!(h["rooms"], 1, "{h}");
        assert_eq!(h["redis"], "ok", "{h}");
    }
    x.close().await.unwrap();
    y.close().await.unwrap();
    assert_keys_expire(&redis, "pantheon").await;
}
