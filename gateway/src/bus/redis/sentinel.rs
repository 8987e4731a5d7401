//! Redis Sentinel: which node is the primary now, and noticing when that
//! changes.
//!
//! deadpool-redis's own Sentinel pool is not used: it cannot take a CA
//! certificate for TLS, and its recycle check is a `PING`, which a demoted
//! primary (now a replica) still answers — its connections would go back
//! into the pool and every write on them would fail with `READONLY`. Here
//! the one multiplexed command connection is dropped on any error, and the
//! primary is looked up again through the sentinels (which also check its
//! `ROLE`).
//!
//! A failover is noticed three ways, whichever comes first: a command
//! failing (the primary died, or Sentinel closed the connection), a
//! `+switch-master` event from a sentinel ([`Primary::watch`]), or the
//! periodic look-up that backs the events up. The events matter for a
//! failover the old primary survives (`SENTINEL FAILOVER`, or a network
//! partition that heals): Sentinel leaves the old primary a writable
//! primary, with every client connection open, until it converts it to a
//! replica some ten seconds later (four of its 2 s hello periods after it
//! sees the role mismatch), killing those connections only then. A client
//! that waits for that writes for ten seconds into a node whose data is
//! about to be thrown away, and fails whatever it had in flight at the
//! moment of the kill.

use super::*;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr};
use tokio::sync::watch;

/// Longest one lookup of the primary may take (every sentinel asked).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the sentinels are asked for the primary even without an
/// event (one missed while no sentinel was watched).
const POLL: Duration = Duration::from_secs(5);
/// The sentinels' event for a completed failover: `<name> <old ip> <old
/// port> <new ip> <new port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// What woke [`Primary::watch`].
enum Wake {
    Poll,
    Event(Option<redis::Msg>),
}

/// The primary as the sentinels name it.
pub(super) struct Primary {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The name the sentinels monitor the primary under.
    master: String,
    /// The command connection to the current primary, once made.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// A task is making the command connection.
    connecting: AtomicBool,
    /// Woken when that task is done.
    made: tokio::sync::Notify,
    /// Why it failed, last time.
    failed: Mutex<Option<String>>,
    /// The primary's address as last looked up.
    addr: Mutex<Option<String>>,
    /// Bumped whenever the primary changed (the subscriber follows it).
    epoch: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

fn addr_of(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => other.to_string(),
    }
}

impl Primary {
    /// A client of the sentinels in `s.sentinel`, with the credentials and
    /// TLS of `s.connection` for the primary (and TLS for the sentinels).
    pub(super) fn new(
        s: &Settings,
        sentinel: &Sentinel,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SetupError> {
        let tls = matches!(s.connection.addr(), ConnectionAddr::TcpTls { .. });
        let nodes = sentinel.nodes.iter().map(|n| {
            let (host, port) = n.rsplit_once(':').unwrap_or((n, "26379"));
            crate::config::redis::tcp_addr(host.to_owned(), port.parse().unwrap_or(26379), tls)
        });
        let mut b =
            SentinelClientBuilder::new(nodes, &sentinel.master, SentinelServerType::Master)?
                .set_client_to_redis_protocol(redis::ProtocolVersion::RESP2);
        let settings = s.connection.redis_settings();
        if let Some(user) = settings.username() {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(pass) = settings.password() {
            b = b.set_client_to_redis_password(pass);
        }
        if let Some(pass) = &sentinel.password {
            b = b.set_client_to_sentinel_password(pass);
        }
        if tls {
            b = b
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(certs) = &s.tls {
                b = b
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs.clone());
            }
        }
        Ok(Self {
            client: tokio::sync::Mutex::new(b.build()?),
            master: sentinel.master.clone(),
            conn: Mutex::default(),
            connecting: AtomicBool::new(false),
            made: tokio::sync::Notify::new(),
            failed: Mutex::default(),
            addr: Mutex::default(),
            epoch: watch::Sender::new(0),
            metrics,
        })
    }

    /// Asks the sentinels for the primary; a client for it.
    async fn lookup(&self) -> redis::RedisResult<redis::Client> {
        let mut sentinels = self.client.lock().await;
        let client = tokio::time::timeout(LOOKUP_TIMEOUT, sentinels.async_get_client())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "redis sentinel lookup timed out"))
            })??;
        self.observe(addr_of(client.get_connection_info().addr()));
        Ok(client)
    }

    /// Records where the primary is; a different node than before is a
    /// failover.
    fn observe(&self, now: String) {
        let mut addr = lock(&self.addr);
        match addr.as_deref() {
            Some(before) if before != now => {
                self.metrics.redis_failovers.inc();
                tracing::warn!(from = %before, to = %now,
                    "redis failover: the sentinels name a new primary; following it");
                *lock(&self.conn) = None;
                self.epoch.send_modify(|e| *e += 1);
            }
            Some(_) => {}
            None => tracing::info!(primary = %now, "redis primary found through sentinel"),
        }
        *addr = Some(now);
    }

    /// The command connection to the primary, made on first use and after
    /// every [`Primary::forget`]. The look-up and connection run in a task
    /// of their own, one at a time, which a caller giving up (the outbox's
    /// batch timeout) does not cancel: on a slow network (or a loaded
    /// host, TLS handshakes included) a connection that takes longer than
    /// one batch may is still made, and the next batch uses it, instead of
    /// every batch starting over and giving up in turn.
    pub(super) async fn conn(self: &Arc<Self>) -> redis::RedisResult<MultiplexedConnection> {
        let made = self.made.notified();
        tokio::pin!(made);
        made.as_mut().enable();
        if let Some(c) = lock(&self.conn).clone() {
            return Ok(c);
        }
        if !self.connecting.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(LOOKUP_TIMEOUT + COMMAND_TIMEOUT, me.connect())
                    .await
                    .unwrap_or_else(|_| {
                        Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "redis primary connection timed out",
                        )))
                    });
                match r {
                    // Unless the primary moved meanwhile.
                    Ok((c, epoch)) if *me.epoch.borrow() == epoch => *lock(&me.conn) = Some(c),
                    Ok(_) => *lock(&me.failed) = Some("redis primary moved".into()),
                    Err(e) => *lock(&me.failed) = Some(e.to_string()),
                }
                me.connecting.store(false, Ordering::Release);
                me.made.notify_waiters();
            });
        }
        made.await;
        if let Some(c) = lock(&self.conn).clone() {
            return Ok(c);
        }
        let why = lock(&self.failed).clone().unwrap_or_default();
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "redis primary unreachable",
            why,
        )))
    }

    /// A connection to the primary the sentinels name, and the epoch it
    /// belongs to.
    async fn connect(&self) -> redis::RedisResult<(MultiplexedConnection, u64)> {
        let client = self.lookup().await?;
        let epoch = *self.epoch.borrow();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((c, epoch))
    }

    /// The command connection failed (or hit a replica): the next command
    /// looks the primary up again.
    pub(super) fn forget(&self) {
        *lock(&self.conn) = None;
    }

    /// A pub/sub connection to the primary as the sentinels name it now.
    pub(super) async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        self.lookup().await?.get_async_pubsub().await
    }

    /// Changes whenever the primary does.
    pub(super) fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Follows the sentinels' `+switch-master` events (on one sentinel at
    /// a time, the next one when it goes away) and asks them for the
    /// primary every [`POLL`] besides, so a failover whose old primary
    /// stays up is followed at once instead of when Sentinel finally
    /// demotes it.
    pub(super) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events: Option<redis::aio::PubSubStream> = None;
        loop {
            let event = async {
                match events.as_mut() {
                    Some(stream) => Wake::Event(stream.next().await),
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                () = stop.cancelled() => return,
                _ = poll.tick() => Wake::Poll,
                e = event => e,
            };
            match wake {
                Wake::Poll => {
                    if events.is_none() {
                        events = self.subscribe().await;
                    }
                    // Only once the primary has been found: before that
                    // the first command looks it up anyway.
                    if lock(&self.addr).is_some() {
                        let _ = self.lookup().await;
                    }
                }
                Wake::Event(Some(msg)) => {
                    let text: String = msg.get_payload().unwrap_or_default();
                    let words: Vec<&str> = text.split(' ').collect();
                    if let [name, _, _, host, port] = words[..]
                        && name == self.master
                    {
                        tracing::info!(event = %text, "a sentinel announced a failover");
                        self.follow(&format!("{host}:{port}")).await;
                    }
                }
                Wake::Event(None) => {
                    tracing::debug!("sentinel event connection lost");
                    events = None;
                    poll.reset_immediately();
                }
            }
        }
    }

    /// A connection to one sentinel, subscribed to its failover events.
    async fn subscribe(&self) -> Option<redis::aio::PubSubStream> {
        let client = {
            let mut sentinels = self.client.lock().await;
            tokio::time::timeout(LOOKUP_TIMEOUT, sentinels.async_get_sentinel_client())
                .await
                .ok()?
                .ok()?
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(SWITCH_MASTER).await?;
            redis::RedisResult::Ok(pubsub.into_on_message())
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, subscribed).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot watch the sentinels' events");
                None
            }
            Err(_) => None,
        }
    }

    /// Looks the primary up after a failover to `announced` until the
    /// sentinels name it (the one asked first may not have heard yet, and
    /// a primary that survived the failover still says it is one).
    async fn follow(&self, announced: &str) {
        for _ in 0..10 {
            if let Ok(client) = self.lookup().await
                && addr_of(client.get_connection_info().addr()) == announced
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
