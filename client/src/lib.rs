//! Rust client for the Pantheon signaling protocol (PROTOCOL.md), used by
//! the gateway's integration tests, the load generator and applications.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pantheon_client::Error> {
//! use pantheon_client::{Client, Event};
//! use pantheon_protocol::ServerMessage;
//! use serde_json::json;
//!
//! // WebSocket...
//! let mut alice = Client::connect("ws://127.0.0.1:3000/ws").await?;
//! // ... or WebTransport, trusting the gateway's self-signed certificate
//! // by its hash as a browser's `serverCertificateHashes` does.
//! let hash = pantheon_client::fetch_cert_hash("http://127.0.0.1:3000").await?;
//! let bob = Client::connect_with(
//!     "https://127.0.0.1:3000/wt",
//!     pantheon_client::Options::with_cert_hash(hash),
//! )
//! .await?;
//! alice.join("room-1", None).await?;
//! bob.join("room-1", Some(json!({"name": "bob"}))).await?;
//! bob.signal("room-1", alice.peer(), json!({"sdp": "..."})).await?;
//! while let Some(event) = alice.next_event().await {
//!     match event {
//!         Event::Message { message: ServerMessage::Signal { from, data, .. }, .. } => {
//!             println!("{from}: {data:?}");
//!             break;
//!         }
//!         Event::Message { .. } => {}
//!         Event::Closed { code, .. } => panic!("closed with {code:?}"),
//!     }
//! }
//! alice.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Modules and types
//!
//! - [`Client`] (`client`): connects over the transport the URL selects
//!   ([`Transport`]: `ws://` or `wss://` WebSocket, `https://` WebTransport), says
//!   `hello` → `welcome` (optionally resuming), yields [`Event`]s, closes with a code or drops the
//!   connection ([`Client::abort`]) to exercise resume.
//! - [`Handle`] (`client`): the cloneable request side. Typed requests
//!   (`join`, `leave`, `signal`, `broadcast`, `update`, `peers`, `ping`)
//!   allocate an `id` and resolve to the reply; `*_no_ack`, [`Handle::send`]
//!   and `send_raw_*` send without waiting. It also exposes `seq` tracking:
//!   [`Handle::last_seq`], [`Handle::seq_errors`], [`Handle::resume_info`].
//! - [`Options`] (`options`): token, resume, subprotocol, `Origin`, `hello`
//!   id and version, timeouts, buffer sizes, certificate trust for
//!   WebTransport and `wss://` ([`fetch_cert_hash`] gets the gateway's self-signed one).
//! - [`Event`] (`event`), [`Error`] and [`CloseInfo`] (`error`),
//!   [`SeqError`] (`seq`).
//! - [`IntoRoom`], [`IntoPeer`], [`IntoData`] (`fields`): request arguments
//!   as `&str`/JSON values, or pre-validated values for hot loops.
//! - [`raw`]: bare WebSocket frames, and bare sessions over either
//!   transport, for tests of bad input and close codes.
//!
//! # Inside
//!
//! `transport` is the seam: a transport is a `Sink` of outgoing text
//! messages and close requests plus a `Stream` of incoming text messages and
//! the close code. `ws` implements it over WebSocket (tokio-tungstenite),
//! `wt` over WebTransport (wtransport: NDJSON lines on one bidirectional
//! stream, the session close code as the close). `connection` runs the session over any transport: the
//! handshake, a reader task that checks `seq` and routes replies to waiting
//! requests by `id` (`pending`) and everything else to the bounded event
//! queue, and a writer task that feeds every queued message and flushes once
//! per batch.

mod client;
mod connection;
mod error;
mod event;
mod fields;
mod options;
mod pending;
pub mod raw;
mod seq;
#[cfg(test)]
mod tests;
mod tls;
mod transport;
mod ws;
mod wt;

pub use client::{Client, Handle};
pub use error::{CloseInfo, Error};
pub use event::Event;
pub use fields::{IntoData, IntoPeer, IntoRoom};
pub use options::{Options, SUBPROTOCOL};
pub use seq::SeqError;
pub use transport::Transport;
pub use wt::{WtEndpoint, fetch_cert_hash};

/// The protocol crate, re-exported so users name the same types.
pub use pantheon_protocol as protocol;
