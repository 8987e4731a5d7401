//! What the cross-instance tests (`redis_*.rs`) share: gateway processes of
//! this crate's `pantheon` binary joined through real `redis-server`s (see
//! `pantheon-testkit`), clients on them, and scenarios every Redis mode
//! must pass.
//!
//! Each test binary uses only part of it.
#![allow(dead_code, unreachable_pub)]

use crate::common::{WAIT, assert_nothing_pending, expect_peer_joined, json_of, next, within};
use pantheon_client::protocol::{ErrorCode, Meta, PeerId, ServerMessage};
use pantheon_client::{Client, Event, Options};
use pantheon_testkit::{Gateway, GatewayBuilder};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// `INSTANCE_TTL_MS` in these tests: an instance is dead this long after
/// its last heartbeat.
pub const INSTANCE_TTL: Duration = Duration::from_millis(1500);
/// `RESUME_GRACE_MS` in these tests.
pub const GRACE: Duration = Duration::from_millis(2000);

/// The gateway binary under test.
pub fn pantheon() -> &'static str {
    env!("CARGO_BIN_EXE_pantheon")
}

/// A gateway named `name` (its `SERVER_ID`) in `region`, with the short
/// TTL and grace of these tests, pointed at Redis by `redis_env`. Call
/// `.spawn()` (it waits for `/ready`), after adding variables if needed.
pub fn instance(name: &str, region: &str, redis_env: &[(String, String)]) -> GatewayBuilder {
    Gateway::builder(pantheon())
        .name(name)
        .env("SERVER_REGION", region)
        .env("INSTANCE_TTL_MS", INSTANCE_TTL.as_millis().to_string())
        .env("RESUME_GRACE_MS", GRACE.as_millis().to_string())
        .env("DRAIN_TIMEOUT_MS", "20000")
        .env("RUST_LOG", "info")
        .envs(redis_env.iter().cloned())
}

/// Removes the rate limits (for the volume tests).
pub fn unlimited(b: GatewayBuilder) -> GatewayBuilder {
    b.env("RATE_LIMIT_PER_SEC", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
}

/// A welcomed client of `gw`.
pub async fn connect(gw: &Gateway) -> Client {
    connect_with(gw, Options::default()).await
}

/// A welcomed client of `gw` with options.
pub async fn connect_with(gw: &Gateway, options: Options) -> Client {
    within(
        WAIT,
        &format!("connecting to {}", gw.name()),
        Client::connect_with(&gw.ws_url(), options),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {}: {e}", gw.name()))
}

/// Options that resume the session `c` had, as it stands now.
pub fn resume(c: &Client) -> Options {
    Options {
        resume: Some(c.resume_info()),
        ..Options::default()
    }
}

/// A meta as JSON.
pub fn meta_json(meta: &Meta) -> Value {
    serde_json::from_str(meta.as_str()).expect("meta is JSON")
}

/// Expects `signal` from `from` in `room` with `data` as the next event.
pub async fn expect_signal(c: &mut Client, room: &str, from: &PeerId, data: &Value) {
    match next(c).await {
        ServerMessage::Signal {
            room: r,
            from: f,
            data: d,
        } if r.as_str() == room && &f == from && &json_of(&d) == data => {}
        other => panic!("expected signal {data} from {from} in {room}, got {other:?}"),
    }
}

/// Expects `broadcast` from `from` in `room` with `data` as the next event.
pub async fn expect_broadcast(c: &mut Client, room: &str, from: &PeerId, data: &Value) {
    match next(c).await {
        ServerMessage::Broadcast {
            room: r,
            from: f,
            data: d,
        } if r.as_str() == room && &f == from && &json_of(&d) == data => {}
        other => panic!("expected broadcast {data} from {from} in {room}, got {other:?}"),
    }
}

/// Expects `peer_updated` of `peer` in `room` with `meta`.
pub async fn expect_peer_updated(c: &mut Client, room: &str, peer: &PeerId, meta: &Value) {
    match next(c).await {
        ServerMessage::PeerUpdated {
            room: r,
            peer: p,
            meta: m,
        } if r.as_str() == room && &p == peer && &meta_json(&m) == meta => {}
        other => panic!("expected peer_updated of {peer} in {room} to {meta}, got {other:?}"),
    }
}

/// `peers` of `room` as seen by `c`: peer → meta.
pub async fn peers_of(c: &Client, room: &str) -> BTreeMap<String, Value> {
    within(WAIT, "peers", c.peers(room))
        .await
        .unwrap_or_else(|e| panic!("peers {room}: {e}"))
        .into_iter()
        .map(|p| (p.peer.to_string(), meta_json(&p.meta)))
        .collect()
}

/// The expected `peers` answer.
pub fn members(list: &[(&Client, Value)]) -> BTreeMap<String, Value> {
    list.iter()
        .map(|(c, meta)| (c.peer().to_string(), meta.clone()))
        .collect()
}

/// The server error code of a failed request.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, pantheon_client::Error>) -> ErrorCode {
    match r {
        Err(e) => e
            .server_code()
            .unwrap_or_else(|| panic!("expected a server error, got {e}")),
        Ok(v) => panic!("expected a server error, got {v:?}"),
    }
}

/// Joins `c` to `room` with `meta` and consumes the `peer_joined` every
/// member in `others` gets (they may be on any instance).
pub async fn join(c: &Client, room: &str, meta: Value, others: &mut [&mut Client]) {
    let listed = within(WAIT, "join", c.join(room, Some(meta.clone())))
        .await
        .unwrap_or_else(|e| panic!("join {room}: {e}"));
    for o in others.iter() {
        assert!(
            listed.iter().any(|p| &p.peer == o.peer()),
            "`joined` of {room} does not list {}, who joined before: {listed:?}",
            o.peer()
        );
    }
    for o in others.iter_mut() {
        let got = expect_peer_joined(o, room, c.peer()).await;
        assert_eq!(got, meta, "meta in peer_joined");
    }
}

/// The sum of the counters (`*_total`) whose name contains `needle`, e.g.
/// `cross_region`; 0 when there is none.
pub fn counter(metrics: &str, needle: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name.contains(needle) && name.ends_with("_total"))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Whether some counter's name contains `needle`.
pub fn has_counter(metrics: &str, needle: &str) -> bool {
    metrics.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.split([' ', '{'])
            .next()
            .is_some_and(|n| n.contains(needle) && n.ends_with("_total"))
    })
}

/// Reads `c`'s events for `limit` (or until it closes) and returns the
/// messages.
pub async fn drain_for(c: &mut Client, limit: Duration) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, c.next_event()).await {
        match ev {
            Event::Message { message, .. } => out.push(message),
            Event::Closed { .. } => break,
        }
    }
    out
}

/// Asserts that no key under `prefix` lives forever.
pub async fn assert_keys_expire(redis: &pantheon_testkit::Redis, prefix: &str) {
    let forever = redis.keys_without_ttl(prefix).await;
    assert!(
        forever.is_empty(),
        "keys under {prefix:?} without a TTL: {forever:?}"
    );
}

/// Everything a client can do with a peer on another instance, both ways:
/// join (with meta), `peers`, signal, broadcast, update, re-join with a new
/// meta, the errors for a peer outside the room, leave and goodbye. With a
/// third gateway, a third member there too.
pub async fn cross_instance_basics(gws: &[&Gateway]) {
    assert!(gws.len() >= 2);
    let room = "basics";
    let mut a = connect(gws[0]).await;
    let mut b = connect(gws[1]).await;
    assert_eq!(a.welcome().server, gws[0].name());
    assert_eq!(b.welcome().server, gws[1].name());
    assert_ne!(a.peer(), b.peer());

    // join, both listing the other with its meta
    assert!(
        a.join(room, Some(json!({"name": "a"})))
            .await
            .unwrap()
            .is_empty()
    );
    let listed = within(WAIT, "join", b.join(room, Some(json!({"name": "b"}))))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(&listed[0].peer, a.peer());
    assert_eq!(meta_json(&listed[0].meta), json!({"name": "a"}));
    assert_eq!(
        expect_peer_joined(&mut a, room, b.peer()).await,
        json!({"name": "b"})
    );
    assert_eq!(
        peers_of(&a, room).await,
        members(&[(&b, json!({"name": "b"}))])
    );
    assert_eq!(
        peers_of(&b, room).await,
        members(&[(&a, json!({"name": "a"}))])
    );

    // signal both ways, `null` data included
    a.signal(room, b.peer(), json!({"sdp": "offer"}))
        .await
        .unwrap();
    expect_signal(&mut b, room, a.peer(), &json!({"sdp": "offer"})).await;
    b.signal(room, a.peer(), json!({"sdp": "answer"}))
        .await
        .unwrap();
    expect_signal(&mut a, room, b.peer(), &json!({"sdp": "answer"})).await;
    a.signal(room, b.peer(), Value::Null).await.unwrap();
    expect_signal(&mut b, room, a.peer(), &Value::Null).await;

    // broadcast both ways; the sender does not get its own
    a.broadcast(room, json!("from a")).await.unwrap();
    expect_broadcast(&mut b, room, a.peer(), &json!("from a")).await;
    b.broadcast(room, json!({"from": "b"})).await.unwrap();
    expect_broadcast(&mut a, room, b.peer(), &json!({"from": "b"})).await;

    // update both ways
    a.update(room, json!({"name": "a", "muted": true}))
        .await
        .unwrap();
    expect_peer_updated(&mut b, room, a.peer(), &json!({"name": "a", "muted": true})).await;
    assert_eq!(
        peers_of(&b, room).await,
        members(&[(&a, json!({"name": "a", "muted": true}))])
    );
    // a join with another meta is an update
    let listed = b.join(room, Some(json!({"name": "b2"}))).await.unwrap();
    assert_eq!(listed.len(), 1);
    expect_peer_updated(&mut a, room, b.peer(), &json!({"name": "b2"})).await;
    assert_eq!(
        peers_of(&a, room).await,
        members(&[(&b, json!({"name": "b2"}))])
    );

    // a third member on a third instance
    if let Some(gw_c) = gws.get(2) {
        let mut c = connect(gw_c).await;
        assert_eq!(c.welcome().server, gw_c.name());
        join(&c, room, json!({"name": "c"}), &mut [&mut a, &mut b]).await;
        assert_eq!(
            peers_of(&c, room).await,
            members(&[
                (&a, json!({"name": "a", "muted": true})),
                (&b, json!({"name": "b2"}))
            ])
        );
        c.broadcast(room, json!("from c")).await.unwrap();
        expect_broadcast(&mut a, room, c.peer(), &json!("from c")).await;
        expect_broadcast(&mut b, room, c.peer(), &json!("from c")).await;
        a.signal(room, c.peer(), json!(3)).await.unwrap();
        expect_signal(&mut c, room, a.peer(), &json!(3)).await;
        b.broadcast(room, json!("from b")).await.unwrap();
        expect_broadcast(&mut a, room, b.peer(), &json!("from b")).await;
        expect_broadcast(&mut c, room, b.peer(), &json!("from b")).await;
        // goodbye ends the session at once: `left`, not after a grace
        within(WAIT, "close", c.close()).await.unwrap();
        for x in [&mut a, &mut b] {
            assert_eq!(
                crate::common::expect_peer_left(x, room, c.peer()).await,
                "left"
            );
        }
    }

    // never relayed between peers that share no room
    let d = connect(gws[1]).await;
    d.join("elsewhere", None).await.unwrap();
    assert_eq!(
        code_of(a.signal(room, d.peer(), json!("x")).await),
        ErrorCode::PeerNotFound
    );
    assert_eq!(
        code_of(a.signal("elsewhere", d.peer(), json!("x")).await),
        ErrorCode::NotInRoom
    );
    assert_eq!(
        code_of(d.signal("elsewhere", a.peer(), json!("x")).await),
        ErrorCode::PeerNotFound
    );

    // leave
    b.leave(room).await.unwrap();
    assert_eq!(
        crate::common::expect_peer_left(&mut a, room, b.peer()).await,
        "left"
    );
    assert!(peers_of(&a, room).await.is_empty());
    assert_eq!(
        code_of(a.signal(room, b.peer(), json!("gone")).await),
        ErrorCode::PeerNotFound
    );
    assert_eq!(code_of(b.peers(room).await), ErrorCode::NotInRoom);

    assert_nothing_pending(&mut a).await;
    assert_nothing_pending(&mut b).await;
    assert_eq!(a.seq_errors() + b.seq_errors(), 0);
    for mut x in [a, b, d] {
        within(WAIT, "close", x.close()).await.unwrap();
    }
}

/// Three senders (two on the first gateway, one on the last) each send
/// `n` signals to one recipient on the second, pipelined; every sender's
/// signals arrive in order, none lost or repeated.
pub async fn ordering_across_instances(gws: &[&Gateway], n: u64) {
    let room = "order";
    let mut to = connect(gws[1]).await;
    let s1 = connect(gws[0]).await;
    let s2 = connect(gws[0]).await;
    let s3 = connect(gws[gws.len() - 1]).await;
    to.join(room, None).await.unwrap();
    for s in [&s1, &s2, &s3] {
        join(s, room, json!({}), &mut [&mut to]).await;
    }
    let mut senders = Vec::new();
    for (k, s) in [&s1, &s2, &s3].into_iter().enumerate() {
        let h = s.handle();
        let dest = to.peer().clone();
        senders.push(tokio::spawn(async move {
            for i in 0..n {
                let data = json!({"k": k, "i": i});
                if i % 50 == 49 {
                    h.signal(room, &dest, data).await.expect("signal");
                } else {
                    h.signal_no_ack(room, &dest, data).await.expect("signal");
                }
            }
            h.signal(room, &dest, json!({"k": k, "done": true}))
                .await
                .expect("last signal");
        }));
    }
    let from: Vec<PeerId> = [&s1, &s2, &s3].iter().map(|s| s.peer().clone()).collect();
    let mut next_i = [0u64; 3];
    let mut done = [false; 3];
    within(Duration::from_secs(60), "every signal", async {
        while done.iter().any(|d| !d) {
            match next(&mut to).await {
                ServerMessage::Signal { from: f, data, .. } => {
                    let v = json_of(&data);
                    let k = v["k"].as_u64().unwrap() as usize;
                    assert_eq!(f, from[k], "sender of {v}");
                    if v["done"] == json!(true) {
                        assert_eq!(next_i[k], n, "sender {k} finished early");
                        done[k] = true;
                    } else {
                        assert!(!done[k]);
                        assert_eq!(v["i"], next_i[k], "sender {k}: out of order or repeated");
                        next_i[k] += 1;
                    }
                }
                other => panic!("expected a signal, got {other:?}"),
            }
        }
    })
    .await;
    for s in senders {
        s.await.unwrap();
    }
    assert_nothing_pending(&mut to).await;
    assert_eq!(to.seq_errors(), 0);
    for mut c in [to, s1, s2, s3] {
        within(WAIT, "close", c.close()).await.unwrap();
    }
}

/// Joins every client to `room` in turn (meta `{"n": index}`), each
/// earlier member consuming the `peer_joined` of each later one.
pub async fn join_all(room: &str, cs: &mut [&mut Client]) {
    for j in 0..cs.len() {
        let (before, rest) = cs.split_at_mut(j);
        let c = &rest[0];
        let meta = json!({ "n": j });
        let listed = within(WAIT, "join", c.join(room, Some(meta.clone())))
            .await
            .unwrap_or_else(|e| panic!("join {room}: {e}"));
        // `joined` lists exactly the members that joined before, wherever
        // they are.
        let listed: BTreeMap<String, Value> = listed
            .into_iter()
            .map(|p| (p.peer.to_string(), meta_json(&p.meta)))
            .collect();
        let earlier: BTreeMap<String, Value> = before
            .iter()
            .enumerate()
            .map(|(i, o)| (o.peer().to_string(), json!({ "n": i })))
            .collect();
        assert_eq!(listed, earlier, "`joined` of member {j} in {room}");
        for o in before.iter_mut() {
            assert_eq!(expect_peer_joined(o, room, c.peer()).await, meta);
        }
    }
}

/// What a client saw, sorted by kind.
#[derive(Debug, Default)]
pub struct Seen {
    /// Signal data by sender, in arrival order.
    pub signals: BTreeMap<String, Vec<Value>>,
    /// `(room, peer, reason)` of each `peer_left`, with when it came.
    pub left: Vec<(String, String, String, tokio::time::Instant)>,
    /// The `seq` of the first message.
    pub first_seq: Option<u64>,
    /// Anything else.
    pub other: Vec<ServerMessage>,
}

impl Seen {
    /// The signals from `from`.
    pub fn from(&self, from: &PeerId) -> &[Value] {
        self.signals
            .get(from.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The `peer_left`s as `(room, peer, reason)`, sorted.
    pub fn left_sorted(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .left
            .iter()
            .map(|(r, p, why, _)| (r.clone(), p.clone(), why.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Reads `c`'s events into `seen` until `done(seen)` holds; fails the test
/// after `limit` or when the connection ends.
pub async fn observe(
    c: &mut Client,
    seen: &mut Seen,
    limit: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(seen) {
        let ev = match tokio::time::timeout_at(deadline, c.next_event()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("{what}: connection ended; seen so far {seen:?}"),
            Err(_) => panic!("{what}: timed out after {limit:?}; seen so far {seen:?}"),
        };
        match ev {
            Event::Message { seq, message } => {
                if seen.first_seq.is_none() {
                    seen.first_seq = seq;
                }
                match message {
                    ServerMessage::Signal { from, data, .. } => seen
                        .signals
                        .entry(from.to_string())
                        .or_default()
                        .push(json_of(&data)),
                    ServerMessage::PeerLeft { room, peer, reason } => seen.left.push((
                        room.to_string(),
                        peer.to_string(),
                        serde_json::to_value(reason)
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        tokio::time::Instant::now(),
                    )),
                    other => seen.other.push(other),
                }
            }
            Event::Closed { .. } => panic!("{what}: closed; seen so far {seen:?}"),
        }
    }
}

/// `(room, peer, "disconnected")` for each pair, sorted.
pub fn disconnected(pairs: &[(&str, &PeerId)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(r, p)| (r.to_string(), p.to_string(), "disconnected".to_owned()))
        .collect();
    v.sort();
    v
}

/// `{"i": i}` for each `i` in `range`.
pub fn numbered(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(|i| json!({ "i": i })).collect()
}
