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
//!
//! Channels: `P:ch:srv:{S}` (directed messages, takeovers) and
//! `P:ch:room:{R}` (membership and broadcasts). Every key of a live session
//! is refreshed by its instance's heartbeat; everything else expires.
//!
//! Writes go through one ordered outbox task that pipelines whatever is
//! queued into one round trip, so one sender's messages stay in order and
//! throughput does not depend on round-trip time. Subscriptions live on one
//! dedicated pub/sub connection, restored after every reconnect.

use super::wire::Wire;
use super::{
    BoxFuture, Bus, Change, Claim, Event, Handover, Health, Remote, RemoteMember, RouteError,
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

/// How long a pipeline may take before its requests fail with `internal`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
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
    /// Liveness key TTL.
    pub instance_ttl: Duration,
    /// Resume grace window.
    pub resume_grace: Duration,
    /// Messages kept per session.
    pub resume_buffer: usize,
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
/// that is gone; otherwise answer where it is now.
const DELIVER_OR_INBOX: &str = r"
local s = redis.call('HGET', KEYS[1], 'server')
if not s then return false end
if s == ARGV[1] then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'b', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'inboxed', 1)
  return 'inbox'
end
return s
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

/// Where commands go: a pool of connections to one Redis, or the one
/// multiplexed connection to a Redis Cluster (it routes by slot itself;
/// deadpool-redis's cluster manager cannot take TLS certificates).
enum Commands {
    Single(deadpool_redis::Pool),
    Cluster(Arc<OnceLock<ClusterConnection>>),
}

enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Runs a pipeline and answers every command's reply (ignored or not). On a
/// cluster a pipeline must stay in one slot, so the commands go out one by
/// one — still pipelined on the wire, in order per node.
async fn exec(conn: &mut Conn, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<Value>> {
    match conn {
        Conn::Single(c) => {
            let mut all = redis::pipe();
            for cmd in pipe.cmd_iter() {
                all.add_command(cmd.clone());
            }
            all.query_async(&mut **c).await
        }
        Conn::Cluster(c) => {
            let calls = pipe.cmd_iter().map(|cmd| {
                let mut c = c.clone();
                let cmd = cmd.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            });
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect()
        }
    }
}

enum Op {
    /// Plain commands whose replies are only checked for errors.
    Cmds {
        pipe: redis::Pipeline,
        done: Option<oneshot::Sender<Result<Vec<Value>, RouteError>>>,
    },
    /// A directed message: published to the instance channel; when nobody
    /// listens there, kept in the recipient's inbox or sent where it moved.
    Direct {
        server: Arc<str>,
        to: PeerId,
        payload: Bytes,
        body: Bytes,
        done: Option<oneshot::Sender<Result<(), RouteError>>>,
    },
}

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
    metrics: Arc<Metrics>,
    deliver_or_inbox: Script,
    claim_orphan: Script,
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
        let (commands, publish, source) = match &s.cluster_nodes {
            None => {
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
                (
                    Commands::Single(pool),
                    "PUBLISH",
                    Source::Single(Box::new(client)),
                )
            }
            Some(nodes) => {
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
            metrics,
            deliver_or_inbox: Script::new(DELIVER_OR_INBOX),
            claim_orphan: Script::new(CLAIM_ORPHAN),
            judge_after: Mutex::new(Instant::now() + s.instance_ttl * 2),
            s,
        });
        tokio::spawn(outbox(inner.clone(), outbox_rx, stop.clone()));
        match source {
            Source::Single(client) => {
                tokio::spawn(subscriber(inner.clone(), *client, subs_rx, stop.clone()));
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
                self.count_in(&region);
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
                ..
            } => {
                self.count_in(&region);
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

    fn count_in(&self, region: &str) {
        self.metrics.cross_instance.inc();
        if region != &*self.s.region {
            self.metrics.cross_region.inc();
        }
    }

    async fn conn(&self) -> Result<Conn, RouteError> {
        match &self.commands {
            Commands::Single(pool) => pool.get().await.map(Conn::Single).map_err(unavailable),
            Commands::Cluster(c) => {
                c.get().cloned().map(Conn::Cluster).ok_or_else(|| {
                    RouteError::Unavailable("redis cluster not connected yet".into())
                })
            }
        }
    }
}

/// Runs queued operations in order, many per round trip.
async fn outbox(inner: Arc<Inner>, mut rx: mpsc::Receiver<Op>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(COMMAND_TIMEOUT, run_batch(&inner, &mut batch)).await;
        let ok = matches!(result, Ok(true));
        inner.commands_ok.store(ok, Ordering::Relaxed);
        inner
            .metrics
            .redis_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(_elapsed) = result {
            inner.metrics.redis_errors.inc();
            fail(
                &mut batch,
                RouteError::Unavailable("redis timed out".into()),
            );
        }
        batch.clear();
    }
}

fn fail(batch: &mut Vec<Op>, err: RouteError) {
    for op in batch.drain(..) {
        match op {
            Op::Cmds { done: Some(tx), .. } => {
                let _ = tx.send(Err(err.clone()));
            }
            Op::Direct { done: Some(tx), .. } => {
                let _ = tx.send(Err(err.clone()));
            }
            _ => {}
        }
    }
}

/// Runs one batch; false when Redis could not be reached.
async fn run_batch(inner: &Inner, batch: &mut Vec<Op>) -> bool {
    let mut conn = match inner.conn().await {
        Ok(c) => c,
        Err(e) => {
            inner.metrics.redis_errors.inc();
            fail(batch, e);
            return false;
        }
    };
    let mut pipe = redis::pipe();
    let mut counts = Vec::with_capacity(batch.len());
    for op in batch.iter() {
        match op {
            Op::Cmds { pipe: p, .. } => {
                let n = p.cmd_iter().count();
                for c in p.cmd_iter() {
                    pipe.add_command(c.clone());
                }
                counts.push(n);
            }
            Op::Direct {
                server, payload, ..
            } => {
                pipe.cmd(inner.publish)
                    .arg(inner.keys.ch_srv(server))
                    .arg(payload.as_ref());
                counts.push(1);
            }
        }
    }
    let replies: Vec<Value> = match exec(&mut conn, &pipe).await {
        Ok(r) => r,
        Err(e) => {
            inner.metrics.redis_errors.inc();
            fail(batch, unavailable(e));
            return false;
        }
    };
    let mut replies = replies.into_iter();
    for (op, n) in batch.drain(..).zip(counts) {
        let mine: Vec<Value> = replies.by_ref().take(n).collect();
        match op {
            Op::Cmds { done, .. } => {
                let err = mine.iter().find_map(|v| match v {
                    Value::ServerError(e) => Some(unavailable(format!("{e:?}"))),
                    _ => None,
                });
                if let Some(tx) = done {
                    let _ = tx.send(match err {
                        Some(e) => Err(e),
                        None => Ok(mine),
                    });
                }
            }
            Op::Direct {
                server,
                to,
                payload,
                body,
                done,
            } => {
                let listeners = matches!(mine.first(), Some(Value::Int(n)) if *n > 0);
                inner.metrics.cross_instance_sent.inc();
                let result = if listeners {
                    Ok(())
                } else {
                    orphan_delivery(inner, &mut conn, &server, &to, payload, body).await
                };
                if let Some(tx) = done {
                    let _ = tx.send(result);
                }
            }
        }
    }
    true
}

/// Nobody listens on the recipient's instance channel: the instance is gone
/// (or the session moved). Keep the message for the session's resume, or
/// send it where the session is now.
async fn orphan_delivery(
    inner: &Inner,
    conn: &mut Conn,
    dead: &str,
    to: &PeerId,
    payload: Bytes,
    body: Bytes,
) -> Result<(), RouteError> {
    let k = &inner.keys;
    let reply: Option<String> = inner
        .deliver_or_inbox
        .key(k.peer(to.as_str()))
        .key(k.inbox(to.as_str()))
        .arg(dead)
        .arg(body.as_ref())
        .arg(inner.s.resume_buffer.max(1))
        .arg(inner.long_ttl_ms())
        .invoke_async(conn)
        .await
        .map_err(unavailable)?;
    match reply.as_deref() {
        None => Err(RouteError::NotFound),
        Some("inbox") => Ok(()),
        Some(now) => {
            let n: i64 = redis::cmd(inner.publish)
                .arg(k.ch_srv(now))
                .arg(payload.as_ref())
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if n > 0 {
                Ok(())
            } else {
                Err(RouteError::NotFound)
            }
        }
    }
}

/// Keeps the pub/sub connection: subscribes, dispatches, reconnects with
/// backoff and jitter, restores subscriptions and re-asserts this
/// instance's state after every reconnect.
async fn subscriber(
    inner: Arc<Inner>,
    client: redis::Client,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT * 2, client.get_async_pubsub()) => r,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            other => {
                if let Ok(Err(e)) = other {
                    tracing::warn!(error = %e, "redis pub/sub connection failed");
                }
                inner.healthy.store(false, Ordering::Relaxed);
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Restore every subscription before declaring routing healthy.
        let mut channels = vec![inner.keys.ch_srv(&inner.s.server)];
        channels.extend(
            lock(&inner.local)
                .watched
                .iter()
                .map(|r| inner.keys.ch_room(r.as_str())),
        );
        if let Err(e) = sink.subscribe(&channels).await {
            tracing::warn!(error = %e, "redis subscribe failed");
            continue;
        }
        backoff = Duration::from_millis(100);
        if !first {
            inner.metrics.redis_reconnects.inc();
            tracing::info!("redis pub/sub reconnected; re-asserting this instance");
            *lock(&inner.judge_after) = Instant::now() + inner.s.instance_ttl * 2;
            reassert(&inner);
            let resync = inner.clone();
            tokio::spawn(async move {
                // Give every instance a heartbeat to re-assert first.
                tokio::time::sleep(resync.s.instance_ttl / 2).await;
                let rooms: Vec<RoomName> = lock(&resync.local).watched.iter().cloned().collect();
                for room in rooms {
                    if let Ok(members) = snapshot(&resync, &room).await {
                        resync.emit(Event::Resync { room, members });
                    }
                }
            });
        }
        first = false;
        inner.healthy.store(true, Ordering::Relaxed);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                cmd = cmds.recv() => {
                    let Some((channel, subscribe, ack)) = cmd else { return };
                    let r = if subscribe { sink.subscribe(&channel).await } else { sink.unsubscribe(&channel).await };
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    if r.is_err() {
                        break;
                    }
                }
                msg = stream.next() => match msg {
                    Some(msg) => inner.on_message(Bytes::copy_from_slice(msg.get_payload_bytes())),
                    None => break,
                },
            }
        }
        inner.healthy.store(false, Ordering::Relaxed);
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// Where pub/sub messages come from.
enum Source {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterSource>),
}

struct ClusterSource {
    client: redis::cluster::ClusterClient,
    conn: Arc<OnceLock<ClusterConnection>>,
    pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
}

type SubCmd = (String, bool, Option<oneshot::Sender<()>>);

/// Sharded pub/sub on a Redis Cluster: the cluster connection routes each
/// `SSUBSCRIBE` to the shard that owns the channel and restores
/// subscriptions after reconnecting; messages arrive as RESP3 pushes.
async fn cluster_subscriber(
    inner: Arc<Inner>,
    client: redis::cluster::ClusterClient,
    slot: Arc<OnceLock<ClusterConnection>>,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut conn = loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = client.get_async_connection() => match r {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "redis cluster connection failed"),
            },
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let _ = slot.set(conn.clone());
    let mut channels = vec![inner.keys.ch_srv(&inner.s.server)];
    channels.extend(
        lock(&inner.local)
            .watched
            .iter()
            .map(|r| inner.keys.ch_room(r.as_str())),
    );
    for ch in &channels {
        if let Err(e) = conn.ssubscribe(ch).await {
            tracing::warn!(error = %e, "redis cluster subscribe failed");
        }
    }
    inner.healthy.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            cmd = cmds.recv() => {
                let Some((channel, subscribe, ack)) = cmd else { return };
                let r = if subscribe { conn.ssubscribe(&channel).await } else { conn.sunsubscribe(&channel).await };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "redis cluster (un)subscribe failed");
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        if let Some(Value::BulkString(payload)) = push.data.get(1) {
                            inner.on_message(Bytes::copy_from_slice(payload));
                        }
                    }
                    redis::PushKind::Disconnection => {
                        // The connection reconnects and resubscribes by
                        // itself; re-assert once commands work again.
                        inner.healthy.store(false, Ordering::Relaxed);
                        inner.metrics.redis_reconnects.inc();
                        let again = inner.clone();
                        let mut probe = conn.clone();
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut probe).await;
                                if pong.is_ok() {
                                    break;
                                }
                            }
                            *lock(&again.judge_after) = Instant::now() + again.s.instance_ttl * 2;
                            reassert(&again);
                            again.healthy.store(true, Ordering::Relaxed);
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

fn reassert(inner: &Inner) {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(inner.keys.srv(&inner.s.server))
        .arg(&*inner.s.region)
        .arg("PX")
        .arg(inner.s.instance_ttl.as_millis() as u64)
        .ignore();
    let local = lock(&inner.local);
    for (peer, (secret, rooms)) in &local.peers {
        inner.assert_peer(&mut pipe, peer, secret, rooms);
    }
    drop(local);
    let _ = inner.queue(Op::Cmds { pipe, done: None });
}

/// The members of `room` on other instances, as Redis has them.
async fn snapshot(inner: &Inner, room: &RoomName) -> Result<Vec<RemoteMember>, RouteError> {
    let mut conn = inner.conn().await?;
    let all: HashMap<String, String> = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("HGETALL")
            .arg(inner.keys.room(room.as_str()))
            .query_async(&mut conn),
    )
    .await
    .map_err(unavailable)?
    .map_err(unavailable)?;
    tracing::debug!(%room, entries = all.len(), "room snapshot");
    let mut members = Vec::with_capacity(all.len());
    for (peer, value) in all {
        let mut parts = value.splitn(3, '\n');
        let (Some(server), Some(region), Some(meta)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if server == &*inner.s.server {
            continue;
        }
        let (Ok(peer), Ok(meta)) = (PeerId::new(&peer), parse_meta(meta)) else {
            continue;
        };
        let server: Arc<str> = server.into();
        lock(&inner.local).servers.insert(server.clone());
        members.push(RemoteMember {
            peer,
            meta,
            at: Remote {
                server,
                region: region.into(),
            },
        });
    }
    Ok(members)
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

/// Liveness, key refresh, and clean-up of instances that died.
async fn heartbeat(inner: Arc<Inner>, stop: CancellationToken) {
    let period = inner.s.instance_ttl / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        reassert(&inner);
        if let Commands::Single(pool) = &inner.commands {
            let status = pool.status();
            inner
                .metrics
                .redis_pool(status.size, status.available, status.waiting);
        }
        if Instant::now() < *lock(&inner.judge_after) || !inner.healthy.load(Ordering::Relaxed) {
            continue;
        }
        let servers: Vec<Arc<str>> = lock(&inner.local).servers.iter().cloned().collect();
        if servers.is_empty() {
            continue;
        }
        let Ok(mut conn) = inner.conn().await else {
            continue;
        };
        let mut pipe = redis::pipe();
        for s in &servers {
            pipe.cmd("EXISTS").arg(inner.keys.srv(s));
        }
        let Ok(alive) = exec(&mut conn, &pipe).await else {
            continue;
        };
        let alive: Vec<i64> = alive
            .into_iter()
            .map(|v| if let Value::Int(n) = v { n } else { 1 })
            .collect();
        for (server, alive) in servers.into_iter().zip(alive) {
            if alive > 0 {
                continue;
            }
            lock(&inner.local).servers.remove(&server);
            let claim: Option<String> = redis::cmd("SET")
                .arg(inner.keys.cleanup(&server))
                .arg(&*inner.s.server)
                .arg("NX")
                .arg("PX")
                .arg(inner.long_ttl_ms())
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            if claim.is_some() {
                tracing::warn!(%server, grace_ms = inner.s.resume_grace.as_millis() as u64,
                    "instance is gone; its sessions end after the grace window unless resumed");
                tokio::spawn(clean_up(inner.clone(), server));
            }
        }
    }
    // A clean stop: this instance is gone at once rather than after its TTL.
    if let Ok(mut conn) = inner.conn().await {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(inner.keys.srv(&inner.s.server))
            .query_async(&mut conn)
            .await;
    }
}

/// After the grace window, ends every session the dead instance still owns:
/// exactly one `peer_left` per member, announced by this instance alone.
async fn clean_up(inner: Arc<Inner>, dead: Arc<str>) {
    tokio::time::sleep(inner.s.resume_grace).await;
    let Ok(mut conn) = inner.conn().await else {
        return;
    };
    let k = &inner.keys;
    let peers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(k.srvpeers(&dead))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for peer in peers {
        let Ok(peer) = PeerId::new(&peer) else {
            continue;
        };
        let owner: Option<String> = redis::cmd("HGET")
            .arg(k.peer(peer.as_str()))
            .arg("server")
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        if owner.as_deref() != Some(&*dead) {
            continue; // resumed elsewhere
        }
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(k.prooms(peer.as_str()))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let mut pipe = redis::pipe();
        for room in &rooms {
            let Ok(room) = RoomName::new(room) else {
                continue;
            };
            pipe.cmd("HDEL")
                .arg(k.room(room.as_str()))
                .arg(peer.as_str())
                .ignore();
            let wire = Wire::Left {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                room: room.clone(),
                peer: peer.clone(),
                reason: LeaveReason::Disconnected,
            };
            pipe.cmd(inner.publish)
                .arg(k.ch_room(room.as_str()))
                .arg(wire.encode().as_ref())
                .ignore();
            // Our own publishes are not echoed back to us.
            inner.emit(Event::Left {
                room,
                peer: peer.clone(),
                reason: LeaveReason::Disconnected,
            });
        }
        pipe.cmd("DEL")
            .arg(k.peer(peer.as_str()))
            .arg(k.prooms(peer.as_str()))
            .arg(k.inbox(peer.as_str()))
            .ignore();
        let _ = exec(&mut conn, &pipe).await;
    }
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(k.srvpeers(&dead))
        .query_async(&mut conn)
        .await;
}

impl Bus for Redis {
    fn health(&self) -> Health {
        let inner = &self.inner;
        if inner.healthy.load(Ordering::Relaxed) && inner.commands_ok.load(Ordering::Relaxed) {
            Health::Ok
        } else {
            Health::Down
        }
    }

    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<RemoteMember>, RouteError>> {
        let room = room.clone();
        Box::pin(async move {
            let inner = &self.inner;
            let newly = lock(&inner.local).watched.insert(room.clone());
            if newly {
                let (tx, rx) = oneshot::channel();
                inner
                    .subs
                    .send((inner.keys.ch_room(room.as_str()), true, Some(tx)))
                    .map_err(unavailable)?;
                // Subscribed before the snapshot: nothing falls between them.
                tokio::time::timeout(COMMAND_TIMEOUT, rx)
                    .await
                    .map_err(unavailable)?
                    .map_err(unavailable)?;
            }
            snapshot(inner, &room).await
        })
    }

    fn unwatch(&self, room: &RoomName) {
        if lock(&self.inner.local).watched.remove(room) {
            let _ = self
                .inner
                .subs
                .send((self.inner.keys.ch_room(room.as_str()), false, None));
        }
    }

    fn announce(&self, change: Change) {
        let inner = &self.inner;
        let k = &inner.keys;
        let mut pipe = redis::pipe();
        let wire = match change {
            Change::Member { room, peer, meta } => {
                if let Some((_, rooms)) = lock(&inner.local).peers.get_mut(&peer) {
                    rooms.insert(room.clone(), meta.clone());
                }
                let roomk = k.room(room.as_str());
                pipe.cmd("HSET")
                    .arg(&roomk)
                    .arg(peer.as_str())
                    .arg(inner.member_value(&meta))
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&roomk)
                    .arg(inner.long_ttl_ms())
                    .ignore();
                pipe.cmd("SADD")
                    .arg(k.prooms(peer.as_str()))
                    .arg(room.as_str())
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(k.prooms(peer.as_str()))
                    .arg(inner.long_ttl_ms())
                    .ignore();
                Wire::Member {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    room,
                    peer,
                    meta,
                }
            }
            Change::Left { room, peer, reason } => {
                if let Some((_, rooms)) = lock(&inner.local).peers.get_mut(&peer) {
                    rooms.remove(&room);
                }
                pipe.cmd("HDEL")
                    .arg(k.room(room.as_str()))
                    .arg(peer.as_str())
                    .ignore();
                pipe.cmd("SREM")
                    .arg(k.prooms(peer.as_str()))
                    .arg(room.as_str())
                    .ignore();
                Wire::Left {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    room,
                    peer,
                    reason,
                }
            }
        };
        let channel = match &wire {
            Wire::Member { room, .. } | Wire::Left { room, .. } => k.ch_room(room.as_str()),
            _ => unreachable!(),
        };
        pipe.cmd(inner.publish)
            .arg(channel)
            .arg(wire.encode().as_ref())
            .ignore();
        if inner.queue(Op::Cmds { pipe, done: None }).is_err() {
            inner.metrics.redis_errors.inc();
        }
    }

    fn send(
        &self,
        at: &Remote,
        room: &RoomName,
        to: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), RouteError>> {
        let inner = &self.inner;
        let payload = Wire::Deliver {
            origin: inner.s.server.clone(),
            region: inner.s.region.clone(),
            room: room.clone(),
            to: to.clone(),
            body: body.clone(),
        }
        .encode();
        if at.region != inner.s.region {
            inner.metrics.cross_region.inc();
        }
        let (tx, rx) = oneshot::channel();
        let queued = inner.queue(Op::Direct {
            server: at.server.clone(),
            to: to.clone(),
            payload,
            body,
            done: Some(tx),
        });
        Box::pin(async move {
            queued?;
            rx.await.map_err(unavailable)?
        })
    }

    fn publish(
        &self,
        room: &RoomName,
        from: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), RouteError>> {
        let inner = &self.inner;
        let wire = Wire::Broadcast {
            origin: inner.s.server.clone(),
            region: inner.s.region.clone(),
            room: room.clone(),
            from: from.clone(),
            body,
        };
        let mut pipe = redis::pipe();
        pipe.cmd(inner.publish)
            .arg(inner.keys.ch_room(room.as_str()))
            .arg(wire.encode().as_ref());
        let (tx, rx) = oneshot::channel();
        let queued = inner.queue(Op::Cmds {
            pipe,
            done: Some(tx),
        });
        Box::pin(async move {
            queued?;
            rx.await.map_err(unavailable)?.map(|_| ())
        })
    }

    fn register(&self, peer: &PeerId, secret: &str) {
        let inner = &self.inner;
        lock(&inner.local)
            .peers
            .insert(peer.clone(), (secret.to_owned(), HashMap::new()));
        let mut pipe = redis::pipe();
        inner.assert_peer(&mut pipe, peer, secret, &HashMap::new());
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }

    fn unregister(&self, peer: &PeerId) {
        let inner = &self.inner;
        lock(&inner.local).peers.remove(peer);
        let k = &inner.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(k.peer(peer.as_str()))
            .arg(k.prooms(peer.as_str()))
            .arg(k.inbox(peer.as_str()))
            .ignore();
        pipe.cmd("SREM")
            .arg(k.srvpeers(&inner.s.server))
            .arg(peer.as_str())
            .ignore();
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }

    fn claim(&self, peer: &PeerId, secret: &str, last_seq: u64) -> BoxFuture<'_, Option<Claim>> {
        let peer = peer.clone();
        let offered = secret.to_owned();
        Box::pin(async move {
            let inner = &self.inner;
            let k = &inner.keys;
            let mut conn = inner.conn().await.ok()?;
            let entry: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(k.peer(peer.as_str()))
                .query_async(&mut conn)
                .await
                .ok()?;
            let owner = entry.get("server")?.clone();
            let secret = entry.get("secret")?.clone();
            if owner == *inner.s.server || !same_secret(&secret, &offered) {
                return None;
            }
            // Ask the owner first; nobody listening means it is gone.
            let (tx, rx) = oneshot::channel();
            lock(&inner.claims).insert(peer.clone(), tx);
            let ask = Wire::Takeover {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                peer: peer.clone(),
                last_seq,
            }
            .encode();
            let listeners: i64 = redis::cmd(inner.publish)
                .arg(k.ch_srv(&owner))
                .arg(ask.as_ref())
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            if listeners > 0 {
                let answer = tokio::time::timeout(HANDOVER_TIMEOUT, rx).await;
                lock(&inner.claims).remove(&peer);
                let Ok(Ok(Wire::Handover {
                    ok: true,
                    next_seq,
                    rooms,
                    lines,
                    ..
                })) = answer
                else {
                    return None;
                };
                let mut pipe = redis::pipe();
                pipe.cmd("SREM")
                    .arg(k.srvpeers(&owner))
                    .arg(peer.as_str())
                    .ignore();
                let _ = exec(&mut conn, &pipe).await;
                return Some(Claim {
                    secret,
                    lines,
                    inbox: Vec::new(),
                    next_seq,
                    rooms,
                });
            }
            lock(&inner.claims).remove(&peer);
            let reply: Value = inner
                .claim_orphan
                .key(k.peer(peer.as_str()))
                .key(k.inbox(peer.as_str()))
                .arg(&owner)
                .arg(&*inner.s.server)
                .arg(&*inner.s.region)
                .invoke_async(&mut conn)
                .await
                .ok()?;
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
                        inbox.push(Bytes::copy_from_slice(b));
                    }
                }
            }
            if total > inbox.len() {
                // More arrived than the inbox keeps: resuming would skip some.
                return None;
            }
            let rooms: Vec<String> = redis::cmd("SMEMBERS")
                .arg(k.prooms(peer.as_str()))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let mut with_meta = Vec::new();
            for room in rooms {
                let Ok(room) = RoomName::new(&room) else {
                    continue;
                };
                let value: Option<String> = redis::cmd("HGET")
                    .arg(k.room(room.as_str()))
                    .arg(peer.as_str())
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(None);
                let meta = value
                    .and_then(|v| v.splitn(3, '\n').nth(2).and_then(|m| parse_meta(m).ok()))
                    .unwrap_or_default();
                with_meta.push((room, meta));
            }
            let _: Result<(), _> = redis::pipe()
                .cmd("SREM")
                .arg(k.srvpeers(&owner))
                .arg(peer.as_str())
                .ignore()
                .query_async(&mut conn)
                .await;
            Some(Claim {
                secret,
                lines: Vec::new(),
                inbox,
                next_seq: last_seq + 1,
                rooms: with_meta,
            })
        })
    }

    fn hand_over(&self, requester: &str, peer: &PeerId, handover: Handover) {
        let inner = &self.inner;
        let wire = match handover {
            Handover::Session(c) => {
                lock(&inner.local).peers.remove(peer);
                Wire::Handover {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    peer: peer.clone(),
                    ok: true,
                    next_seq: c.next_seq,
                    rooms: c.rooms,
                    lines: c.lines,
                }
            }
            Handover::Refused => Wire::Handover {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                peer: peer.clone(),
                ok: false,
                next_seq: 0,
                rooms: Vec::new(),
                lines: Vec::new(),
            },
        };
        let mut pipe = redis::pipe();
        pipe.cmd(inner.publish)
            .arg(inner.keys.ch_srv(requester))
            .arg(wire.encode().as_ref())
            .ignore();
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }
}
