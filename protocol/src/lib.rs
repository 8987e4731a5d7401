//! Pantheon signaling protocol, version 1 — the wire contract, sans-I/O.
//!
//! No sockets, no async runtime, no clocks: only what both transports and
//! every client share.
//!
//! - [`message`]: every message as a typed value ([`ClientMessage`],
//!   [`Request`], [`ServerMessage`]).
//! - [`codec`]: JSON decoding with `id`-preserving rejections
//!   ([`decode_client`]), encoding with per-recipient `seq` ([`encode_server`],
//!   [`with_seq`]), and the client-side counterparts.
//! - [`ndjson`]: line framing for the WebTransport stream ([`LineDecoder`]).
//! - [`types`]: validated fields ([`RoomName`], [`PeerId`], [`Meta`], [`Data`])
//!   and [`Limits`].
//! - [`codes`]: [`ErrorCode`] and [`CloseCode`], the one place they are named.
//! - [`transport`]: the seam between transports and the session
//!   ([`Inbound`], [`Outbound`]).

pub mod codec;
pub mod codes;
pub mod message;
pub mod ndjson;
pub mod transport;
pub mod types;

pub use codec::{
    DecodeError, Received, Rejection, decode_client, decode_server, encode_client, encode_server,
    peek_id, with_seq,
};
pub use codes::{CloseCode, ErrorCode};
pub use message::{
    ClientMessage, IceServer, LeaveReason, PeerInfo, Region, Request, RequestKind, Resume,
    ServerKind, ServerMessage, VERSION, Welcome,
};
pub use ndjson::{LineDecoder, LineTooLong};
pub use transport::{Inbound, Outbound};
pub use types::{Data, FieldError, Limits, MAX_ID, Meta, PeerId, RoomName};
