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
    /// WebSocket only (a WebTransport URL carries the version as `?v=1`).
    pub subprotocol: Option<String>,
    /// Sent as the `Origin` header (of the WebSocket upgrade, or of the
    /// WebTransport extended CONNECT).
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
    /// throughput, small for many idle connections. Default 64 KiB. Over
    /// WebTransport, the most read from the control stream at once
    /// (between 1 KiB and 64 KiB).
    pub read_buffer: usize,
    /// Trust a server whose certificate has one of these SHA-256 digests
    /// (of the DER certificate), as a browser's `serverCertificateHashes`
    /// does: over WebTransport, and over `wss://` too. Over WebTransport
    /// the certificate must then also be ECDSA P-256 and valid for at most
    /// 14 days; the gateway's self-signed one is, and serves its hash at
    /// `/webtransport/cert-hash` ([`crate::fetch_cert_hash`]). When empty
    /// (the default), the server's certificate is verified against the
    /// system's root certificates (and its name against the URL's host).
    pub cert_hashes: Vec<[u8; 32]>,
    /// Accept any server certificate, over WebTransport and `wss://`. For
    /// tests only: it gives up on knowing who the server is.
    pub insecure_skip_verify: bool,
    /// WebTransport: connect from this shared endpoint (its certificate
    /// trust applies, not `cert_hashes`/`insecure_skip_verify`) instead of a
    /// new one per connection.
    pub wt_endpoint: Option<crate::WtEndpoint>,
}

impl Options {
    /// Default options that accept any server certificate
    /// ([`Options::insecure_skip_verify`]). For tests only.
    pub fn insecure() -> Self {
        Self {
            insecure_skip_verify: true,
            ..Self::default()
        }
    }

    /// Default options that trust the server certificate with
    /// this SHA-256 digest ([`Options::cert_hashes`]).
    pub fn with_cert_hash(hash: [u8; 32]) -> Self {
        Self {
            cert_hashes: vec![hash],
            ..Self::default()
        }
    }
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
            cert_hashes: Vec::new(),
            insecure_skip_verify: false,
            wt_endpoint: None,
        }
    }
}
