//! Redis behind Sentinel: one primary, one replica, three sentinels
//! (`down-after-milliseconds` 1000), two gateways. The primary is
//! SIGKILLed (or failed over by `SENTINEL FAILOVER`, or demoted behind the
//! clients' backs) in the middle of cross-instance signaling; the gateways
//! follow the new primary for commands and pub/sub without a restart,
//! requests fail fast with `internal` meanwhile, and everything converges.
//! The same over TLS with passwords on the nodes and on the sentinels.

mod common;
mod scale;

use common::{WAIT, within};
use pantheon_client::protocol::{ErrorCode, PeerId, ServerMessage};
use pantheon_client::{Client, Event, Options};
use pantheon_testkit::resp::Conn;
use pantheon_testkit::{
    Gateway, Pki, RedisOptions, RedisTls, SentinelTiming, Sentinels, Wait, metric_sum,
};
use scale::{connect, connect_with, instance, join_all, members, peers_of};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The bound the tests hold the gateways to: from the SIGKILL of the
/// primary until cross-instance signaling works again (docs/scale-out.md).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Sessions must outlive the failover window here.
const GRACE_MS: &str = "30000";
/// The data nodes' password in the TLS topology.
const NODE_PASSWORD: &str = "node-pw-3c9e-do-not-log";
/// The sentinels' own password in the TLS topology.
const SENTINEL_PASSWORD: &str = "sentinel-pw-81d4-do-not-log";

/// How the sentinels and nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// A password on the data nodes, plain TCP.
    Password,
    /// TLS everywhere (replication and the sentinels' links included),
    /// one password on the data nodes and another on the sentinels.
    Tls,
}

async fn start_sentinels(security: Security) -> Sentinels {
    match security {
        Security::Password => {
            Sentinels::start(
                RedisOptions::password("s3cret"),
                1,
                3,
                SentinelTiming::default(),
            )
            .await
        }
        Security::Tls => {
            Sentinels::start_with_sentinel_password(
                RedisOptions {
                    password: Some(NODE_PASSWORD.into()),
                    tls: Some(RedisTls::ServerOnly),
                    ..RedisOptions::default()
                },
                1,
                3,
                SentinelTiming::default(),
                Some(SENTINEL_PASSWORD),
            )
            .await
        }
    }
}

async fn topology(security: Security) -> (Sentinels, Gateway, Gateway) {
    let sentinels = start_sentinels(security).await;
    let env = sentinels.env();
    let gw = |name: &'static str| {
        instance(name, "local", &env)
            .env("RESUME_GRACE_MS", GRACE_MS)
            .env("INSTANCE_TTL_MS", "3000")
            .env("RATE_LIMIT_PER_SEC", "1000")
            .env("RATE_LIMIT_BURST", "1000")
    };
    let a = gw("gw-a").spawn().await;
    let b = gw("gw-b").spawn().await;
    assert_eq!(a.health().await["redis"], "ok");
    (sentinels, a, b)
}

/// Receives `to`'s signals in the background: (the `i` of each, when).
fn collect(
    mut to: Client,
) -> (
    mpsc::UnboundedReceiver<(u64, Instant)>,
    tokio::task::JoinHandle<Client>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), to.next_event()).await {
                Ok(Some(Event::Message {
                    message: ServerMessage::Signal { data, .. },
                    ..
                })) => {
                    let v = common::json_of(&data);
                    if v["stop"] == json!(true) {
                        return to;
                    }
                    let _ = tx.send((v["i"].as_u64().unwrap(), Instant::now()));
                }
                Ok(Some(Event::Message { .. })) => {}
                Ok(Some(Event::Closed { .. })) | Ok(None) => panic!("the receiver was closed"),
                Err(_) => {}
            }
        }
    });
    (rx, task)
}

/// One signal every 50 ms from `from` to `to` until `until`: for each, the
/// send time, how long the request took, and its outcome.
async fn signal_loop(
    from: &Client,
    to: &PeerId,
    first: u64,
    until: Instant,
) -> Vec<(u64, Instant, Duration, Result<(), ErrorCode>)> {
    let mut out = Vec::new();
    let mut i = first;
    while Instant::now() < until {
        let sent = Instant::now();
        let r = within(
            WAIT,
            "a signal during failover",
            from.signal("r", to, json!({"i": i})),
        )
        .await
        .map_err(|e| {
            e.server_code()
                .unwrap_or_else(|| panic!("transport error: {e}"))
        });
        out.push((i, sent, sent.elapsed(), r));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

/// What the sentinel failover tests measure.
struct Outcome {
    /// From the kill until the first signal after which every signal was
    /// acknowledged and delivered.
    recovered: Duration,
    /// From the kill until the sentinels named the new primary.
    promoted: Duration,
}

/// How the primary goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failover {
    /// SIGKILL; the sentinels promote the replica.
    Kill,
    /// `SENTINEL FAILOVER`: the replica is promoted while the old primary
    /// stays up, a writable primary with its clients' connections open
    /// until Sentinel converts it to a replica some ten seconds later
    /// (killing those connections then).
    Manual,
    /// The old primary is made a replica and nobody closes the clients'
    /// connections: they answer `READONLY`.
    Demoted,
}

/// The failover tests run one at a time: each measures a bound, and five
/// redis processes, two gateways and a signal every 50 ms apiece are
/// enough for a two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn failover_mid_signaling(how: Failover, security: Security) -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (mut sentinels, gw_a, gw_b) = topology(security).await;
    let a = connect(&gw_a).await;
    let mut b = connect(&gw_b).await;
    let mut c = connect(&gw_a).await;
    let mut mover = connect(&gw_b).await;
    join_all("r", &mut [&mut b, &mut c, &mut mover]).await;
    let listed = a.join("r", Some(json!({"n": 3}))).await.unwrap();
    assert_eq!(listed.len(), 3);
    for x in [&mut b, &mut c, &mut mover] {
        common::expect_peer_joined(x, "r", a.peer()).await;
    }
    let (b_id, mover_id) = (b.peer().clone(), mover.peer().clone());
    let (mut received, b_task) = collect(b);

    // Signaling works, then the primary goes away in the middle of it.
    let before = signal_loop(&a, &b_id, 0, Instant::now() + Duration::from_millis(500)).await;
    assert!(before.iter().all(|s| s.3.is_ok()), "{:?}", before);
    let old = sentinels.primary_port().await.unwrap();
    let t0 = Instant::now();
    match how {
        Failover::Kill => {
            sentinels.kill_primary().await;
        }
        Failover::Manual => sentinels.manual_failover().await,
        Failover::Demoted => {
            sentinels.demote_behind_clients_backs().await;
        }
    }
    // `mover` loses its connection during the failover window.
    mover.abort().await;
    let mover_resume = mover.resume_info();

    let watch_ready = {
        let addrs = [gw_a.addr(), gw_b.addr()];
        tokio::spawn(async move {
            let end = Instant::now() + RECOVERY_BOUND;
            while Instant::now() < end {
                for addr in addrs {
                    if ready_status(addr).await == Some(503) {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        })
    };
    // When Sentinel converts the surviving old primary to a replica.
    let converted = (how == Failover::Manual).then(|| {
        let addr = sentinels.nodes()[0].addr();
        tokio::spawn(async move {
            loop {
                if let Ok(mut c) = Conn::connect(addr).await {
                    let _ = c.cmd(&["AUTH", "s3cret"]).await;
                    if let Ok(role) = c.cmd(&["ROLE"]).await
                        && role.items().first().and_then(|r| r.text()).as_deref() == Some("slave")
                    {
                        return t0.elapsed();
                    }
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "Sentinel never converted the old primary to a replica"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let first = before.len() as u64;
    let sending = signal_loop(
        &a,
        &b_id,
        first,
        t0 + RECOVERY_BOUND + Duration::from_secs(2),
    );
    let promoting = async {
        sentinels.wait_promoted(old, RECOVERY_BOUND).await;
        t0.elapsed()
    };
    let (mut during, promoted_at) = tokio::join!(sending, promoting);
    if let Some(converted) = converted {
        // The moment the old primary stops being one (and Sentinel kills
        // every connection to it) must lie inside the signaling: it is
        // what used to fail requests long after the failover.
        let at = converted.await.unwrap();
        println!(
            "old primary converted to a replica {} ms after the failover",
            at.as_millis()
        );
        let next = first + during.len() as u64;
        let until = (t0 + at + Duration::from_millis(1500)).max(Instant::now());
        during.extend(signal_loop(&a, &b_id, next, until).await);
    }
    let saw_503 = watch_ready.await.unwrap();

    // Every failure was `internal`, and fast.
    for (i, _, took, r) in &during {
        if let Err(code) = r {
            assert_eq!(*code, ErrorCode::Internal, "signal {i}");
        }
        assert!(
            *took < Duration::from_millis(2500),
            "signal {i} took {took:?}"
        );
    }
    // Give deliveries in flight a moment, then match them to the sends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: BTreeMap<u64, usize> = BTreeMap::new();
    let mut order = Vec::new();
    while let Ok((i, _)) = received.try_recv() {
        *got.entry(i).or_default() += 1;
        order.push(i);
    }
    assert!(
        got.values().all(|n| *n == 1),
        "a signal was delivered twice: {got:?}"
    );
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}"
    );
    for (i, ..) in &before {
        assert!(
            got.contains_key(i),
            "signal {i} before the failover was lost"
        );
    }
    // Recovery: the first signal from which on every one was acknowledged
    // and delivered.
    let back = during
        .iter()
        .rposition(|(i, _, _, r)| r.is_err() || !got.contains_key(i))
        .map_or(0, |p| p + 1);
    assert!(
        back < during.len(),
        "signaling never came back within {RECOVERY_BOUND:?}: {:?}\n{}",
        during.iter().map(|s| (s.0, s.3)).collect::<Vec<_>>(),
        sentinels.logs()
    );
    let recovered = during[back].1 - t0;
    assert!(
        recovered <= RECOVERY_BOUND,
        "signaling came back after {recovered:?}: {:?}",
        during
            .iter()
            .filter(|(i, _, _, r)| r.is_err() || !got.contains_key(i))
            .map(|(i, at, took, r)| (i, *at - t0, took, r))
            .collect::<Vec<_>>()
    );
    // An acknowledged signal sent after the recovery is never lost (those
    // in the window may be, with an `internal` or a lost connection).
    for (i, _, _, r) in &during[back..] {
        assert!(r.is_ok() && got.contains_key(i));
    }
    if how == Failover::Kill {
        assert!(saw_503, "/ready never turned 503 during the failover");
    }

    // Afterwards: /ready 200, the failover counted and logged by both.
    for gw in [&gw_a, &gw_b] {
        let ok = pantheon_testkit::poll(Duration::from_secs(5), || async {
            (gw.ready_status().await == 200).then_some(())
        })
        .await;
        assert!(ok.is_some(), "{} not ready after the failover", gw.name());
        let failovers = pantheon_testkit::poll(Duration::from_secs(10), || async {
            let m = gw.metrics().await;
            metric_sum(&m, "pantheon_redis_failovers_total", &[]).filter(|n| *n >= 1.0)
        })
        .await;
        assert!(
            failovers.is_some(),
            "{} did not count the failover:\n{}",
            gw.name(),
            gw.metrics().await
        );
        assert!(gw.log().contains("redis failover"), "{}", gw.log());
        if how != Failover::Demoted {
            // Heard from the sentinels themselves (over TLS, with their
            // password, in the secure topology).
            assert!(
                gw.log().contains("a sentinel announced a failover"),
                "{}",
                gw.log()
            );
        }
        for secret in [NODE_PASSWORD, SENTINEL_PASSWORD] {
            assert!(
                !gw.log().contains(secret),
                "{} logged a password",
                gw.name()
            );
        }
        if how == Failover::Demoted {
            // Noticed by a write that reached the demoted primary.
            let both = gw_a.log() + &gw_b.log();
            assert!(both.contains("READONLY"), "{both}");
        }
    }

    // The session that dropped during the window resumes on the other
    // instance and gets every directed message sent after the failover.
    for k in 0..5 {
        a.signal("r", &mover_id, json!({"after": k})).await.unwrap();
    }
    let mut mover = connect_with(
        &gw_a,
        Options {
            resume: Some(mover_resume),
            ..Options::default()
        },
    )
    .await;
    assert!(
        mover.welcome().resumed,
        "the resume across instances failed"
    );
    assert_eq!(mover.peer(), &mover_id);
    let mut after = Vec::new();
    while after.len() < 5 {
        match common::next(&mut mover).await {
            ServerMessage::Signal { data, from, .. } => {
                let v = common::json_of(&data);
                if v.get("after").is_some() {
                    assert_eq!(&from, a.peer());
                    after.push(v["after"].as_u64().unwrap());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(after, vec![0, 1, 2, 3, 4]);
    assert_eq!(mover.seq_errors(), 0);

    // Room membership is exact on both instances once it has converged
    // (the replica may have missed the last writes; re-assertion heals).
    a.signal("r", &b_id, json!({"stop": true})).await.unwrap();
    let b = b_task.await.unwrap();
    let expect_a = members(&[
        (&b, json!({"n": 0})),
        (&c, json!({"n": 1})),
        (&mover, json!({"n": 2})),
    ]);
    let converged = pantheon_testkit::poll(Duration::from_secs(10), || async {
        (peers_of(&a, "r").await == expect_a).then_some(())
    })
    .await;
    assert!(converged.is_some(), "{:?}", peers_of(&a, "r").await);
    assert_eq!(
        peers_of(&b, "r").await,
        members(&[
            (&a, json!({"n": 3})),
            (&c, json!({"n": 1})),
            (&mover, json!({"n": 2}))
        ])
    );
    // A join after the failover is seen across instances.
    let late = connect(&gw_b).await;
    let listed = within(WAIT, "join", late.join("r", None)).await.unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    loop {
        match common::next(&mut c).await {
            ServerMessage::PeerJoined { peer, .. } if &peer == late.peer() => break,
            ServerMessage::PeerLeft { peer, .. } => panic!("{peer} left during the failover"),
            _ => {}
        }
    }
    drop(sentinels);
    Outcome {
        recovered,
        promoted: promoted_at,
    }
}

async fn ready_status(addr: std::net::SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_primary_mid_signaling_recovers_within_the_bound() {
    let o = failover_mid_signaling(Failover::Kill, Security::Password).await;
    // Measured figures (docs/scale-out.md): run with --nocapture.
    println!(
        "sentinel failover (SIGKILL): signaling back after {} ms; promotion noticed after {} ms",
        o.recovered.as_millis(),
        o.promoted.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_left_open_to_a_demoted_primary_are_moved() {
    let o = failover_mid_signaling(Failover::Demoted, Security::Password).await;
    println!(
        "stale connections to a demoted primary: signaling back after {} ms",
        o.recovered.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_is_followed_at_once() {
    let o = failover_mid_signaling(Failover::Manual, Security::Password).await;
    println!(
        "sentinel failover (SENTINEL FAILOVER): signaling back after {} ms; promotion noticed after {} ms",
        o.recovered.as_millis(),
        o.promoted.as_millis()
    );
}

/// TLS to the data nodes and to the sentinels (verified with
/// `REDIS_CA_CERT`), replication and the sentinels' own links over TLS, a
/// password on the nodes and another on the sentinels: the SIGKILL test
/// holds as in the clear, and neither password is ever shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_passwords_a_sigkill_of_the_primary_is_followed() {
    let o = failover_mid_signaling(Failover::Kill, Security::Tls).await;
    println!(
        "sentinel failover over TLS (SIGKILL): signaling back after {} ms; promotion noticed after {} ms",
        o.recovered.as_millis(),
        o.promoted.as_millis()
    );
}

/// A gateway whose `REDIS_CA_CERT` did not sign the sentinels' certificate
/// refuses to start (64); one with the wrong sentinel password starts but
/// is never ready, and shows the password nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_wrong_ca_stops_the_gateway_and_a_wrong_sentinel_password_is_never_ready() {
    let sentinels = start_sentinels(Security::Tls).await;
    let with = |key: &str, value: &str| {
        let mut env = sentinels.env();
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
        env
    };
    let stranger = Pki::generate();
    let refused = Gateway::builder(scale::pantheon())
        .name("wrong-ca")
        .envs(with(
            "REDIS_CA_CERT",
            &stranger.ca_cert().display().to_string(),
        ))
        .wait(Wait::Listening)
        .try_spawn()
        .await;
    let (code, log) = match refused {
        Err(exited) => (exited.code, exited.log),
        Ok(mut gw) => match gw.wait_exit(Duration::from_secs(10)).await {
            Some(status) => (status.code(), gw.log()),
            None => panic!(
                "still running with a CA that did not sign the sentinels:\n{}",
                gw.log()
            ),
        },
    };
    assert_eq!(code, Some(64), "{log}");
    assert!(log.contains("REDIS_CA_CERT"), "{log}");
    assert!(!log.contains(NODE_PASSWORD) && !log.contains(SENTINEL_PASSWORD));

    let wrong = "wrong-sentinel-pw-do-not-log";
    let gw = instance("wrong-pw", "local", &with("REDIS_SENTINEL_PASSWORD", wrong))
        .wait(Wait::Listening)
        .spawn()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gw.ready_status().await,
        503,
        "ready with a wrong sentinel password"
    );
    assert_eq!(gw.health().await["redis"], "down");
    for secret in [wrong, NODE_PASSWORD] {
        assert!(!gw.log().contains(secret), "{}", gw.log());
        for path in ["/health", "/metrics"] {
            assert!(!gw.http_get(path).await.1.contains(secret));
        }
    }
}
