//! The service as a whole: shared state, the listener loop, and graceful
//! shutdown (drain).

use crate::admission::{Admission, RefusalLog};
use crate::auth::Auth;
use crate::bus::redis::{Redis, Settings as RedisSettings};
use crate::bus::{Bus, Health, Standalone};
use crate::config::Config;
use crate::http;
use crate::hub::{Hub, Settings};
use crate::ice::Ice;
use crate::metrics::{Metrics, Snapshot};
use crate::webtransport;
use pantheon_certs::Store;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State shared by every connection and handler.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Rooms and sessions.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when draining starts: sessions send `reconnect`.
    pub drain: CancellationToken,
    /// Cancelled when the drain ends: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// One permit per client connection (`MAX_CONNECTIONS`).
    pub connections: Arc<Semaphore>,
    /// Session tasks, awaited on shutdown.
    pub tasks: TaskTracker,
    /// When this instance started.
    pub started: Instant,
    /// The TLS certificate WebTransport presents, when it is served.
    pub certs: Option<Arc<Store>>,
    /// Token verification for every transport and `/turn-token`.
    pub auth: Auth,
    /// STUN/TURN servers for `welcome` and `/turn-token`.
    pub ice: Ice,
    /// Per-client-address limits and trusted proxies.
    pub admission: Arc<Admission>,
    /// Counts and logs refused connections.
    pub refusals: RefusalLog,
    draining: AtomicBool,
    conn_ids: AtomicU64,
}

impl Shared {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the instance is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The deployment's regions, from the instance directory (this
    /// instance always among them).
    pub fn regions(&self) -> Vec<pantheon_protocol::Region> {
        let own = crate::bus::Instance {
            server: self.config.server_id.clone(),
            region: self.config.region.clone(),
            ws_url: self.config.public_ws_url.clone(),
            wt_url: self.config.public_wt_url.clone(),
        };
        crate::regions::regions(own, self.hub.bus().instances())
    }

    /// Whether the instance accepts new sessions (`/ready`), and why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if self.connections.available_permits() == 0 {
            return Err("at MAX_CONNECTIONS");
        }
        if self.hub.bus().health() == Health::Down {
            return Err("redis unreachable");
        }
        Ok(())
    }

    /// The Prometheus exposition, with the gauges only known now (readiness,
    /// Redis, rooms) brought up to date.
    pub fn render_metrics(&self) -> String {
        self.metrics.snapshot(&Snapshot {
            ready: self.readiness().is_ok(),
            redis_up: match self.hub.bus().health() {
                Health::Standalone => None,
                Health::Ok => Some(true),
                Health::Down => Some(false),
            },
            rooms: self.hub.room_stats(),
        });
        self.metrics.encode()
    }
}

/// How often the certificate files are checked for changes (and a
/// self-signed certificate for its expiry).
const CERT_CHECK: Duration = Duration::from_secs(10);

/// A Pantheon gateway instance.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    webtransport: Option<webtransport::Listener>,
    /// Stops the bus's background tasks once the drain is over.
    bus_stop: CancellationToken,
}

/// Assembles a [`Gateway`] from its optional parts.
#[derive(Debug)]
pub struct Builder {
    config: Config,
    bus: Option<Arc<dyn Bus>>,
    webtransport: Option<(Arc<Store>, webtransport::Listener)>,
}

impl Builder {
    /// Routes through `bus` instead of the in-memory one.
    pub fn bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Serves WebTransport on `listener` (bound with `certs`), keeps the
    /// certificate current, and publishes its hash at
    /// `/webtransport/cert-hash` while it is self-signed.
    pub fn webtransport(mut self, certs: Arc<Store>, listener: webtransport::Listener) -> Self {
        self.webtransport = Some((certs, listener));
        self
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        let (certs, listener) = self.webtransport.unzip();
        let mut gateway = Gateway::assemble(self.config, self.bus, certs);
        gateway.webtransport = listener;
        gateway
    }
}

impl Gateway {
    /// A standalone gateway (in-memory bus) serving HTTP and WebSocket.
    pub fn new(config: Config) -> Self {
        Self::builder(config).build()
    }

    /// A gateway routing through `bus`.
    pub fn with_bus(config: Config, bus: Arc<dyn Bus>) -> Self {
        Self::builder(config).bus(bus).build()
    }

    /// A gateway with optional parts (bus, WebTransport).
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            bus: None,
            webtransport: None,
        }
    }

    /// Puts the parts together. Without an explicit bus, Redis is used when
    /// configured; the bus's events are applied to the hub by a pump task.
    fn assemble(config: Config, bus: Option<Arc<dyn Bus>>, certs: Option<Arc<Store>>) -> Self {
        let metrics = Arc::new(Metrics::new(&config.server_id, &config.region));
        metrics.limits(config.max_connections, config.drain_timeout);
        let bus_stop = CancellationToken::new();
        let (bus, events): (Arc<dyn Bus>, _) = match (bus, &config.redis) {
            (Some(bus), _) => (bus, None),
            (None, None) => (Arc::new(Standalone), None),
            (None, Some(r)) => {
                let settings = RedisSettings {
                    connection: r.connection.clone(),
                    cluster_nodes: r.cluster_nodes.clone(),
                    sentinel: r.sentinel.clone(),
                    tls: r.tls.clone(),
                    prefix: r.prefix.clone(),
                    pool_size: r.pool_size,
                    server: config.server_id.as_str().into(),
                    region: config.region.as_str().into(),
                    ws_url: config.public_ws_url.clone(),
                    wt_url: config.public_wt_url.clone(),
                    instance_ttl: r.instance_ttl,
                    resume_grace: config.resume_grace,
                    resume_buffer: config.resume_buffer,
                };
                match Redis::start(settings, metrics.clone(), bus_stop.clone()) {
                    Ok((redis, events)) => (Arc::new(redis), Some(events)),
                    Err(e) => {
                        // Validated at start-up; a failure here is a bug,
                        // and standalone is the safe fallback.
                        tracing::error!(error = %e, "redis bus could not start; running standalone");
                        (Arc::new(Standalone), None)
                    }
                }
            }
        };
        let hub = Arc::new(Hub::new(
            Settings {
                limits: config.limits,
                resume_buffer: config.resume_buffer,
                resume_grace: config.resume_grace,
            },
            metrics.clone(),
            bus,
        ));
        if let Some(mut events) = events {
            let hub = hub.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    hub.apply(event);
                }
            });
        }
        let (auth, ice) = (Auth::new(&config.auth), Ice::new(&config.ice));
        Self {
            shared: Arc::new(Shared {
                connections: Arc::new(Semaphore::new(config.max_connections)),
                admission: Arc::new(Admission::new(&config.admission)),
                refusals: RefusalLog::new(metrics.clone()),
                config,
                hub,
                metrics,
                drain: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                started: Instant::now(),
                certs,
                auth,
                ice,
                draining: AtomicBool::new(false),
                conn_ids: AtomicU64::new(1),
            }),
            webtransport: None,
            bus_stop,
        }
    }

    /// The shared state (for embedding and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves HTTP and WebSocket on `listener` (and WebTransport, when built
    /// with it) until `shutdown` resolves, then drains: `/ready` turns 503,
    /// sessions get `reconnect`, and the process returns once they have left
    /// or `DRAIN_TIMEOUT_MS` has passed (remaining connections are closed
    /// with 1001).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Self {
            shared,
            webtransport,
            bus_stop,
        } = self;
        let stop_accepting = CancellationToken::new();
        let metrics_server = match shared.config.metrics_addr {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("binding METRICS_ADDR {addr}: {e}"))
                })?;
                tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
                Some(tokio::spawn(http::serve_metrics(
                    listener,
                    shared.clone(),
                    stop_accepting.clone(),
                )))
            }
        };
        let server = tokio::spawn(http::serve(
            listener,
            shared.clone(),
            stop_accepting.clone(),
        ));
        let wt = webtransport.map(|listener| {
            tokio::spawn(webtransport::serve(
                listener,
                shared.clone(),
                stop_accepting.clone(),
            ))
        });
        tokio::spawn(shared.admission.clone().maintain(stop_accepting.clone()));
        if let Some(certs) = &shared.certs {
            certs
                .clone()
                .spawn_maintenance(CERT_CHECK, stop_accepting.clone());
        }
        shutdown.await;

        tracing::info!(
            timeout_ms = shared.config.drain_timeout.as_millis() as u64,
            "draining: telling clients to reconnect elsewhere"
        );
        shared.draining.store(true, Ordering::Relaxed);
        shared.metrics.drain_started(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        shared.drain.cancel();
        let deadline = Instant::now() + shared.config.drain_timeout;
        while Instant::now() < deadline && open_connections(&shared) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = open_connections(&shared);
        if left > 0 {
            tracing::info!(
                connections = left,
                "drain timeout: closing remaining connections"
            );
        }
        shared.shutdown.cancel();
        stop_accepting.cancel();
        shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), shared.tasks.wait()).await;
        if let Some(wt) = wt {
            // Lets the last WebTransport close capsules go out.
            let _ = tokio::time::timeout(Duration::from_secs(3), wt).await;
        }
        server.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        bus_stop.cancel();
        tracing::info!("stopped");
        Ok(())
    }
}

fn open_connections(shared: &Shared) -> usize {
    shared.config.max_connections - shared.connections.available_permits()
}
