//! The service as a whole: shared state, the listener loop, and graceful
//! shutdown (drain).

use crate::bus::{Bus, Health, Standalone};
use crate::config::Config;
use crate::http;
use crate::hub::{Hub, Settings};
use crate::metrics::Metrics;
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
}

/// A Pantheon gateway instance.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A standalone gateway (in-memory bus).
    pub fn new(config: Config) -> Self {
        Self::with_bus(config, Arc::new(Standalone))
    }

    /// A gateway routing through `bus`.
    pub fn with_bus(config: Config, bus: Arc<dyn Bus>) -> Self {
        let metrics = Arc::new(Metrics::new(&config.server_id, &config.region));
        let hub = Arc::new(Hub::new(
            Settings {
                limits: config.limits,
                resume_buffer: config.resume_buffer,
                resume_grace: config.resume_grace,
            },
            metrics.clone(),
            bus,
        ));
        Self {
            shared: Arc::new(Shared {
                connections: Arc::new(Semaphore::new(config.max_connections)),
                config,
                hub,
                metrics,
                drain: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                started: Instant::now(),
                draining: AtomicBool::new(false),
                conn_ids: AtomicU64::new(1),
            }),
        }
    }

    /// The shared state (for embedding and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then
    /// drains: `/ready` turns 503, sessions get `reconnect`, and the process
    /// returns once they have left or `DRAIN_TIMEOUT_MS` has passed (remaining
    /// connections are closed with 1001).
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let shared = self.shared;
        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn(http::serve(listener, shared.clone(), stop_accepting.clone()));
        shutdown.await;

        tracing::info!(
            timeout_ms = shared.config.drain_timeout.as_millis() as u64,
            "draining: telling clients to reconnect elsewhere"
        );
        shared.draining.store(true, Ordering::Relaxed);
        shared.drain.cancel();
        let deadline = Instant::now() + shared.config.drain_timeout;
        while Instant::now() < deadline && open_connections(&shared) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = open_connections(&shared);
        if left > 0 {
            tracing::info!(connections = left, "drain timeout: closing remaining connections");
        }
        shared.shutdown.cancel();
        stop_accepting.cancel();
        shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), shared.tasks.wait()).await;
        server.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

fn open_connections(shared: &Shared) -> usize {
    shared.config.max_connections - shared.connections.available_permits()
}
