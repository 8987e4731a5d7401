//! Instances over a local three-master Redis Cluster
//! (`REDIS_CLUSTER_NODES`): hash-tagged keys, sharded pub/sub.

mod common;
mod scale;

use common::{WAIT, assert_nothing_pending, within};
use pantheon_testkit::RedisCluster;
use scale::{
    GRACE, INSTANCE_TTL, Seen, connect, connect_with, cross_instance_basics, disconnected,
    instance, join_all, numbered, observe, ordering_across_instances, unlimited,
};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_over_a_three_master_cluster() {
    let cluster = RedisCluster::start(3).await;
    let env = cluster.env();
    let a = unlimited(instance("gw-a", "local", &env)).spawn().await;
    let b = unlimited(instance("gw-b", "local", &env)).spawn().await;
    let c = unlimited(instance("gw-c", "local", &env)).spawn().await;
    for gw in [&a, &b, &c] {
        assert_eq!(gw.health().await["redis"], "ok");
    }
    cross_instance_basics(&[&a, &b, &c]).await;
    ordering_across_instances(&[&a, &b, &c], 300).await;

    // Keys are spread over the masters and every one of them expires.
    let mut clients = Vec::new();
    for i in 0..12 {
        let gw = [&a, &b, &c][i % 3];
        let cl = connect(gw).await;
        cl.join(format!("room-{i}").as_str(), None).await.unwrap();
        clients.push(cl);
    }
    let mut holding = 0;
    for node in cluster.nodes() {
        if !node.keys("pantheon").await.is_empty() {
            holding += 1;
        }
    }
    assert!(
        holding >= 2,
        "all keys on one of 3 masters: hash tags too coarse?"
    );
    let forever = cluster.keys_without_ttl("pantheon").await;
    assert!(forever.is_empty(), "keys without a TTL: {forever:?}");
    for mut cl in clients {
        within(WAIT, "close", cl.close()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_over_the_cluster_one_peer_left_and_a_lossless_resume() {
    let cluster = RedisCluster::start(3).await;
    let env = cluster.env();
    let a = instance("gw-a", "local", &env).spawn().await;
    let mut b = instance("gw-b", "local", &env).spawn().await;
    let mut x = connect(&a).await;
    let mut moving = connect(&b).await;
    let mut lost = connect(&b).await;
    join_all("r", &mut [&mut x, &mut moving, &mut lost]).await;
    let info = moving.resume_info();
    let (moving_id, lost_id) = (moving.peer().clone(), lost.peer().clone());
    let killed = tokio::time::Instant::now();
    b.kill();
    drop((moving, lost));
    for i in 0..10 {
        x.signal("r", &moving_id, json!({"i": i})).await.unwrap();
    }
    let mut moved = connect_with(
        &a,
        pantheon_client::Options {
            resume: Some(info.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(moved.welcome().resumed);
    assert_eq!(moved.peer(), &moving_id);
    for i in 10..15 {
        x.signal("r", &moving_id, json!({"i": i})).await.unwrap();
    }
    let limit = INSTANCE_TTL + GRACE + Duration::from_secs(5);
    let xp = x.peer().clone();
    let mut seen_x = Seen::default();
    let mut seen_moved = Seen::default();
    observe(&mut x, &mut seen_x, limit, "x", |s| !s.left.is_empty()).await;
    observe(&mut moved, &mut seen_moved, limit, "moved", |s| {
        !s.left.is_empty() && s.from(&xp).len() >= 15
    })
    .await;
    assert_eq!(seen_x.left_sorted(), disconnected(&[("r", &lost_id)]));
    assert_eq!(seen_moved.left_sorted(), disconnected(&[("r", &lost_id)]));
    assert_eq!(seen_moved.from(&xp), numbered(0..15));
    assert_eq!(seen_moved.first_seq, Some(info.last_seq + 1));
    assert!(seen_x.left[0].3 - killed >= GRACE);
    tokio::time::sleep(INSTANCE_TTL).await;
    assert_nothing_pending(&mut x).await;
    assert_nothing_pending(&mut moved).await;
    let forever = cluster.keys_without_ttl("pantheon").await;
    assert!(forever.is_empty(), "keys without a TTL: {forever:?}");
}
