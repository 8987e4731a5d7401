//! Prometheus metrics. Label values are bounded sets (transports, message
//! types, error codes, size classes); never a room or a peer id. Hot-path
//! handles are resolved once at start-up so counting a message is one atomic
//! add. Every series carries `server` and `region`; the gateway's own are
//! prefixed `pantheon_`, the process's (CPU, memory, descriptors; see
//! [`process`]) follow the usual `process_` names.

pub mod process;

use pantheon_protocol::{ErrorCode, RequestKind, ServerKind};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The transports a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    /// WebSocket (`/ws`).
    websocket,
    /// WebTransport (`/wt`).
    webtransport,
    /// Legacy Socket.IO (`/socket.io/`).
    socketio,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabel {
    transport: Transport,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SizeLabel {
    size: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

/// The size classes of `pantheon_rooms_by_size` (members known here, local
/// and remote), and the smallest size in each.
pub const ROOM_SIZES: [(&str, usize); 8] = [
    ("1", 1),
    ("2", 2),
    ("3-4", 3),
    ("5-8", 5),
    ("9-16", 9),
    ("17-32", 17),
    ("33-64", 33),
    ("65+", 65),
];

/// The size class (index into [`ROOM_SIZES`]) of a room with `members`.
pub fn room_size_class(members: usize) -> usize {
    ROOM_SIZES
        .iter()
        .rposition(|(_, min)| members >= *min)
        .unwrap_or(0)
}

/// Rooms as the hub sees them at one moment (for the gauges set at scrape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Rooms per size class of [`ROOM_SIZES`].
    pub by_size: [u64; ROOM_SIZES.len()],
    /// Memberships of sessions served here (a session in 3 rooms counts 3).
    pub local_members: u64,
    /// Rooms that also have members on other instances.
    pub spanning: u64,
}

/// What is only known at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `/ready` would answer 200.
    pub ready: bool,
    /// Redis routing works (`None`: standalone, no Redis configured).
    pub redis_up: Option<bool>,
    /// The hub's rooms.
    pub rooms: RoomStats,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<TransportLabel, Gauge>,
    /// Rooms with at least one member on this instance.
    pub rooms: Gauge,
    /// Sessions on this instance (attached or in their grace window).
    pub peers: Gauge,
    msg_in: Vec<Counter>,
    msg_in_invalid: Counter,
    msg_out: Vec<Counter>,
    errors: Vec<Counter>,
    closes: Family<ReasonLabel, Counter>,
    /// Messages dropped by the rate limiter.
    pub rate_limited: Counter,
    resumes: Family<ResultLabel, Counter>,
    /// Time from receiving a `signal`/`broadcast` to queueing it for its
    /// recipients.
    pub relay_latency: Histogram,
    /// Connections refused before the session started.
    refused: Family<RefusedLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    /// Messages received from other instances.
    pub cross_instance: Counter,
    /// Directed messages sent to other instances.
    pub cross_instance_sent: Counter,
    /// Messages exchanged with instances in another region (both ways).
    pub cross_region: Counter,
    /// Round trip of one pipelined batch of Redis commands.
    pub redis_latency: Histogram,
    /// Failed Redis round trips.
    pub redis_errors: Counter,
    /// Pub/sub reconnects.
    pub redis_reconnects: Counter,
    /// Sentinel failovers this instance followed (a new primary).
    pub redis_failovers: Counter,
    redis_pool: Family<StateLabel, Gauge>,
    redis_pool_max: Gauge,
    /// Absent (no series) when standalone.
    redis_up: Family<Vec<(&'static str, &'static str)>, Gauge>,
    /// Time from a cross-instance message's publication by its sender to
    /// its arrival here, by `path` (`same_region`, `cross_region`).
    cross_instance_latency: Family<PathLabel, Histogram>,
    connections_limit: Gauge,
    ready: Gauge,
    draining: Gauge,
    drain_started: Gauge<f64, AtomicU64>,
    drain_timeout: Gauge<f64, AtomicU64>,
    rooms_by_size: Family<SizeLabel, Gauge>,
    room_members: Gauge,
    rooms_spanning: Gauge,
}

/// The reasons of `pantheon_auth_failures_total`, exported from the start.
const AUTH_FAILURE_REASONS: [&str; 5] = [
    "missing",
    "expired",
    "invalid",
    "forbidden_room",
    "wrong_subject",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(server_id: &str, region: &str) -> Self {
        let mut root = Registry::with_labels(
            [
                ("server".into(), server_id.to_owned().into()),
                ("region".into(), region.to_owned().into()),
            ]
            .into_iter(),
        );
        root.register_collector(Box::new(process::Collector));
        let registry = root.sub_registry_with_prefix("pantheon");
        let connections = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open client connections by transport",
            connections.clone(),
        );
        for t in [
            Transport::websocket,
            Transport::webtransport,
            Transport::socketio,
        ] {
            let _ = connections.get_or_create(&TransportLabel { transport: t });
        }
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "Rooms with members on this instance",
            rooms.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "peers",
            "Sessions on this instance, attached or within their resume grace window",
            peers.clone(),
        );

        let msg_in_family = Family::<TypeLabel, Counter>::default();
        registry.register(
            "messages_received",
            "Client messages received, by type",
            msg_in_family.clone(),
        );
        let msg_in = RequestKind::ALL
            .iter()
            .map(|k| msg_in_family.get_or_create_owned(&TypeLabel { r#type: k.as_str() }))
            .collect();
        let msg_in_invalid = msg_in_family.get_or_create_owned(&TypeLabel { r#type: "invalid" });

        let msg_out_family = Family::<TypeLabel, Counter>::default();
        registry.register(
            "messages_sent",
            "Server messages queued for clients, by type",
            msg_out_family.clone(),
        );
        let msg_out = ServerKind::ALL
            .iter()
            .map(|k| msg_out_family.get_or_create_owned(&TypeLabel { r#type: k.as_str() }))
            .collect();

        let error_family = Family::<CodeLabel, Counter>::default();
        registry.register(
            "errors",
            "Error replies sent, by code",
            error_family.clone(),
        );
        let errors = ErrorCode::ALL
            .iter()
            .map(|c| error_family.get_or_create_owned(&CodeLabel { code: c.as_str() }))
            .collect();

        let closes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections closed, by reason",
            closes.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Client messages dropped by the per-connection rate limit",
            rate_limited.clone(),
        );
        let resumes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "resumes",
            "Session resume attempts, by result",
            resumes.clone(),
        );
        let relay_latency = Histogram::new(exponential_buckets(1e-6, 2.0, 22));
        registry.register(
            "relay_latency_seconds",
            "Time from receiving a signal or broadcast to queueing it for its recipients",
            relay_latency.clone(),
        );
        let refused = Family::<RefusedLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connection attempts refused before a session started, by transport and reason",
            refused.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Tokens and requests refused by authentication, by reason (missing, expired, invalid, forbidden_room, wrong_subject)",
            auth_failures.clone(),
        );
        for reason in AUTH_FAILURE_REASONS {
            let _ = auth_failures.get_or_create(&ReasonLabel { reason });
        }
        let cross_instance = Counter::default();
        registry.register(
            "cross_instance_messages_received",
            "Signals and broadcasts received from other instances",
            cross_instance.clone(),
        );
        let cross_instance_sent = Counter::default();
        registry.register(
            "cross_instance_messages_sent",
            "Directed messages sent to members on other instances",
            cross_instance_sent.clone(),
        );
        let cross_region = Counter::default();
        registry.register(
            "cross_region_messages",
            "Messages exchanged with instances in another region",
            cross_region.clone(),
        );
        let redis_latency = Histogram::new(exponential_buckets(5e-5, 2.0, 16));
        registry.register(
            "redis_roundtrip_seconds",
            "Round trip of one pipelined batch of Redis commands (cross-instance relay latency)",
            redis_latency.clone(),
        );
        let redis_errors = Counter::default();
        registry.register(
            "redis_errors",
            "Redis round trips that failed or timed out",
            redis_errors.clone(),
        );
        let redis_reconnects = Counter::default();
        registry.register(
            "redis_reconnects",
            "Redis pub/sub reconnects",
            redis_reconnects.clone(),
        );
        let redis_failovers = Counter::default();
        registry.register(
            "redis_failovers",
            "Redis Sentinel failovers followed: the sentinels named a new primary",
            redis_failovers.clone(),
        );
        let redis_pool = Family::<StateLabel, Gauge>::default();
        registry.register(
            "redis_pool_connections",
            "Redis command pool connections by state (in_use, idle, waiting)",
            redis_pool.clone(),
        );
        let redis_pool_max = Gauge::default();
        registry.register(
            "redis_pool_max_connections",
            "Size limit of the Redis command pool (REDIS_POOL_SIZE)",
            redis_pool_max.clone(),
        );
        let redis_up = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        registry.register(
            "redis_up",
            "1 while cross-instance routing through Redis works, 0 while it is down (absent when standalone)",
            redis_up.clone(),
        );
        let cross_instance_latency = Family::<PathLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-4, 2.0, 16))
        });
        registry.register(
            "cross_instance_latency_seconds",
            "Time from another instance publishing a signal or broadcast to its arrival here (wall clocks; includes their skew across hosts)",
            cross_instance_latency.clone(),
        );
        for path in ["same_region", "cross_region"] {
            let _ = cross_instance_latency.get_or_create(&PathLabel { path });
        }
        let connections_limit = Gauge::default();
        registry.register(
            "connections_limit",
            "Most concurrent client connections this instance accepts (MAX_CONNECTIONS)",
            connections_limit.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while /ready answers 200 (accepting new sessions), else 0",
            ready.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 from SIGTERM until the process exits",
            draining.clone(),
        );
        let drain_started = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "drain_started_timestamp_seconds",
            "When the drain began (Unix time; 0 while not draining)",
            drain_started.clone(),
        );
        let drain_timeout = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "drain_timeout_seconds",
            "Longest a drain waits for clients to move (DRAIN_TIMEOUT_MS)",
            drain_timeout.clone(),
        );
        let rooms_by_size = Family::<SizeLabel, Gauge>::default();
        registry.register(
            "rooms_by_size",
            "Rooms with members on this instance, by their number of members (all instances)",
            rooms_by_size.clone(),
        );
        for (size, _) in ROOM_SIZES {
            let _ = rooms_by_size.get_or_create(&SizeLabel { size });
        }
        let room_members = Gauge::default();
        registry.register(
            "room_members",
            "Room memberships of sessions on this instance",
            room_members.clone(),
        );
        let rooms_spanning = Gauge::default();
        registry.register(
            "rooms_spanning_instances",
            "Rooms with members on this instance and on others",
            rooms_spanning.clone(),
        );
        registry.register(
            "build",
            "The gateway's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry: root,
            connections,
            rooms,
            peers,
            msg_in,
            msg_in_invalid,
            msg_out,
            errors,
            closes,
            rate_limited,
            resumes,
            relay_latency,
            refused,
            auth_failures,
            cross_instance,
            cross_instance_sent,
            cross_region,
            redis_latency,
            redis_errors,
            redis_reconnects,
            redis_failovers,
            redis_pool,
            redis_pool_max,
            redis_up,
            cross_instance_latency,
            connections_limit,
            ready,
            draining,
            drain_started,
            drain_timeout,
            rooms_by_size,
            room_members,
            rooms_spanning,
        }
    }

    /// Records the limits the configuration sets.
    pub fn limits(&self, max_connections: usize, drain_timeout: std::time::Duration) {
        self.connections_limit.set(max_connections as i64);
        self.drain_timeout.set(drain_timeout.as_secs_f64());
    }

    /// Records the Redis pool's size limit.
    pub fn redis_pool_max(&self, max: usize) {
        self.redis_pool_max.set(max as i64);
    }

    /// Records the start of the drain, at Unix time `now` (seconds).
    pub fn drain_started(&self, now: f64) {
        self.draining.set(1);
        self.drain_started.set(now);
    }

    /// Records a cross-instance message that took `seconds` from its
    /// sender's publication to its arrival here.
    pub fn cross_instance_latency(&self, cross_region: bool, seconds: f64) {
        let path = if cross_region {
            "cross_region"
        } else {
            "same_region"
        };
        self.cross_instance_latency
            .get_or_create(&PathLabel { path })
            .observe(seconds);
    }

    /// Sets the gauges only known at scrape time.
    pub fn snapshot(&self, s: &Snapshot) {
        self.ready.set(i64::from(s.ready));
        if let Some(up) = s.redis_up {
            self.redis_up.get_or_create(&Vec::new()).set(i64::from(up));
        }
        for ((size, _), n) in ROOM_SIZES.iter().zip(s.rooms.by_size) {
            self.rooms_by_size
                .get_or_create(&SizeLabel { size })
                .set(n as i64);
        }
        self.room_members.set(s.rooms.local_members as i64);
        self.rooms_spanning.set(s.rooms.spanning as i64);
    }

    /// Records the Redis pool's state.
    pub fn redis_pool(&self, size: usize, idle: usize, waiting: usize) {
        let set = |state, v: usize| {
            self.redis_pool
                .get_or_create(&StateLabel { state })
                .set(v as i64);
        };
        set("in_use", size.saturating_sub(idle));
        set("idle", idle);
        set("waiting", waiting);
    }

    /// The open-connections gauge of one transport.
    pub fn connections(&self, t: Transport) -> Gauge {
        self.connections
            .get_or_create_owned(&TransportLabel { transport: t })
    }

    /// Counts a received message (`None`: it could not be decoded).
    pub fn received(&self, kind: Option<RequestKind>) {
        match kind {
            Some(k) => self.msg_in[k as usize].inc(),
            None => self.msg_in_invalid.inc(),
        };
    }

    /// Counts a queued server message.
    pub fn sent(&self, kind: ServerKind, n: u64) {
        self.msg_out[kind as usize].inc_by(n);
    }

    /// Counts an error reply.
    pub fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].inc();
    }

    /// Counts a connection closed by the server or the client.
    pub fn closed(&self, reason: &'static str) {
        self.closes.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Connections closed so far with this reason.
    pub fn closed_count(&self, reason: &'static str) -> u64 {
        self.closes.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Counts a resume attempt.
    pub fn resume(&self, result: &'static str) {
        self.resumes.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a refused connection (see `admission::RefusalLog`, which
    /// also logs it).
    pub fn refused(&self, transport: Transport, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabel { transport, reason })
            .inc();
    }

    /// Refused connections so far with this transport and reason.
    pub fn refused_count(&self, transport: Transport, reason: &'static str) -> u64 {
        self.refused
            .get_or_create(&RefusedLabel { transport, reason })
            .get()
    }

    /// Counts a refusal by authentication: a `hello` or `/turn-token` token
    /// (`missing`, `expired`, `invalid`), a `join` of a room the token does
    /// not grant (`forbidden_room`), a resume by another subject
    /// (`wrong_subject`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new("s1", "eu");
        m.received(Some(RequestKind::Signal));
        m.sent(ServerKind::Signal, 2);
        m.error(ErrorCode::NotInRoom);
        m.connections(Transport::websocket).inc();
        let text = m.encode();
        for needle in [
            "pantheon_connections{server=\"s1\",region=\"eu\",transport=\"websocket\"} 1",
            "pantheon_messages_received_total{server=\"s1\",region=\"eu\",type=\"signal\"} 1",
            "pantheon_messages_sent_total{server=\"s1\",region=\"eu\",type=\"signal\"} 2",
            "pantheon_errors_total{server=\"s1\",region=\"eu\",code=\"not_in_room\"} 1",
            "pantheon_relay_latency_seconds_bucket",
            "pantheon_rate_limited_total",
            "pantheon_connections_limit{server=\"s1\",region=\"eu\"} 0",
            "pantheon_build_info{server=\"s1\",region=\"eu\",version=",
            "pantheon_cross_instance_latency_seconds_count{server=\"s1\",region=\"eu\",path=\"cross_region\"} 0",
            "pantheon_rooms_by_size{server=\"s1\",region=\"eu\",size=\"65+\"} 0",
            "pantheon_draining{server=\"s1\",region=\"eu\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        // Standalone: no Redis series.
        assert!(!text.contains("pantheon_redis_up"), "{text}");
        #[cfg(target_os = "linux")]
        for needle in [
            "process_cpu_seconds_total{server=\"s1\",region=\"eu\"} ",
            "process_resident_memory_bytes{server=\"s1\",region=\"eu\"} ",
            "process_open_fds{server=\"s1\",region=\"eu\"} ",
            "process_max_fds{server=\"s1\",region=\"eu\"} ",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }

    #[test]
    fn scrape_time_gauges_follow_the_snapshot() {
        let m = Metrics::new("s1", "eu");
        m.limits(500, std::time::Duration::from_secs(30));
        m.drain_started(1_700_000_000.5);
        m.cross_instance_latency(false, 0.003);
        let mut rooms = RoomStats::default();
        rooms.by_size[room_size_class(1)] = 4;
        rooms.by_size[room_size_class(7)] = 2;
        rooms.local_members = 9;
        rooms.spanning = 1;
        m.snapshot(&Snapshot {
            ready: false,
            redis_up: Some(true),
            rooms,
        });
        let text = m.encode();
        let labels = "{server=\"s1\",region=\"eu\"";
        for needle in [
            format!("pantheon_connections_limit{labels}}} 500"),
            format!("pantheon_drain_timeout_seconds{labels}}} 30.0"),
            format!("pantheon_draining{labels}}} 1"),
            format!("pantheon_drain_started_timestamp_seconds{labels}}} 1700000000.5"),
            format!("pantheon_ready{labels}}} 0"),
            format!("pantheon_redis_up{labels}}} 1"),
            format!("pantheon_rooms_by_size{labels},size=\"1\"}} 4"),
            format!("pantheon_rooms_by_size{labels},size=\"5-8\"}} 2"),
            format!("pantheon_room_members{labels}}} 9"),
            format!("pantheon_rooms_spanning_instances{labels}}} 1"),
            format!(
                "pantheon_cross_instance_latency_seconds_count{labels},path=\"same_region\"}} 1"
            ),
        ] {
            assert!(text.contains(&needle), "{needle} not in\n{text}");
        }
    }

    #[test]
    fn room_size_classes() {
        let class = |n| ROOM_SIZES[room_size_class(n)].0;
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64, 65, 10_000].map(class),
            [
                "1", "2", "3-4", "3-4", "5-8", "5-8", "9-16", "9-16", "17-32", "33-64", "33-64",
                "65+", "65+"
            ]
        );
    }
}
