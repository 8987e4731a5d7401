//! Who may open a connection, per client address: connection attempts per
//! second (`CONN_RATE_PER_IP`, governor's keyed GCRA) and concurrent
//! connections (`MAX_CONNECTIONS_PER_IP`), on both transports together.
//!
//! The client address is the connection's peer unless that peer is one of
//! `TRUSTED_PROXIES`: then a PROXY protocol header ([`proxy`]) names the
//! next hop, and `X-Forwarded-For` is walked from the right past trusted
//! hops to the first untrusted one (the rightmost address a client cannot
//! forge). IPv6 clients are counted by their /64, which is what one
//! subscriber usually holds.
//!
//! A connection that has not become a session yet (a TCP connection whose
//! HTTP requests are not a WebSocket upgrade, or still arriving; a QUIC
//! connection still in its handshake or before its CONNECT) is counted
//! against `MAX_CONNECTIONS_PER_IP` too, in a table of its own
//! ([`Admission::hold_pending`]), so one address cannot hold an unbounded
//! number of half-open connections while its sessions are within the limit.
//!
//! Memory stays bounded: the concurrency tables hold only addresses with
//! open connections, and [`Admission::maintain`] drops rate-limiter state
//! that has fully refilled.
//!
//! Refusals are counted in `pantheon_connections_refused_total{transport,
//! reason}` and logged through [`RefusalLog`]: every one at debug, and at
//! most one line per [`LOG_EVERY`] at info with the number left unlogged.

pub mod proxy;

use crate::config::admission::Admission as Settings;
use crate::limit::TokioClock;
use crate::metrics::{Metrics, Transport};
use axum::http::HeaderMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::{IpNet, Ipv6Net};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often idle rate-limiter state is dropped.
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(10);
/// At most one info line about refusals this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// `Retry-After` for a refusal over `MAX_CONNECTIONS_PER_IP`, in seconds:
/// nothing says when one of that address's connections will end.
pub const RETRY_CONCURRENT_SECS: u64 = 5;

type Keyed = RateLimiter<
    IpAddr,
    HashMapStateStore<IpAddr>,
    TokioClock,
    NoOpMiddleware<<TokioClock as Clock>::Instant>,
>;

/// Why a client address may not connect now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over `CONN_RATE_PER_IP`; the next attempt may succeed after this long.
    Rate(Duration),
    /// At `MAX_CONNECTIONS_PER_IP`.
    Concurrent,
}

impl Refused {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Rate(_) => "conn_rate_per_ip",
            Self::Concurrent => "max_connections_per_ip",
        }
    }

    /// Seconds for `Retry-After` (at least 1).
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Self::Rate(wait) => wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            Self::Concurrent => RETRY_CONCURRENT_SECS,
        }
        .max(1)
    }
}

/// The per-address limits and the trusted proxies.
#[derive(Debug)]
pub struct Admission {
    trusted: Vec<IpNet>,
    rate: Option<Keyed>,
    max_open: Option<u32>,
    open: Mutex<HashMap<IpAddr, u32>>,
    pending: Mutex<HashMap<IpAddr, u32>>,
}

/// Which concurrency table a [`Slot`] is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// Sessions.
    Open,
    /// Connections that are not sessions (yet).
    Pending,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address limits are counted by: the address itself for IPv4, its /64
/// for IPv6.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Net::new(v6, 64).map_or(v6, |n| n.network())),
        v4 => v4,
    }
}

impl Admission {
    /// From the validated settings.
    pub fn new(settings: &Settings) -> Self {
        let rate = settings
            .conn_rate_per_ip
            .and_then(NonZeroU32::new)
            .map(|n| RateLimiter::hashmap_with_clock(Quota::per_second(n), TokioClock));
        Self {
            trusted: settings.trusted_proxies.clone(),
            rate,
            max_open: settings.max_connections_per_ip,
            open: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is one of `TRUSTED_PROXIES`.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client behind a connection from `peer` (already resolved through
    /// PROXY protocol) with request `headers`: `peer` itself unless it is a
    /// trusted proxy, else the rightmost untrusted `X-Forwarded-For` hop (or
    /// the leftmost hop when every one is trusted). A hop that is not an
    /// address ends the walk at the hop that added it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }

    /// Counts a connection attempt from `ip` against `CONN_RATE_PER_IP`.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), Refused> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check_key(&key(ip))
            .map_err(|not_until| Refused::Rate(not_until.wait_time_from(TokioClock.now())))
    }

    /// Takes one of `ip`'s `MAX_CONNECTIONS_PER_IP` slots, held until the
    /// returned [`Slot`] is dropped.
    pub fn hold(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        self.take(Table::Open, ip)
    }

    /// Takes one of `ip`'s `MAX_CONNECTIONS_PER_IP` slots for connections
    /// that are not sessions: a TCP connection until it is upgraded to a
    /// WebSocket (or closes), a QUIC connection until its WebTransport
    /// session is established. Counted apart from [`Self::hold`]'s, so a
    /// connection becoming a session never needs two slots at once. A
    /// trusted proxy speaks for many clients and takes none (`None`).
    pub fn hold_pending(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Slot>, Refused> {
        if self.trusts(ip) {
            return Ok(None);
        }
        self.take(Table::Pending, ip).map(Some)
    }

    fn table(&self, table: Table) -> &Mutex<HashMap<IpAddr, u32>> {
        match table {
            Table::Open => &self.open,
            Table::Pending => &self.pending,
        }
    }

    fn take(self: &Arc<Self>, table: Table, ip: IpAddr) -> Result<Slot, Refused> {
        let key = key(ip);
        let mut open = lock(self.table(table));
        let n = open.entry(key).or_insert(0);
        if self.max_open.is_some_and(|max| *n >= max) {
            if *n == 0 {
                open.remove(&key);
            }
            return Err(Refused::Concurrent);
        }
        *n += 1;
        Ok(Slot {
            admission: self.clone(),
            table,
            key,
        })
    }

    /// Addresses with open connections (for tests and metrics).
    pub fn open_addresses(&self) -> usize {
        lock(&self.open).len()
    }

    /// Connections from `ip` that are not sessions (for tests).
    pub fn pending_from(&self, ip: IpAddr) -> u32 {
        lock(&self.pending).get(&key(ip)).copied().unwrap_or(0)
    }

    /// Addresses with rate-limiter state (for tests).
    pub fn rate_addresses(&self) -> usize {
        self.rate.as_ref().map_or(0, Keyed::len)
    }

    /// Drops rate-limiter state that has fully refilled, now.
    pub fn retain_recent(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    /// Calls [`Self::retain_recent`] every [`MAINTAIN_EVERY`] until `stop`.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        if self.rate.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(MAINTAIN_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.retain_recent(),
            }
        }
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// One open connection counted against its address; released on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    table: Table,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(self.admission.table(self.table));
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Counts and logs refused connections without letting a flood of them
/// flood the log.
#[derive(Debug)]
pub struct RefusalLog {
    metrics: Arc<Metrics>,
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            state: Mutex::new(LogState::default()),
        }
    }

    /// Records one refusal. The client address is logged (it is what an
    /// operator needs to act), never a token or a header's value.
    pub fn refused(&self, transport: Transport, reason: &'static str, client: Option<IpAddr>) {
        self.metrics.refused(transport, reason);
        tracing::debug!(?transport, reason, ?client, "connection refused");
        let now = Instant::now();
        let mut st = lock(&self.state);
        if st.last.is_some_and(|last| now < last + LOG_EVERY) {
            st.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut st.unlogged);
        st.last = Some(now);
        drop(st);
        tracing::info!(
            ?transport,
            reason,
            ?client,
            unlogged_since_last = unlogged,
            "connection refused (details of further refusals within {}s at debug level; counts in pantheon_connections_refused_total)",
            LOG_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn admission(rate: Option<u32>, max: Option<u32>, trusted: &[&str]) -> Arc<Admission> {
        Arc::new(Admission::new(&Settings {
            conn_rate_per_ip: rate,
            max_connections_per_ip: max,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let a = admission(None, None, &["10.0.0.0/8", "::1/128"]);
        let h = xff(&["6.6.6.6, 1.2.3.4, 10.0.0.5"]);
        // An untrusted peer's header is ignored.
        assert_eq!(a.client_ip(ip("9.9.9.9"), &h), ip("9.9.9.9"));
        // The rightmost untrusted hop, not the client-supplied leftmost.
        assert_eq!(a.client_ip(ip("10.0.0.1"), &h), ip("1.2.3.4"));
        // Several headers are one list, in order.
        let h = xff(&["6.6.6.6", "1.2.3.4", "10.9.9.9"]);
        assert_eq!(a.client_ip(ip("10.0.0.1"), &h), ip("1.2.3.4"));
        // Every hop trusted: the leftmost.
        let h = xff(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(a.client_ip(ip("10.0.0.1"), &h), ip("10.1.1.1"));
        // Garbage ends the walk at the hop that added it.
        let h = xff(&["1.2.3.4, garbage, 10.0.0.7"]);
        assert_eq!(a.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.7"));
        // Ports, brackets, IPv4-mapped peers.
        let h = xff(&["[2001:db8::1]:443, 5.6.7.8:1234"]);
        assert_eq!(a.client_ip(ip("::1"), &h), ip("5.6.7.8"));
        assert_eq!(a.client_ip(ip("::ffff:10.0.0.1"), &h), ip("5.6.7.8"));
        // No header: the proxy itself.
        assert_eq!(
            a.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_is_counted_by_its_slash_64() {
        assert_eq!(key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        let a = admission(None, Some(1), &[]);
        let _held = a.hold(ip("2001:db8::1")).unwrap();
        assert_eq!(a.hold(ip("2001:db8::2")).unwrap_err(), Refused::Concurrent);
        assert!(a.hold(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn concurrency_slots_are_released_and_forgotten() {
        let a = admission(None, Some(2), &[]);
        let x = ip("1.1.1.1");
        let s1 = a.hold(x).unwrap();
        let s2 = a.hold(x).unwrap();
        assert_eq!(a.hold(x).unwrap_err(), Refused::Concurrent);
        assert!(a.hold(ip("2.2.2.2")).is_ok());
        drop(s1);
        let s3 = a.hold(x).unwrap();
        drop((s2, s3));
        assert_eq!(a.open_addresses(), 0);
    }

    #[test]
    fn pending_connections_have_a_table_of_their_own() {
        let a = admission(None, Some(2), &[]);
        let x = ip("1.1.1.1");
        let sessions = [a.hold(x).unwrap(), a.hold(x).unwrap()];
        // Sessions at the limit do not keep a new connection from starting.
        let p1 = a.hold_pending(x).unwrap().unwrap();
        let p2 = a.hold_pending(x).unwrap().unwrap();
        assert_eq!(a.hold_pending(x).unwrap_err(), Refused::Concurrent);
        assert_eq!(a.pending_from(x), 2);
        drop(p1);
        let p3 = a.hold_pending(x).unwrap().unwrap();
        drop((p2, p3, sessions));
        assert_eq!(a.pending_from(x), 0);
        assert_eq!(a.open_addresses(), 0);
        assert!(lock(&a.pending).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_refills_and_idle_state_is_dropped() {
        let a = admission(Some(2), None, &[]);
        let x = ip("1.1.1.1");
        assert!(a.attempt(x).is_ok());
        assert!(a.attempt(x).is_ok());
        let Err(Refused::Rate(wait)) = a.attempt(x) else {
            panic!("third attempt in the same instant passed");
        };
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(Refused::Rate(wait).retry_after_secs(), 1);
        assert!(a.attempt(ip("2.2.2.2")).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(a.attempt(x).is_ok());
        // A scan from many addresses leaves nothing once it has refilled.
        for i in 0..10_000u32 {
            let _ = a.attempt(IpAddr::from(i.to_be_bytes()));
        }
        assert!(a.rate_addresses() >= 10_000);
        tokio::time::advance(Duration::from_secs(2)).await;
        a.retain_recent();
        assert_eq!(a.rate_addresses(), 0);
    }

    #[test]
    fn unlimited_by_default() {
        let a = admission(None, None, &[]);
        let x = ip("1.1.1.1");
        let slots: Vec<_> = (0..1000).map(|_| a.hold(x).unwrap()).collect();
        for _ in 0..1000 {
            assert!(a.attempt(x).is_ok());
        }
        drop(slots);
        assert_eq!(a.rate_addresses(), 0);
    }
}
