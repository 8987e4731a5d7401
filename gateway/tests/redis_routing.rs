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
use std::time::Duration;

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

/// A sender does not wait for Redis between cross-instance signals: it may
/// keep many in flight, and still every reply comes in request order (a
/// refusal in its place, a later non-relay request after all of them), and
/// the recipient gets every signal in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_cross_instance_signals_are_answered_in_request_order() {
    use pantheon_client::protocol::{ErrorCode, ServerMessage};
    use pantheon_client::raw::RawSocket;

    let redis = Redis::start(RedisOptions::plain()).await;
    let env = redis.env();
    let a = unlimited(instance("gw-a", "local", &env)).spawn().await;
    let b = unlimited(instance("gw-b", "local", &env)).spawn().await;
    let mut to = connect(&b).await;
    to.join("pipe", None).await.unwrap();
    let mut raw = RawSocket::connect(&a.ws_url()).await.unwrap();
    raw.send_text(r#"{"type":"hello","v":1,"id":0}"#)
        .await
        .unwrap();
    let welcome = raw.recv_message().await.unwrap();
    let ServerMessage::Welcome(_) = welcome.message else {
        panic!("expected welcome, got {welcome:?}");
    };
    raw.send_text(r#"{"type":"join","room":"pipe","id":1}"#)
        .await
        .unwrap();
    assert!(matches!(
        raw.recv_message().await.unwrap().message,
        ServerMessage::Joined { .. }
    ));
    let dest = to.peer().as_str().to_owned();
    let n: u64 = 300;
    let refused_at = 150;
    // Everything written before reading a single reply.
    for i in 2..2 + n {
        let target = if i == refused_at { "p_nobody" } else { &dest };
        raw.send_text(format!(
            r#"{{"type":"signal","room":"pipe","to":"{target}","data":{i},"id":{i}}}"#
        ))
        .await
        .unwrap();
    }
    let last = 2 + n;
    raw.send_text(format!(r#"{{"type":"peers","room":"pipe","id":{last}}}"#))
        .await
        .unwrap();
    common::within(Duration::from_secs(20), "every reply", async {
        for i in 2..=last {
            let got = raw.recv_message().await.unwrap().message;
            match got {
                ServerMessage::Ack { id } => assert_eq!(id, i, "ack out of order"),
                ServerMessage::Error { id, code, .. } => {
                    assert_eq!((id, code), (Some(i), ErrorCode::PeerNotFound));
                    assert_eq!(i, refused_at, "refusal out of place");
                }
                ServerMessage::Peers { id, .. } => {
                    assert_eq!((id, i), (Some(last), last), "peers answered early")
                }
                other => panic!("reply {i}: unexpected {other:?}"),
            }
        }
    })
    .await;
    common::within(Duration::from_secs(20), "every signal", async {
        let joined = common::next(&mut to).await;
        assert!(
            matches!(joined, ServerMessage::PeerJoined { .. }),
            "{joined:?}"
        );
        for i in (2..2 + n).filter(|&i| i != refused_at) {
            match common::next(&mut to).await {
                ServerMessage::Signal { data, .. } => {
                    assert_eq!(common::json_of(&data), json!(i), "signal out of order")
                }
                other => panic!("expected signal {i}, got {other:?}"),
            }
        }
    })
    .await;
}
