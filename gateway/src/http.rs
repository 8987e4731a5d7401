//! HTTP on `PORT`: `/health`, `/ready`, `/metrics` (unless `METRICS_ADDR`
//! moves it to a listener of its own), `/turn-token`, `/regions`, the WebSocket upgrade
//! at `/ws`, `/webtransport/cert-hash`, the legacy Socket.IO endpoint `/socket.io/`
//! ([`crate::legacy`]), and the demo page (`/`) and SDK bundle
//! (`/sdk/pantheon.js`) from the `assets` module, served by hyper with a header-read
//! timeout so a slow or silent client cannot hold a connection open before
//! its request has arrived.
//!
//! Each connection learns its client address first ([`Remote`]: the TCP
//! peer, or what a trusted proxy's PROXY header names); the WebSocket
//! upgrade then applies the per-address limits of [`crate::admission`] and
//! answers 429 with `Retry-After` over them, before upgrading.

use crate::admission::{Refused, proxy};
use crate::gateway::Shared;
use crate::metrics::Transport;
use crate::session::{self, TransportKind};
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use pantheon_fallback_ws::{self as ws, Upgrade};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Where a request came from: the TCP peer, or the client a trusted proxy's
/// PROXY protocol header named (`X-Forwarded-For` is applied per request).
/// Put in every request's extensions by [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote(pub IpAddr);

/// The router for `PORT`.
pub fn router(shared: Arc<Shared>) -> Router {
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // Named explicitly: a `*` does not cover `Authorization` in browsers.
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_origin(match &shared.config.allowed_origins {
            None => AllowOrigin::any(),
            Some(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            ),
        });
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/regions", get(regions));
    let router = match shared.config.metrics_addr {
        None => router.route("/metrics", get(metrics)),
        Some(_) => router,
    };
    router
        .route("/ws", get(websocket))
        .route("/turn-token", post(turn_token))
        .route("/webtransport/cert-hash", get(cert_hash))
        .merge(crate::assets::routes())
        .layer(crate::legacy::layer(&shared))
        .layer(cors)
        .with_state(shared)
}

/// The router for `METRICS_ADDR`: `/metrics` alone.
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Accepts connections until `stop` is cancelled.
/// Serves HTTP/1.1 (and WebSocket upgrades) on `listener` — over TLS
/// (`https://`, `wss://`) when `TLS_CERT`/`TLS_KEY` are configured, with the
/// same hot-reloaded certificate as WebTransport.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = router(shared.clone());
    let tls = match (&shared.config.tls, &shared.certs) {
        (Some(_), Some(store)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            store.server_config(&[b"http/1.1"]),
        ))),
        _ => None,
    };
    accept(listener, app, tls, shared, stop).await;
}

/// Serves `/metrics` alone on `listener` (`METRICS_ADDR`), in plain HTTP,
/// until `stop` is cancelled: through the drain, so a stuck drain shows.
pub async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = metrics_router(shared.clone());
    accept(listener, app, None, shared, stop).await;
}

async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let header_timeout = shared.config.http_header_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let peer = peer.ip().to_canonical();
            // Only a trusted proxy may put a PROXY header in front.
            let (remote, stream) = if shared.admission.trusts(peer) {
                match tokio::time::timeout(header_timeout, proxy::read(stream)).await {
                    Ok(Ok((named, stream))) => (named.unwrap_or(peer), stream),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "PROXY protocol header refused");
                        shared
                            .refusals
                            .refused(Transport::websocket, "proxy_protocol", Some(peer));
                        return;
                    }
                    Err(_) => {
                        shared
                            .refusals
                            .refused(Transport::websocket, "header_timeout", Some(peer));
                        return;
                    }
                }
            } else {
                (peer, proxy::Prefixed::new(Default::default(), stream))
            };
            // Until it is upgraded to a WebSocket (or closes), the
            // connection counts against its address's
            // MAX_CONNECTIONS_PER_IP among the connections that are not
            // sessions: many silent or slow connections from one address
            // are refused here instead of waiting out the header timeout.
            // (A trusted proxy without a PROXY header is not counted.)
            let pending = match shared.admission.hold_pending(remote) {
                Ok(slot) => slot,
                Err(refused) => {
                    shared
                        .refusals
                        .refused(Transport::websocket, refused.reason(), Some(remote));
                    if tls.is_none() {
                        refuse_early(stream.get_ref(), refused);
                    }
                    return;
                }
            };
            let remote = Remote(remote);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(remote);
                app.clone().oneshot(req)
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .to_owned();
            let result = match tls {
                None => {
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
                Some(acceptor) => {
                    // The handshake counts against the header timeout too.
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                shared.refusals.refused(
                                    Transport::websocket,
                                    "header_timeout",
                                    Some(remote.0),
                                );
                                return;
                            }
                        };
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            drop(pending);
            match result {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    shared
                        .refusals
                        .refused(Transport::websocket, "header_timeout", Some(remote.0));
                }
                Err(e) => tracing::debug!(error = %e, "http connection ended with an error"),
            }
        });
    }
}

/// Answers 429 to a connection refused before any of its request was read,
/// if the socket takes the few bytes at once (a fresh connection's send
/// buffer does); the connection is closed either way.
fn refuse_early(stream: &tokio::net::TcpStream, refused: Refused) {
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        refused.retry_after_secs()
    );
    let _ = stream.try_write(answer.as_bytes());
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let (rooms, peers) = shared.hub.counts();
    let m = &shared.metrics;
    let body = json!({
        "status": if shared.is_draining() { "draining" } else { "ok" },
        "server": shared.config.server_id,
        "region": shared.config.region,
        "uptime_s": shared.started.elapsed().as_secs(),
        "connections": {
            "websocket": m.connections(Transport::websocket).get(),
            "webtransport": m.connections(Transport::webtransport).get(),
            "socketio": m.connections(Transport::socketio).get(),
        },
        "rooms": rooms,
        "peers": peers,
        "redis": shared.hub.bus().health().as_str(),
    });
    axum::Json(body).into_response()
}

/// The regions of the deployment and where clients reach each
/// (docs/protocol.md).
async fn regions(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "self": shared.config.region,
        "regions": shared.regions(),
    }))
    .into_response()
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match shared.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"ready": true}))).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reason": why})),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.render_metrics(),
    )
        .into_response()
}

/// The SHA-256 of the self-signed WebTransport certificate, for
/// `serverCertificateHashes` (PROTOCOL.md §8); 404 with a certificate from
/// files or without WebTransport.
async fn cert_hash(State(shared): State<Arc<Shared>>) -> Response {
    match shared.certs.as_ref().and_then(|c| c.current_hash()) {
        // Rotation replaces it: never cache past the certificate's life.
        Some(hash) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(hash)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no self-signed WebTransport certificate",
        )
            .into_response(),
    }
}

/// `POST /turn-token` (PROTOCOL.md §8): fresh ICE servers and TURN
/// credentials. With authentication on it needs `Authorization: Bearer
/// <AUTH_KEY or JWT>` (else 401); the TURN user part is the token's `sub`
/// when it is a plain name, or an anonymous random one.
async fn turn_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    let grant = match shared.auth.verify(bearer) {
        Ok(grant) => grant,
        Err(e) => {
            shared.metrics.auth_failure(e.reason());
            tracing::info!(reason = e.reason(), "/turn-token refused: {e}");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "unauthorized", "message": e.to_string()})),
            )
                .into_response();
        }
    };
    let user = match grant.subject() {
        Some(sub) if is_plain_name(sub) => sub.to_owned(),
        _ => {
            let n: [u8; 8] = rand::random();
            format!(
                "anon-{}",
                n.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    };
    let body = json!({
        "ice_servers": shared.ice.servers(&user, std::time::SystemTime::now()),
        "ttl": shared.ice.ttl().as_secs(),
    });
    // Credentials: never cached by anything in between.
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// A `sub` usable as a TURN user name as it is: 1–128 bytes of
/// `[A-Za-z0-9._@+-]` (no `:`, which separates the expiry in the username).
fn is_plain_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// 429 with `Retry-After`, for a client address over its limits.
fn too_many(refused: Refused) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, refused.retry_after_secs().to_string())],
        match refused {
            Refused::Rate(_) => "too many connection attempts from this address",
            Refused::Concurrent => "too many connections from this address",
        },
    )
        .into_response()
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    remote: Option<Extension<Remote>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    const T: Transport = Transport::websocket;
    let client = remote.map(|Extension(Remote(ip))| shared.admission.client_ip(ip, &headers));
    if shared.is_draining() {
        shared.refusals.refused(T, "draining", client);
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // Every attempt counts against the rate, whatever becomes of it.
    if let Some(Err(refused)) = client.map(|ip| shared.admission.attempt(ip)) {
        shared.refusals.refused(T, refused.reason(), client);
        return too_many(refused);
    }
    let options = ws::Options {
        max_frame_bytes: shared.config.limits.max_frame_bytes(),
        allowed_origins: shared.config.allowed_origins.clone(),
    };
    let upgrade = match Upgrade::check(upgrade, &headers, &options) {
        Ok(u) => u,
        Err(refused) => {
            let reason = match refused.status {
                StatusCode::FORBIDDEN => "origin",
                _ => "subprotocol",
            };
            shared.refusals.refused(T, reason, client);
            return (refused.status, refused.reason).into_response();
        }
    };
    let slot = match client.map(|ip| shared.admission.hold(ip)).transpose() {
        Ok(slot) => slot,
        Err(refused) => {
            shared.refusals.refused(T, refused.reason(), client);
            return too_many(refused);
        }
    };
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        shared.refusals.refused(T, "max_connections", client);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let tasks = shared.tasks.clone();
    upgrade.on_upgrade(move |socket| {
        let (incoming, outgoing) = ws::split(socket);
        let kind = TransportKind {
            transport: Transport::websocket,
            keepalive: true,
        };
        tasks.track_future(async move {
            session::serve(shared, incoming, outgoing, kind).await;
            drop((permit, slot));
        })
    })
}
