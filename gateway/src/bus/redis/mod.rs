//! The Redis bus: many instances, one system.
//!
//! Keys (prefix `P`, hash tags keep a session's keys in one cluster slot):
//! - `P:srv:{S}` — instance liveness, expires after `INSTANCE_TTL_MS`,
//!   refreshed by a heartbeat three times per TTL.
//! - `P:peer:{X}` — session directory: `server`, `region`, `secret`,
//!   `inboxed`; `P:prooms:{X}` — its rooms; `P:inbox:{X}` — a stream of
//!   directed messages that arrived while no instance served it.
//! - `P:room:{R}` — members: peer → `server \n region \n meta`.
//! - `P:srvpeers:{S}` — the sessions an instance serves (for clean-up).
//! - `P:instances` — the instance directory: `S` → JSON `{server, region,
//!   ws_url, wt_url}`, written by each instance's heartbeat; an entry
//!   whose `P:srv:{S}` has expired is dead and is removed by whoever sees
//!   it first.
//!
//! Channels: `P:ch:srv:{S}` (directed messages, takeovers) and
//! `P:ch:room:{R}` (membership and broadcasts). Every key of a live session
//! is refreshed by its instance's heartbeat; everything else expires.
//!
//! Writes go through one ordered outbox task that pipelines whatever is
//! queued into one round trip, so one sender's messages stay in order and
//! throughput does not depend on round-trip time. Subscriptions live on one
//! dedicated pub/sub connection, restored after every reconnect.

mod conn;
mod heartbeat;
mod outbox;
mod pubsub;
mod routing;
mod sentinel;

use super::wire::{self, Wire};
use super::{
    BoxFuture, Bus, Change, Claim, Event, Eviction, Handover, Health, Instance, Remote,
    RemoteMember, RouteError,
};
use crate::metrics::Metrics;
use bytes::Bytes;
use deadpool_redis::redis;
use futures_util::StreamExt;
use pantheon_protocol::{LeaveReason, Meta, PeerId, RoomName};
use rand::Rng;
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use conn::{Commands, Conn, exec};
use heartbeat::heartbeat;
use outbox::{Op, outbox};
use pubsub::{
    ClusterSource, PubSubFrom, Source, SubCmd, cluster_subscriber, reassert, snapshot, subscriber,
};
use sentinel::Primary;

/// How long a pipeline may take before its requests fail with `internal`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a cross-instance request waits for Redis, queueing included.
const REQUEST_DEADLINE: Duration = Duration::from_millis(1200);
/// A relayed message reaching its recipient later than this after it was
/// sent is dropped: shorter than `REQUEST_DEADLINE`, so a sender told
/// `internal` can retry without a duplicate.
const DELIVERY_DEADLINE_MS: u64 = 1000;
/// Most operations pipelined in one round trip.
const BATCH: usize = 512;
/// Outbox capacity; beyond it sends fail fast instead of queueing forever.
const OUTBOX: usize = 65_536;
/// How long a resume waits for the old instance to hand a session over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is and how this instance appears in it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection parameters (TLS and credentials included).
    pub connection: redis::ConnectionInfo,
    /// Redis Cluster seed nodes (`host:port`); when set, `connection`
    /// supplies only credentials and TLS.
    pub cluster_nodes: Option<Vec<String>>,
    /// Sentinel mode; `connection` then supplies only credentials and TLS.
    pub sentinel: Option<Sentinel>,
    /// Root certificate and client identity for TLS.
    pub tls: Option<redis::TlsCertificates>,
    /// Key prefix.
    pub prefix: String,
    /// Pooled command connections.
    pub pool_size: usize,
    /// This instance.
    pub server: Arc<str>,
    /// Its region.
    pub region: Arc<str>,
    /// Its public WebSocket URL, for the directory.
    pub ws_url: Option<String>,
    /// Its public WebTransport URL, for the directory.
    pub wt_url: Option<String>,
    /// Liveness key TTL.
    pub instance_ttl: Duration,
    /// Resume grace window.
    pub resume_grace: Duration,
    /// Messages kept per session.
    pub resume_buffer: usize,
}

/// Where the sentinels are and what they call the primary.
#[derive(Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// The sentinels (`host:port`).
    pub nodes: Vec<String>,
    /// The name they monitor the primary under.
    pub master: String,
    /// The sentinels' own password.
    pub password: Option<String>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("nodes", &self.nodes)
            .field("master", &self.master)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The client could not be built (bad URL or TLS material).
    #[error("redis client: {0}")]
    Client(#[from] redis::RedisError),
    /// The pool could not be built.
    #[error("redis pool: {0}")]
    Pool(String),
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn srv(&self, s: &str) -> String {
        format!("{}:srv:{{{s}}}", self.prefix)
    }
    fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }
    fn srvpeers(&self, s: &str) -> String {
        format!("{}:srvpeers:{{{s}}}", self.prefix)
    }
    fn cleanup(&self, s: &str) -> String {
        format!("{}:cleanup:{{{s}}}", self.prefix)
    }
    fn peer(&self, p: &str) -> String {
        format!("{}:peer:{{{p}}}", self.prefix)
    }
    fn prooms(&self, p: &str) -> String {
        format!("{}:prooms:{{{p}}}", self.prefix)
    }
    fn inbox(&self, p: &str) -> String {
        format!("{}:inbox:{{{p}}}", self.prefix)
    }
    fn room(&self, r: &str) -> String {
        format!("{}:room:{{{r}}}", self.prefix)
    }
    fn ch_srv(&self, s: &str) -> String {
        format!("{}:ch:srv:{{{s}}}", self.prefix)
    }
    fn ch_room(&self, r: &str) -> String {
        format!("{}:ch:room:{{{r}}}", self.prefix)
    }
}

/// Deliver to a session's inbox if it is still registered to the instance
/// that seemed gone; otherwise answer where it is now. With ARGV[5] (a
/// channel; not on a cluster, whose sharded channels a script cannot reach
/// from these keys) the message is first published there once more, in the
/// same atomic step: an instance that was only re-subscribing gets it live,
/// and one that subscribes later finds it in the inbox, which it drains
/// right after subscribing ([`TAKE_INBOX`]). Nothing falls between the two.
const DELIVER_OR_INBOX: &str = r"
local s = redis.call('HGET', KEYS[1], 'server')
if not s then return false end
if s == ARGV[1] then
  if ARGV[5] ~= '' then
    -- A write first (changing nothing): a primary demoted to a replica
    -- refuses it before anything is published, so a refused script has had
    -- no effect and may run again on the new primary.
    redis.call('HINCRBY', KEYS[1], 'inboxed', 0)
    if redis.call('PUBLISH', ARGV[5], ARGV[6]) > 0 then
      return 'delivered'
    end
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'b', ARGV[2], 'i', ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'inboxed', 1)
  return 'inbox'
end
return s
";

/// Take the inbox of a session this instance (ARGV[1]) serves: what was
/// kept for it while this instance had no subscription (a reconnect, a
/// failover). Answers `{inboxed, entries}`, or nothing when it is empty or
/// the session is not registered here.
const TAKE_INBOX: &str = r"
if redis.call('HGET', KEYS[1], 'server') ~= ARGV[1] then return false end
local total = tonumber(redis.call('HGET', KEYS[1], 'inboxed') or '0')
if total == 0 then return false end
redis.call('HSET', KEYS[1], 'inboxed', 0)
local msgs = redis.call('XRANGE', KEYS[2], '-', '+')
redis.call('DEL', KEYS[2])
return {total, msgs}
";

/// Move a session whose instance is gone to this one and take its inbox.
const CLAIM_ORPHAN: &str = r"
local s = redis.call('HGET', KEYS[1], 'server')
if s ~= ARGV[1] then return false end
local total = tonumber(redis.call('HGET', KEYS[1], 'inboxed') or '0')
redis.call('HSET', KEYS[1], 'server', ARGV[2], 'region', ARGV[3], 'inboxed', 0)
local msgs = redis.call('XRANGE', KEYS[2], '-', '+')
redis.call('DEL', KEYS[2])
return {total, msgs}
";

#[derive(Debug, Default)]
struct Local {
    /// Sessions served here: secret and rooms with meta.
    peers: HashMap<PeerId, (String, HashMap<RoomName, Meta>)>,
    /// Rooms whose channel is subscribed.
    watched: HashSet<RoomName>,
    /// Other instances seen in room membership, checked for liveness.
    servers: HashSet<Arc<str>>,
}

struct Inner {
    s: Settings,
    keys: Keys,
    commands: Commands,
    /// `PUBLISH`, or `SPUBLISH` (sharded pub/sub) on a Redis Cluster.
    publish: &'static str,
    outbox: mpsc::Sender<Op>,
    subs: mpsc::UnboundedSender<SubCmd>,
    events: mpsc::UnboundedSender<Event>,
    /// The pub/sub connection is up with every subscription restored.
    healthy: AtomicBool,
    /// The last pipelined batch of commands succeeded.
    commands_ok: AtomicBool,
    local: Mutex<Local>,
    claims: Mutex<HashMap<PeerId, oneshot::Sender<Wire>>>,
    /// Ids of the directed messages that came over our subscription
    /// lately: a message also kept in an inbox (see [`drain_inboxes`]) is
    /// not delivered twice.
    delivered: Mutex<RecentIds>,
    /// Evictions asked for ([`Bus::evict`]), waiting for their answer.
    evictions: Mutex<HashMap<PeerId, oneshot::Sender<bool>>>,
    metrics: Arc<Metrics>,
    deliver_or_inbox: Script,
    claim_orphan: Script,
    take_inbox: Script,
    /// The live instances as the directory last listed them.
    directory: Mutex<Option<Vec<Instance>>>,
    /// Death of other instances is not judged until then (after a
    /// reconnect, everyone needs a heartbeat to re-assert).
    judge_after: Mutex<Instant>,
}

/// The Redis bus.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connection info holds the password: never print it.
        f.debug_struct("Redis")
            .field("server", &self.inner.s.server)
            .field("prefix", &self.inner.s.prefix)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> RouteError {
    RouteError::Unavailable(e.to_string())
}

impl Redis {
    /// Builds the bus and starts its tasks; events for the hub arrive on the
    /// returned receiver. Nothing here waits for Redis: an unreachable Redis
    /// shows as `Health::Down` until it answers.
    pub fn start(
        s: Settings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), SetupError> {
        let (commands, publish, source) = match (&s.cluster_nodes, &s.sentinel) {
            (None, Some(sentinel)) => {
                let primary = Arc::new(Primary::new(&s, sentinel, metrics.clone())?);
                tokio::spawn(primary.clone().watch(stop.clone()));
                (
                    Commands::Sentinel(primary.clone()),
                    "PUBLISH",
                    Source::Single(PubSubFrom::Sentinel(primary)),
                )
            }
            (None, None) => {
                let client = match &s.tls {
                    Some(certs) => {
                        redis::Client::build_with_tls(s.connection.clone(), certs.clone())?
                    }
                    None => redis::Client::open(s.connection.clone())?,
                };
                let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .max_size(s.pool_size)
                    .wait_timeout(Some(COMMAND_TIMEOUT))
                    .create_timeout(Some(COMMAND_TIMEOUT))
                    .recycle_timeout(Some(COMMAND_TIMEOUT))
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .map_err(|e| SetupError::Pool(e.to_string()))?;
                metrics.redis_pool_max(s.pool_size);
                (
                    Commands::Single(pool),
                    "PUBLISH",
                    Source::Single(PubSubFrom::Client(Box::new(client))),
                )
            }
            (Some(nodes), _) => {
                let (push_tx, push_rx) = mpsc::unbounded_channel();
                let tls = matches!(s.connection.addr(), redis::ConnectionAddr::TcpTls { .. });
                let scheme = if tls { "rediss" } else { "redis" };
                let urls: Vec<String> = nodes.iter().map(|n| format!("{scheme}://{n}")).collect();
                let settings = s.connection.redis_settings();
                let mut b = redis::cluster::ClusterClientBuilder::new(urls)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(push_tx)
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT);
                if let Some(user) = settings.username() {
                    b = b.username(user);
                }
                if let Some(pass) = settings.password() {
                    b = b.password(pass);
                }
                if tls {
                    b = b.tls(redis::TlsMode::Secure);
                    if let Some(certs) = &s.tls {
                        b = b.certs(certs.clone());
                    }
                }
                let client = b.build()?;
                let conn = Arc::new(OnceLock::new());
                (
                    Commands::Cluster(conn.clone()),
                    "SPUBLISH",
                    Source::Cluster(Box::new(ClusterSource {
                        client,
                        conn,
                        pushes: push_rx,
                    })),
                )
            }
        };
        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX);
        let (subs_tx, subs_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let keys = Keys {
            prefix: s.prefix.clone(),
        };
        let inner = Arc::new(Inner {
            keys,
            commands,
            publish,
            outbox: outbox_tx,
            subs: subs_tx,
            events: events_tx,
            healthy: AtomicBool::new(false),
            commands_ok: AtomicBool::new(false),
            local: Mutex::default(),
            claims: Mutex::default(),
            evictions: Mutex::default(),
            delivered: Mutex::default(),
            metrics,
            deliver_or_inbox: Script::new(DELIVER_OR_INBOX),
            claim_orphan: Script::new(CLAIM_ORPHAN),
            take_inbox: Script::new(TAKE_INBOX),
            directory: Mutex::default(),
            judge_after: Mutex::new(Instant::now() + s.instance_ttl * 2),
            s,
        });
        tokio::spawn(outbox(inner.clone(), outbox_rx, stop.clone()));
        match source {
            Source::Single(from) => {
                tokio::spawn(subscriber(inner.clone(), from, subs_rx, stop.clone()));
            }
            Source::Cluster(c) => {
                let ClusterSource {
                    client,
                    conn,
                    pushes,
                } = *c;
                tokio::spawn(cluster_subscriber(
                    inner.clone(),
                    client,
                    conn,
                    pushes,
                    subs_rx,
                    stop.clone(),
                ));
            }
        }
        tokio::spawn(heartbeat(inner.clone(), stop));
        Ok((Self { inner }, events_rx))
    }
}

impl Inner {
    /// A batch of commands failed: in Sentinel mode, look the primary up
    /// again before the next one (it may have moved).
    fn commands_failed(&self) {
        if let Commands::Sentinel(p) = &self.commands {
            p.forget();
        }
    }

    /// Changes whenever the sentinels name a new primary (`None`
    /// without Sentinel).
    fn epochs(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match &self.commands {
            Commands::Sentinel(p) => Some(p.epochs()),
            _ => None,
        }
    }

    fn queue(&self, op: Op) -> Result<(), RouteError> {
        self.outbox
            .try_send(op)
            .map_err(|_| RouteError::Unavailable("redis outbox full".into()))
    }

    fn member_value(&self, meta: &Meta) -> String {
        format!("{}\n{}\n{}", self.s.server, self.s.region, meta.as_str())
    }

    fn long_ttl_ms(&self) -> u64 {
        (self.s.instance_ttl * 2 + self.s.resume_grace).as_millis() as u64
    }

    /// Commands that (re-)assert one local session and its rooms.
    /// Publishes `ask` on `owner`'s instance channel and waits up to
    /// [`HANDOVER_TIMEOUT`] for its answer, which the subscriber hands to
    /// `waiting` under `peer`.
    async fn ask_owner<T>(
        &self,
        conn: &mut Conn,
        owner: &str,
        ask: Wire,
        peer: &PeerId,
        waiting: &Mutex<HashMap<PeerId, oneshot::Sender<T>>>,
    ) -> Asked<T> {
        let (tx, rx) = oneshot::channel();
        lock(waiting).insert(peer.clone(), tx);
        let listeners: redis::RedisResult<i64> = redis::cmd(self.publish)
            .arg(self.keys.ch_srv(owner))
            .arg(ask.encode().as_ref())
            .query_async(conn)
            .await;
        let asked = match listeners {
            Ok(0) => Asked::Gone,
            Ok(_) => match tokio::time::timeout(HANDOVER_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Asked::Answer(answer),
                _ => Asked::NoAnswer,
            },
            Err(_) => Asked::Failed,
        };
        lock(waiting).remove(peer);
        asked
    }

    /// Adds to `pipe` what ends session `peer` for good in Redis, as this
    /// instance: its membership of `rooms`, each announced `peer_left` with
    /// `reason` on the room's channel (every other instance's hub hears it;
    /// ours does not), and its keys.
    fn forget_peer(
        &self,
        pipe: &mut redis::Pipeline,
        peer: &PeerId,
        rooms: &[RoomName],
        reason: LeaveReason,
    ) {
        let k = &self.keys;
        for room in rooms {
            pipe.cmd("HDEL")
                .arg(k.room(room.as_str()))
                .arg(peer.as_str())
                .ignore();
            let wire = Wire::Left {
                origin: self.s.server.clone(),
                region: self.s.region.clone(),
                room: room.clone(),
                peer: peer.clone(),
                reason,
            };
            pipe.cmd(self.publish)
                .arg(k.ch_room(room.as_str()))
                .arg(wire.encode().as_ref())
                .ignore();
        }
        pipe.cmd("DEL")
            .arg(k.peer(peer.as_str()))
            .arg(k.prooms(peer.as_str()))
            .arg(k.inbox(peer.as_str()))
            .ignore();
    }

    fn assert_peer(
        &self,
        pipe: &mut redis::Pipeline,
        peer: &PeerId,
        secret: &str,
        rooms: &HashMap<RoomName, Meta>,
    ) {
        let k = &self.keys;
        let ttl = self.long_ttl_ms();
        let pk = k.peer(peer.as_str());
        pipe.cmd("HSET")
            .arg(&pk)
            .arg("server")
            .arg(&*self.s.server)
            .arg("region")
            .arg(&*self.s.region)
            .arg("secret")
            .arg(secret)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&pk).arg(ttl).ignore();
        pipe.cmd("SADD")
            .arg(k.srvpeers(&self.s.server))
            .arg(peer.as_str())
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(k.srvpeers(&self.s.server))
            .arg(ttl)
            .ignore();
        let rk = k.prooms(peer.as_str());
        for (room, meta) in rooms {
            pipe.cmd("SADD").arg(&rk).arg(room.as_str()).ignore();
            let roomk = k.room(room.as_str());
            pipe.cmd("HSET")
                .arg(&roomk)
                .arg(peer.as_str())
                .arg(self.member_value(meta))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&roomk).arg(ttl).ignore();
        }
        if !rooms.is_empty() {
            pipe.cmd("PEXPIRE").arg(&rk).arg(ttl).ignore();
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn on_message(&self, payload: Bytes) {
        let (stamp, payload) = wire::split_stamp(payload);
        let now_us = wire::now_us();
        if stamp.is_some_and(|s| now_us / 1000 > s.expires_ms) {
            // Its sender was already answered `internal`: delivering it now
            // would make a retry a duplicate.
            self.metrics.redis_errors.inc();
            tracing::debug!("dropping a cross-instance message past its deadline");
            return;
        }
        let wire = match Wire::decode(payload) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed bus message");
                return;
            }
        };
        let own = |origin: &Arc<str>| **origin == *self.s.server;
        match wire {
            Wire::Member {
                origin,
                region,
                room,
                peer,
                meta,
            } if !own(&origin) => {
                lock(&self.local).servers.insert(origin.clone());
                self.emit(Event::Member {
                    room,
                    member: RemoteMember {
                        peer,
                        meta,
                        at: Remote {
                            server: origin,
                            region,
                        },
                    },
                });
            }
            Wire::Left {
                origin,
                room,
                peer,
                reason,
                ..
            } if !own(&origin) => {
                self.emit(Event::Left { room, peer, reason });
            }
            Wire::Broadcast {
                origin,
                region,
                room,
                from,
                body,
            } if !own(&origin) => {
                self.count_in(&region, stamp, now_us);
                self.emit(Event::Broadcast {
                    room,
                    from,
                    body,
                    region,
                });
            }
            Wire::Deliver {
                region,
                room,
                to,
                body,
                id,
                ..
            } => {
                // A publish reaches the subscribers of replicas too: an
                // instance still subscribed to a just-demoted primary gets
                // the first publish and the inbox script's second one.
                if id != 0 && !lock(&self.delivered).record(id) {
                    return;
                }
                self.count_in(&region, stamp, now_us);
                self.emit(Event::Deliver {
                    room,
                    to,
                    body,
                    region,
                });
            }
            Wire::Takeover {
                origin,
                peer,
                last_seq,
                ..
            } => {
                self.emit(Event::Takeover {
                    peer,
                    last_seq,
                    requester: origin,
                });
            }
            Wire::Evict { origin, peer, .. } => {
                self.emit(Event::Evict {
                    peer,
                    requester: origin,
                });
            }
            Wire::Evicted { peer, ok, .. } => {
                if let Some(tx) = lock(&self.evictions).remove(&peer) {
                    let _ = tx.send(ok);
                }
            }
            h @ Wire::Handover { .. } => {
                let Wire::Handover { peer, .. } = &h else {
                    unreachable!()
                };
                if let Some(tx) = lock(&self.claims).remove(peer) {
                    let _ = tx.send(h);
                }
            }
            _ => {}
        }
    }

    /// Counts a signal or broadcast from another instance, and how long it
    /// took from its publication (`stamp`) to `now_us`.
    fn count_in(&self, region: &str, stamp: Option<wire::Stamp>, now_us: u64) {
        let cross_region = region != &*self.s.region;
        self.metrics.cross_instance.inc();
        if cross_region {
            self.metrics.cross_region.inc();
        }
        if let Some(sent_us) = stamp.and_then(|s| s.sent_us) {
            // Wall clocks of two hosts may disagree: a message "from the
            // future" counts as instant rather than being dropped.
            let seconds = now_us.saturating_sub(sent_us) as f64 / 1e6;
            self.metrics.cross_instance_latency(cross_region, seconds);
        }
    }

    async fn conn(&self) -> Result<Conn, RouteError> {
        match &self.commands {
            Commands::Single(pool) => pool.get().await.map(Conn::Single).map_err(unavailable),
            Commands::Sentinel(p) => p.conn().await.map(Conn::Sentinel).map_err(unavailable),
            Commands::Cluster(c) => {
                c.get().cloned().map(Conn::Cluster).ok_or_else(|| {
                    RouteError::Unavailable("redis cluster not connected yet".into())
                })
            }
        }
    }
}

/// Reads a `{inboxed, entries}` answer of [`CLAIM_ORPHAN`] or
/// [`TAKE_INBOX`]: how many messages were ever kept, and the kept bodies
/// with their [`Wire::Deliver`] ids (0 when kept by an older build), oldest
/// first (fewer than the count when the stream was trimmed).
fn inbox_entries(reply: &Value) -> Option<(usize, Vec<(Bytes, u64)>)> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let total = match parts.first() {
        Some(Value::Int(n)) => *n as usize,
        _ => 0,
    };
    let mut inbox = Vec::new();
    if let Some(Value::Array(entries)) = parts.get(1) {
        for entry in entries {
            let Value::Array(e) = entry else { continue };
            let Some(Value::Array(fields)) = e.get(1) else {
                continue;
            };
            if let Some(Value::BulkString(b)) = fields.get(1) {
                let id = match fields.get(3) {
                    Some(Value::BulkString(i)) => std::str::from_utf8(i)
                        .ok()
                        .and_then(|i| i.parse().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                inbox.push((Bytes::copy_from_slice(b), id));
            }
        }
    }
    Some((total, inbox))
}

/// The last [`RecentIds::KEEP`] message ids seen, oldest first out.
#[derive(Debug, Default)]
struct RecentIds {
    order: std::collections::VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentIds {
    /// Enough for seconds of traffic at tens of thousands of directed
    /// messages a second (about 1.5 MiB when full).
    const KEEP: usize = 1 << 16;

    /// Records `id`; `false` when it was already there.
    fn record(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        if self.order.len() == Self::KEEP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id);
        true
    }

    fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }
}

/// How the owner of a session answered [`Inner::ask_owner`].
enum Asked<T> {
    /// Nobody listens on its channel: the instance is gone.
    Gone,
    /// Its answer.
    Answer(T),
    /// Listening, but no answer in time.
    NoAnswer,
    /// The question could not be published.
    Failed,
}

/// Compares secrets in constant time.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_meta(s: &str) -> Result<Meta, ()> {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(s).map_err(|_| ())?;
    Meta::from_raw(&raw).map_err(|_| ())
}

/// Connects to check the TLS set-up: a server certificate that
/// `REDIS_CA_CERT` does not verify is a configuration error (the gateway
/// would never reach Redis), unlike a Redis that is merely not up yet.
/// Answers the reason when the certificate is refused.
pub async fn check_tls(
    connection: &redis::ConnectionInfo,
    tls: &redis::TlsCertificates,
) -> Result<(), String> {
    let Ok(client) = redis::Client::build_with_tls(connection.clone(), tls.clone()) else {
        return Err("unusable TLS material".into());
    };
    // A handshake that times out says nothing about the certificate: on a
    // loaded host it can take seconds. Ask again (boundedly) rather than
    // start with a CA that may not verify the server.
    for _ in 0..CHECK_TLS_ATTEMPTS {
        match tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                let text = e.to_string();
                let lower = text.to_ascii_lowercase();
                return if lower.contains("certificate")
                    || lower.contains("unknownissuer")
                    || lower.contains("invalid peer")
                {
                    Err(text)
                } else {
                    // Not up yet, or refusing for another reason: the bus
                    // reports it and keeps trying.
                    Ok(())
                };
            }
            Err(_elapsed) => continue,
        }
    }
    Ok(())
}

/// How many 3 s handshakes [`check_tls`] tries before giving the server the
/// benefit of the doubt.
const CHECK_TLS_ATTEMPTS: usize = 3;

#[cfg(test)]
mod tests {
    use super::RecentIds;

    #[test]
    fn recent_ids_tell_repeats_and_forget_the_oldest() {
        let mut ids = RecentIds::default();
        assert!(ids.record(1));
        assert!(!ids.record(1), "a repeat");
        for id in 2..=RecentIds::KEEP as u64 {
            assert!(ids.record(id));
        }
        assert!(ids.contains(1) && ids.contains(RecentIds::KEEP as u64));
        assert!(ids.record(RecentIds::KEEP as u64 + 1));
        assert!(!ids.contains(1), "the oldest was forgotten");
        assert!(ids.record(1), "and is new again");
        assert!(!ids.contains(2));
    }
}
