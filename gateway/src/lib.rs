//! The Pantheon signaling gateway.
//!
//! - [`config`]: every setting, from flags and environment, validated at
//!   start-up ([`Config`]).
//! - [`gateway`]: the service ([`Gateway`]): listener, shared state, drain.
//! - [`http`]: `/health`, `/ready`, `/metrics`, `/regions`,
//!   `/webtransport/cert-hash`, and the WebSocket upgrade.
//! - [`regions`]: the deployment's regions and their public URLs, from the
//!   instance directory.
//! - [`webtransport`]: the QUIC listener ([`webtransport::Listener`]) that
//!   feeds WebTransport sessions to the same session loop.
//! - [`legacy`]: `/socket.io/`, the old server's Socket.IO clients as one
//!   more transport of the session loop.
//! - [`session`]: the one session loop every transport feeds.
//! - [`hub`]: this instance's rooms and sessions and the membership rules.
//! - [`peer`]: one session's `seq`, replay buffer and attached connection.
//! - [`bus`]: cross-instance routing ([`bus::Bus`]; [`bus::Standalone`]).
//! - [`limit`]: per-connection rate limiting.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: logging setup.

pub mod bus;
pub mod config;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod legacy;
pub mod limit;
pub mod metrics;
pub mod peer;
pub mod regions;
pub mod session;
pub mod telemetry;
pub mod webtransport;

pub use config::Config;
pub use gateway::Gateway;
