//! Test support for Pantheon's multi-instance tests: real processes on free
//! loopback ports, never mocks.
//!
//! - [`Redis`] (`redis`): one `redis-server` with no persistence, optionally
//!   with a password and TLS (server-only or mutual), killed on drop; it can
//!   be SIGKILLed and restarted empty on the same port, and hands out the
//!   `REDIS_*` variables a gateway needs to reach it.
//! - [`RedisCluster`] (`cluster`): a local cluster of masters, created with
//!   `redis-cli --cluster create`, ready once every node says
//!   `cluster_state:ok`.
//! - [`Sentinels`] (`sentinel`): a primary, replicas and `redis-server
//!   --sentinel` processes watching them, ready once every sentinel knows
//!   the others and the replicas; the primary can be SIGKILLed or failed
//!   over by hand, and the promotion awaited.
//! - [`Pki`] (`tls`): a throw-away CA with a server certificate for
//!   `127.0.0.1`/`localhost` and a client certificate, written as PEM files.
//! - [`resp::Conn`] (`resp`): a small RESP client (plain or TLS) for what the
//!   tests ask Redis themselves: `PING`, `CLUSTER INFO`, `SCAN` + `PTTL`.
//! - [`Gateway`] (`gateway`): the `pantheon` binary as a child process on
//!   free ports with a given environment, its log captured to a file (and
//!   printed when a test fails), `SIGKILL`/`SIGTERM`, and a bare HTTP/1.1
//!   client for `/health`, `/ready` and `/metrics`.
//! - [`DelayProxy`] (`proxy`): a loopback TCP proxy that holds every chunk
//!   for a fixed time in each direction, standing for a remote region.
//! - `port`: free loopback ports.
//! - [`infra`]: the operations tools the `infra/` tests run (promtool,
//!   haproxy, kubectl, ...), found where `scripts/infra-tools` installs them.
//! - [`Proc`]: any child process, its output captured to a file, killed on
//!   drop.

mod cluster;
mod gateway;
pub mod infra;
mod port;
mod process;
mod proxy;
mod redis;
pub mod resp;
mod sentinel;
mod tls;

pub use cluster::RedisCluster;
pub use gateway::{Exited, Gateway, GatewayBuilder, HttpResponse, Wait, http_request, metric_sum};
pub use port::{free_tcp_port, free_tcp_ports, free_udp_port};
pub use process::{Proc, tail};
pub use proxy::DelayProxy;
pub use redis::{Redis, RedisOptions, RedisTls};
pub use sentinel::{SENTINEL_MASTER, SentinelTiming, Sentinels};
pub use tls::Pki;

use std::time::Duration;

/// Polls `cond` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut cond: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
