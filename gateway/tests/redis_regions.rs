//! Regions: two "regions" on loopback, `us-east` reaching Redis through a
//! proxy that holds every chunk 30 ms each way. Each instance announces
//! its public URLs in the instance directory; `GET /regions` and
//! `welcome.regions` list every live region with its endpoints and
//! instance count on every instance; a dead instance drops out after
//! `INSTANCE_TTL_MS`; signals cross the regions.

mod common;
mod scale;

use common::WAIT;
use pantheon_testkit::{DelayProxy, Gateway, Redis, RedisOptions, poll};
use scale::{INSTANCE_TTL, connect, expect_signal, instance};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const EU_WS: &str = "wss://eu.example.test/ws";
const EU_WT: &str = "https://eu.example.test:4433/wt";
const US_WS: &str = "wss://us.example.test/ws";
const US_WT: &str = "https://us.example.test/wt";

fn listing(eu_instances: u32) -> Value {
    json!([
        {"region": "eu-west", "ws_url": EU_WS, "wt_url": EU_WT, "instances": eu_instances},
        {"region": "us-east", "ws_url": US_WS, "wt_url": US_WT, "instances": 1},
    ])
}

/// Polls `gw`'s `/regions` until its `regions` equal `want`.
async fn until_listed(gw: &Gateway, want: &Value, limit: Duration) -> Value {
    let got = poll(limit, || async {
        let r = gw.http("GET", "/regions", &[]).await;
        assert_eq!(r.status, 200);
        let body = r.json();
        (body["regions"] == *want).then_some(body)
    })
    .await;
    match got {
        Some(body) => body,
        None => panic!(
            "{} lists {} instead of {want}",
            gw.name(),
            gw.http("GET", "/regions", &[]).await.body
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_are_listed_everywhere_and_signals_cross_them() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let proxy = DelayProxy::start(redis.addr(), Duration::from_millis(30)).await;
    let near = redis.env();
    let far = vec![
        ("REDIS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("REDIS_PORT".to_owned(), proxy.port().to_string()),
    ];
    let eu = |name: &str| {
        instance(name, "eu-west", &near)
            .env("PUBLIC_WS_URL", EU_WS)
            .env("PUBLIC_WT_URL", EU_WT)
    };
    let eu1 = eu("gw-eu-1").spawn().await;
    let mut eu2 = eu("gw-eu-2").spawn().await;
    let us = instance("gw-us", "us-east", &far)
        .env("PUBLIC_WS_URL", US_WS)
        .env("PUBLIC_WT_URL", US_WT)
        .spawn()
        .await;
    assert!(
        proxy.connections() > 0,
        "the far instance bypassed the proxy"
    );

    // Every instance lists both regions, with endpoints and counts.
    let heartbeat = INSTANCE_TTL / 3;
    for (gw, region) in [(&eu1, "eu-west"), (&eu2, "eu-west"), (&us, "us-east")] {
        let body = until_listed(gw, &listing(2), WAIT).await;
        assert_eq!(body["self"], region);
    }
    // CORS like the other endpoints.
    let r = eu1
        .http("GET", "/regions", &[("origin", "https://app.example.test")])
        .await;
    assert!(
        r.headers
            .iter()
            .any(|(k, _)| k == "access-control-allow-origin"),
        "{:?}",
        r.headers
    );

    // `welcome` carries the same list.
    let mut near_peer = connect(&eu1).await;
    let mut far_peer = connect(&us).await;
    for c in [&near_peer, &far_peer] {
        let regions = serde_json::to_value(c.welcome().regions.clone().unwrap()).unwrap();
        assert_eq!(regions, listing(2));
    }

    // Signals to a peer in the far region arrive, and back.
    near_peer.join("x", None).await.unwrap();
    far_peer.join("x", None).await.unwrap();
    common::expect_peer_joined(&mut near_peer, "x", far_peer.peer()).await;
    near_peer
        .signal("x", far_peer.peer(), json!({"sdp": "offer"}))
        .await
        .unwrap();
    expect_signal(
        &mut far_peer,
        "x",
        near_peer.peer(),
        &json!({"sdp": "offer"}),
    )
    .await;
    far_peer
        .signal("x", near_peer.peer(), json!({"sdp": "answer"}))
        .await
        .unwrap();
    expect_signal(
        &mut near_peer,
        "x",
        far_peer.peer(),
        &json!({"sdp": "answer"}),
    )
    .await;

    // An instance that dies drops out of the listing once its liveness key
    // expires (INSTANCE_TTL_MS), within a heartbeat of the lister.
    let killed = Instant::now();
    eu2.kill();
    let bound = INSTANCE_TTL + heartbeat * 2 + Duration::from_millis(500);
    for gw in [&us, &eu1] {
        until_listed(gw, &listing(1), bound + Duration::from_secs(2)).await;
    }
    let gone = killed.elapsed();
    assert!(
        gone >= INSTANCE_TTL.saturating_sub(heartbeat),
        "dropped before its key could expire: {gone:?}"
    );
    assert!(gone <= bound + Duration::from_secs(2), "{gone:?}");
    let later = connect(&eu1).await;
    assert_eq!(
        serde_json::to_value(later.welcome().regions.clone().unwrap()).unwrap(),
        listing(1)
    );
    let _ = far_peer.close().await;
    let _ = near_peer.close().await;
    scale::assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_instance_lists_itself_and_bad_urls_are_refused() {
    let gw = Gateway::builder(scale::pantheon())
        .name("solo")
        .env("SERVER_REGION", "ap-south")
        .env("PUBLIC_WS_URL", "wss://ap.example.test/ws")
        .spawn()
        .await;
    let body = gw.http("GET", "/regions", &[]).await.json();
    assert_eq!(
        body,
        json!({"self": "ap-south", "regions": [
            {"region": "ap-south", "ws_url": "wss://ap.example.test/ws", "instances": 1}
        ]})
    );
    // Without public URLs, welcome has no `regions`.
    let plain = Gateway::builder(scale::pantheon())
        .name("plain")
        .spawn()
        .await;
    let c = connect(&plain).await;
    assert!(c.welcome().regions.is_none());
    let c = connect(&gw).await;
    assert_eq!(c.welcome().regions.as_ref().unwrap().len(), 1);

    let bad = Gateway::builder(scale::pantheon())
        .name("bad")
        .env("PUBLIC_WS_URL", "https://not-a-websocket.example/ws")
        .env("PUBLIC_WT_URL", "not a url")
        .try_spawn()
        .await
        .expect_err("bad URLs must stop the start");
    assert_eq!(bad.code, Some(64), "{}", bad.log);
    assert!(
        bad.log.contains("PUBLIC_WS_URL") && bad.log.contains("PUBLIC_WT_URL"),
        "{}",
        bad.log
    );
}
