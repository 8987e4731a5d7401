//! WebTransport (HTTP/3 over QUIC) on UDP `WT_PORT`, path `/wt`.
//!
//! quinn and web-transport-quinn live only here (see
//! docs/webtransport-crate-choice.md for why that crate). [`Listener::bind`]
//! builds the QUIC endpoint: TLS from the `pantheon-certs` store with ALPN
//! `h3`, a transport sized for signaling ([`transport`]). [`serve`] accepts
//! sessions, vets each extended CONNECT (path, `?v=`, `Origin`, drain,
//! `MAX_CONNECTIONS`), and hands the session's control stream — as the same
//! `Stream<Inbound>` + `Sink<Outbound>` seam WebSocket uses — to the one
//! session loop (module `control`).
//!
//! Refusals answer the CONNECT with an HTTP status: 404 for another path, 400
//! for a `v` query parameter other than `1`, 403 for an `Origin` outside
//! `ALLOWED_ORIGINS`, 429 over `CONN_RATE_PER_IP` or
//! `MAX_CONNECTIONS_PER_IP` (web-transport-quinn answers a status only, so
//! there is no `Retry-After`), 503 while draining. Over `MAX_CONNECTIONS`
//! the QUIC connection itself is refused, before its handshake; so is one
//! from an address that already has `MAX_CONNECTIONS_PER_IP` connections
//! that are not sessions yet (handshakes, or waiting for their CONNECT).
//! With more than [`RETRY_ABOVE_HANDSHAKES`] QUIC handshakes in progress, a
//! new client must first answer a Retry, which a forged address cannot. The
//! client
//! address is the UDP peer's (QUIC carries no PROXY header), or the
//! CONNECT's `X-Forwarded-For` when that peer is a trusted proxy.

mod control;

use crate::admission::{Refused, Slot};
use crate::config::Config;
use crate::gateway::Shared;
use crate::metrics::Transport;
use crate::session::{self, TransportKind};
use pantheon_certs::Store;
use quinn::crypto::rustls::QuicServerConfig;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use web_transport_quinn::http::{HeaderMap, StatusCode, header};
use web_transport_quinn::proto::ConnectRequest;

/// The path sessions open.
pub const PATH: &str = "/wt";

/// Most concurrent bidirectional streams a client may open: the CONNECT
/// stream, the control stream, and two more so that extra streams are
/// refused one by one instead of stalling the client.
const MAX_BIDI_STREAMS: u32 = 4;
/// Most concurrent unidirectional streams: HTTP/3 control, QPACK encoder and
/// decoder, and two more to refuse.
const MAX_UNI_STREAMS: u32 = 5;
/// Datagrams are not part of protocol v1, but HTTP/3 datagram support must be
/// negotiated for browsers to open a session (RFC 9297 §2.1.1), so quinn
/// needs a receive buffer; incoming datagrams are read and dropped.
const DATAGRAM_BUFFER: usize = 2048;
/// QUIC handshakes in progress above which a client must first prove its
/// address with a Retry round trip (RFC 9000 §8.1.2). A handshake from a
/// forged address can never complete; without this a flood of Initial
/// packets from forged addresses (which no per-address limit can see)
/// would hold `MAX_CONNECTIONS` permits for `HTTP_HEADER_TIMEOUT_MS` each.
/// Below it, clients pay no extra round trip.
pub const RETRY_ABOVE_HANDSHAKES: usize = 64;

/// A bound WebTransport endpoint, not yet serving.
#[derive(Debug, Clone)]
pub struct Listener {
    endpoint: quinn::Endpoint,
}

impl Listener {
    /// Binds UDP `addr` (`[::]` is dual-stack, like the TCP listener), with
    /// TLS from `certs` and the transport limits derived from `config`.
    /// Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr, certs: &Arc<Store>, config: &Config) -> io::Result<Self> {
        let tls = certs.server_config(&[web_transport_quinn::ALPN.as_bytes()]);
        let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(io::Error::other)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport(config)));
        let socket = udp_socket(addr)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| io::Error::other("WebTransport needs a tokio runtime"))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )?;
        Ok(Self { endpoint })
    }

    /// The bound address (the port, when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Asked-for size of the UDP socket's kernel buffers.
const UDP_BUFFER: usize = 4 << 20;

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `localhost` makes browsers try ::1 first; serve IPv4 on the same
        // socket whatever the system default.
        socket.set_only_v6(false)?;
    }
    // Every client shares this one socket: a burst from many of them must
    // not overflow the default (~200 KiB) buffer, or the kernel drops
    // datagrams and QUIC recovers them a round trip later. The kernel caps
    // the size at net.core.rmem_max / wmem_max; that is not an error.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// QUIC transport settings for signaling: small flow-control windows (a
/// client cannot make the gateway buffer more than about one message per
/// stream), few streams, keep-alive and idle timeout from the PING settings.
pub fn transport(config: &Config) -> quinn::TransportConfig {
    let stream_window = config.limits.max_message_bytes.max(16 * 1024) as u32;
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(stream_window.into())
        // The control stream plus the HTTP/3 streams; refused streams are
        // stopped at once and hold no credit.
        .receive_window((2 * stream_window + 16 * 1024).into())
        .send_window(4 * u64::from(stream_window))
        .max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .max_idle_timeout(quinn::IdleTimeout::try_from(config.ping_timeout).ok())
        .keep_alive_interval(Some(keep_alive(config.ping_interval, config.ping_timeout)));
    t
}

/// The QUIC keep-alive interval: `PING_INTERVAL_MS`, but short enough for
/// the client's idle timer. Chromium closes a connection after the
/// negotiated idle timeout *minus one second* without network activity
/// (seen as "No recent network activity after 504746us. Timeout:500ms" with
/// a 1.5 s idle timeout), so the server must be heard well within that.
fn keep_alive(interval: Duration, idle: Duration) -> Duration {
    const CLIENT_MARGIN: Duration = Duration::from_secs(1);
    let client_idle = if idle > CLIENT_MARGIN {
        idle - CLIENT_MARGIN
    } else {
        idle
    };
    interval.min(client_idle / 2)
}

const T: Transport = Transport::webtransport;

/// Accepts WebTransport sessions until `stop` is cancelled, then refuses new
/// connections and waits (boundedly) for the sessions' close frames to go
/// out.
pub async fn serve(listener: Listener, shared: Arc<Shared>, stop: CancellationToken) {
    let endpoint = listener.endpoint;
    let handshakes = Handshakes::default();
    loop {
        let incoming = tokio::select! {
            () = stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let peer = incoming.remote_address().ip().to_canonical();
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && handshakes.in_progress() >= RETRY_ABOVE_HANDSHAKES
        {
            // Not a refusal: a real client answers and comes back validated.
            tracing::debug!(%peer, "QUIC Retry: many handshakes in progress");
            let _ = incoming.retry();
            continue;
        }
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            shared.refusals.refused(T, "max_connections", Some(peer));
            incoming.refuse();
            continue;
        };
        // Until its session is established the connection counts against
        // its address's MAX_CONNECTIONS_PER_IP among the connections that
        // are not sessions (a trusted proxy is not counted).
        let pending = match shared.admission.hold_pending(peer) {
            Ok(slot) => slot,
            Err(refused) => {
                shared.refusals.refused(T, refused.reason(), Some(peer));
                incoming.refuse();
                continue;
            }
        };
        let s = shared.clone();
        let handshake = handshakes.start();
        shared
            .tasks
            .spawn(admit(incoming, s, permit, pending, handshake));
    }
    endpoint.set_server_config(None);
    shared.tasks.wait().await;
    // Sessions close with a capsule and wait for the client's answer; let
    // that finish before the process exits.
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// Counts QUIC handshakes in progress.
#[derive(Debug, Default, Clone)]
struct Handshakes(Arc<std::sync::atomic::AtomicUsize>);

impl Handshakes {
    fn in_progress(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One more, until the returned guard is dropped.
    fn start(&self) -> Handshake {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Handshake(self.0.clone())
    }
}

/// One QUIC handshake in progress.
#[derive(Debug)]
struct Handshake(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why a CONNECT is refused.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    /// The metrics label.
    reason: &'static str,
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: r.reason(),
        }
    }
}

/// Completes the QUIC and HTTP/3 handshakes, vets the CONNECT, and serves the
/// session. Holds `permit` for as long as the connection lives, `pending`
/// until the session is established, and `quic` until the QUIC handshake
/// is over. The whole of it, QUIC and HTTP/3 handshakes and the CONNECT,
/// must be done within `HTTP_HEADER_TIMEOUT_MS`.
async fn admit(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    pending: Option<Slot>,
    quic: Handshake,
) {
    let limit = shared.config.http_header_timeout;
    let peer = incoming.remote_address().ip().to_canonical();
    let deadline = tokio::time::Instant::now() + limit;
    let refused = |reason| shared.refusals.refused(T, reason, Some(peer));
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::debug!(%error, "QUIC handshake failed");
            return refused("handshake");
        }
        // Dropping the handshake abandons it.
        Err(_) => return refused("handshake_timeout"),
    };
    drop(quic);
    let request =
        match tokio::time::timeout_at(deadline, web_transport_quinn::Request::accept(conn.clone()))
            .await
        {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                tracing::debug!(%error, "WebTransport handshake failed");
                conn.close(0u32.into(), b"handshake");
                return refused("handshake");
            }
            Err(_) => {
                // Closed explicitly: tasks of the HTTP/3 layer may still hold
                // the connection.
                conn.close(0u32.into(), b"handshake timeout");
                return refused("handshake_timeout");
            }
        };
    let client = shared.admission.client_ip(peer, &request.headers);
    // Every attempt counts against the rate, whatever becomes of it.
    let verdict = shared
        .admission
        .attempt(client)
        .map_err(Refusal::from)
        .and_then(|()| vet(&request, &shared))
        .and_then(|()| shared.admission.hold(client).map_err(Refusal::from));
    let slot = match verdict {
        Ok(slot) => slot,
        Err(refusal) => {
            shared.refusals.refused(T, refusal.reason, Some(client));
            let conn = request.conn().clone();
            let _ = tokio::time::timeout(limit, request.reject(refusal.status)).await;
            // The client closes once it has the answer; closing first could
            // discard the answer.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
            conn.close(0u32.into(), refusal.reason.as_bytes());
            return;
        }
    };
    let session = match tokio::time::timeout(limit, request.ok()).await {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            tracing::debug!(%error, "WebTransport CONNECT response failed");
            shared.refusals.refused(T, "handshake", Some(client));
            return;
        }
        Err(_) => {
            shared
                .refusals
                .refused(T, "handshake_timeout", Some(client));
            return;
        }
    };
    drop(pending);
    let max_line = shared.config.limits.max_frame_bytes();
    let (incoming, outgoing) = control::split(session, max_line, shared.tasks.clone());
    let kind = TransportKind {
        transport: Transport::webtransport,
        keepalive: false,
    };
    session::serve(shared, incoming, outgoing, kind).await;
    drop((permit, slot));
}

fn vet(request: &ConnectRequest, shared: &Shared) -> Result<(), Refusal> {
    check(
        request.url.path(),
        request.url.query(),
        &request.headers,
        shared.config.allowed_origins.as_deref(),
        shared.is_draining(),
    )
}

fn check(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    allowed_origins: Option<&[String]>,
    draining: bool,
) -> Result<(), Refusal> {
    if path != PATH {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            reason: "not_found",
        });
    }
    let mut pairs = query
        .unwrap_or("")
        .split('&')
        .map(|p| p.split_once('=').unwrap_or((p, "")));
    if pairs.any(|(k, v)| k == "v" && v != "1") {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "version",
        });
    }
    // As for WebSocket: a request without `Origin` is not from a browser and
    // is admitted.
    if let (Some(allowed), Some(origin)) = (allowed_origins, headers.get(header::ORIGIN)) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if !ok {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                reason: "origin",
            });
        }
    }
    if draining {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "draining",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use web_transport_quinn::http::HeaderValue;

    fn vet_url(
        path_and_query: &str,
        origin: Option<&str>,
        allowed: Option<&[String]>,
        draining: bool,
    ) -> Result<(), StatusCode> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut headers = HeaderMap::new();
        if let Some(o) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        check(path, query, &headers, allowed, draining).map_err(|r| r.status)
    }

    #[test]
    fn keep_alive_stays_within_the_clients_idle_timer() {
        let ms = Duration::from_millis;
        // The defaults: PING_INTERVAL_MS as it is.
        assert_eq!(keep_alive(ms(25_000), ms(60_000)), ms(25_000));
        // Chromium's timer for a 1.5 s idle timeout is 0.5 s.
        assert_eq!(keep_alive(ms(500), ms(1_500)), ms(250));
        assert_eq!(keep_alive(ms(100), ms(600)), ms(100));
        assert_eq!(keep_alive(ms(500), ms(600)), ms(300));
    }

    #[test]
    fn path_version_origin_and_drain() {
        let allowed = ["https://app.example".to_owned()];
        let allowed = Some(&allowed[..]);
        assert_eq!(vet_url("/wt", None, None, false), Ok(()));
        assert_eq!(vet_url("/wt?v=1", Some("https://x"), None, false), Ok(()));
        assert_eq!(
            vet_url("/ws", None, None, false),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            vet_url("/wt/", None, None, false),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            vet_url("/wt?v=2", None, None, false),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            vet_url("/wt?a=b&v=1", Some("https://APP.example"), allowed, false),
            Ok(())
        );
        assert_eq!(
            vet_url("/wt", Some("https://evil.example"), allowed, false),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(vet_url("/wt", None, allowed, false), Ok(()));
        assert_eq!(
            vet_url("/wt", None, None, true),
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}
