//! The Pantheon signaling gateway.
//!
//! - [`admission`]: per-client-address connection limits, trusted proxies
//!   (`X-Forwarded-For`, PROXY protocol), and the refusal log.
//! - [`config`]: every setting, from flags and environment, validated at
//!   start-up ([`Config`]).
//! - [`gateway`]: the service ([`Gateway`]): listener, shared state, drain.
//! - [`http`]: `/health`, `/ready`, `/metrics`, `/regions`,
//!   `/turn-token`, `/webtransport/cert-hash`, and the WebSocket upgrade.
//! - [`regions`]: the deployment's regions and their public URLs, from the
//!   instance directory.
//! - `assets`: the demo page (`/`) and the SDK bundle (`/sdk/pantheon.js`),
//!   compiled in from `sdk/`.
//! - [`webtransport`]: the QUIC listener ([`webtransport::Listener`]) that
//!   feeds WebTransport sessions to the same session loop.
//! - [`legacy`]: `/socket.io/`, the old server's Socket.IO clients as one
//!   more transport of the session loop.
//! - [`session`]: the one session loop every transport feeds.
//! - [`hub`]: this instance's rooms and sessions and the membership rules.
//! - [`peer`]: one session's `seq`, replay buffer and attached connection.
//! - [`bus`]: cross-instance routing ([`bus::Bus`]; [`bus::Standalone`]).
//! - [`auth`]: token verification ([`auth::Auth::verify`] → [`auth::Grant`]).
//! - [`ice`]: STUN/TURN servers and TURN REST API credentials.
//! - [`limit`]: per-connection rate limiting.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: logging setup.

pub mod admission;
mod assets;
pub mod auth;
pub mod bus;
pub mod config;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod ice;
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
