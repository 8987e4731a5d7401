//! Prometheus metrics. Label values are bounded sets (transports, message
//! types, error codes); never a room or a peer id. Hot-path handles are
//! resolved once at start-up so counting a message is one atomic add.

use pantheon_protocol::{ErrorCode, RequestKind, ServerKind};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    redis_pool: Family<StateLabel, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(server_id: &str, region: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "pantheon",
            [
                ("server".into(), server_id.to_owned().into()),
                ("region".into(), region.to_owned().into()),
            ]
            .into_iter(),
        );
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
        let redis_pool = Family::<StateLabel, Gauge>::default();
        registry.register(
            "redis_pool_connections",
            "Redis command pool connections by state (in_use, idle, waiting)",
            redis_pool.clone(),
        );
        Self {
            registry,
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
            cross_instance,
            cross_instance_sent,
            cross_region,
            redis_latency,
            redis_errors,
            redis_reconnects,
            redis_pool,
        }
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
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
