//! Connection options.

use pantheon_protocol::{Resume, VERSION};
use std::time::Duration;

/// The subprotocol offered by default.
pub const SUBPROTOCOL: &str = "pantheon.v1";

/// How [`crate::Client::connect_with`] connects. Build it with struct update
/// syntax: `Options { token: Some(t), ..Options::default() }`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `hello.token`: a JWT or the legacy shared key.
    pub token: Option<String>,
    /// `hello.resume`: the session and `last_seq` from an earlier connection
    /// ([`crate::Handle::resume_info`]).
    pub resume: Option<Resume>,
    /// Offered in `Sec-WebSocket-Protocol`; default `Some("pantheon.v1")`.
    /// When the server selects none while one was offered, the upgrade fails.
    pub subprotocol: Option<String>,
    /// Sent as the `Origin` header.
    pub origin: Option<String>,
    /// `hello.id`, echoed by `welcome`; default none.
    pub hello_id: Option<u64>,
    /// `hello.v`; default `Some(1)`. Tests set other values to provoke
    /// `unsupported_version`.
    pub version: Option<u64>,
    /// Bounds TCP connect, upgrade and `hello` → `welcome` together;
    /// default 10 s.
    pub connect_timeout: Duration,
    /// How long [`crate::Client::close`] waits for the server's close
    /// frame before dropping the connection; default 5 s.
    pub close_timeout: Duration,
    /// Events buffered for [`crate::Client::next_event`]. When the buffer
    /// is full the client stops reading the socket, so a client that does
    /// not read its events is a slow consumer to the server (4009), as a
    /// real one would be. Default 1 024.
    pub event_buffer: usize,
    /// Messages queued for sending. When full, sending waits. Default 1 024.
    pub send_buffer: usize,
    /// The WebSocket read buffer, allocated per connection: large for
    /// throughput, small for many idle connections. Default 64 KiB.
    pub read_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            resume: None,
            subprotocol: Some(SUBPROTOCOL.to_owned()),
            origin: None,
            hello_id: None,
            version: Some(VERSION),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            event_buffer: 1024,
            send_buffer: 1024,
            read_buffer: 64 * 1024,
        }
    }
}
