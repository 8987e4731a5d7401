//! HTTP on `PORT`: `/health`, `/ready`, `/metrics` (unless `METRICS_ADDR`
//! moves it to a listener of its own), `/regions`, the WebSocket upgrade at
//! `/ws`, `/webtransport/cert-hash` and the legacy Socket.IO endpoint
//! `/socket.io/` ([`crate::legacy`]), served by hyper with a header-read
//! timeout so a slow or silent client cannot hold a connection open before
//! its request has arrived.

use crate::gateway::Shared;
use crate::metrics::Transport;
use crate::session::{self, TransportKind};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pantheon_fallback_ws::{self as ws, Upgrade};
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

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
        .route("/webtransport/cert-hash", get(cert_hash))
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
    accept(listener, app, tls, shared.config.http_header_timeout, stop).await;
}

/// Serves `/metrics` alone on `listener` (`METRICS_ADDR`), in plain HTTP,
/// until `stop` is cancelled: through the drain, so a stuck drain shows.
pub async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let header_timeout = shared.config.http_header_timeout;
    accept(listener, metrics_router(shared), None, header_timeout, stop).await;
}

async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let (stream, _peer) = tokio::select! {
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
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
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
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
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

async fn websocket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if shared.is_draining() {
        shared.metrics.refused("draining");
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        shared.metrics.refused("max_connections");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let options = ws::Options {
        max_frame_bytes: shared.config.limits.max_frame_bytes(),
        allowed_origins: shared.config.allowed_origins.clone(),
    };
    let upgrade = match Upgrade::check(upgrade, &headers, &options) {
        Ok(u) => u,
        Err(refused) => {
            shared.metrics.refused(match refused.status {
                StatusCode::FORBIDDEN => "origin",
                _ => "subprotocol",
            });
            return (refused.status, refused.reason).into_response();
        }
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
            drop(permit);
        })
    })
}
