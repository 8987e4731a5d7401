//! The seam between the client and a transport.
//!
//! A transport is a [`Sink`] of [`Outgoing`] and a [`Stream`] of
//! [`Incoming`]: text messages in, text messages out, and a close code at the
//! end. The WebSocket transport ([`crate::ws`]) maps frames onto it; a
//! WebTransport transport would map NDJSON lines on its bidirectional stream
//! and the session close code the same way, and the session logic
//! ([`crate::connection`]) stays as it is.

use crate::error::{CloseInfo, Error};
use bytes::Bytes;
use futures_util::{Sink, Stream};

/// One thing for the transport to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One protocol message (one text frame, one NDJSON line).
    Text(String),
    /// A WebSocket binary frame: never valid protocol, sent only by tests.
    Binary(Vec<u8>),
    /// Close the connection with this code and reason.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// One thing the transport received.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// One protocol message.
    Text(Bytes),
    /// Something that is not protocol (a WebSocket binary frame).
    Binary,
    /// The peer closed the connection; nothing follows.
    Closed(CloseInfo),
}

/// The sending half of a transport.
pub(crate) trait TransportSink:
    Sink<Outgoing, Error = Error> + Send + Unpin + 'static
{
}
impl<T: Sink<Outgoing, Error = Error> + Send + Unpin + 'static> TransportSink for T {}

/// The receiving half of a transport. A stream that ends without
/// [`Incoming::Closed`] means the connection was lost.
pub(crate) trait TransportStream:
    Stream<Item = Result<Incoming, Error>> + Send + Unpin + 'static
{
}
impl<T: Stream<Item = Result<Incoming, Error>> + Send + Unpin + 'static> TransportStream for T {}
