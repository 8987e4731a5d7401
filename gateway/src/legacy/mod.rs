//! `/socket.io/` on `PORT`: the old server's Socket.IO clients (Engine.IO 4,
//! and Engine.IO 3 through socketioxide's `v4` feature), unchanged, as one
//! more transport of the one session loop (PROTOCOL.md §9).
//!
//! socketioxide speaks Engine.IO and Socket.IO (long-polling, WebSocket,
//! upgrade, its own ping/pong). Each connection becomes a session: the
//! handshake becomes `hello` (its `authKey`/`token` the `hello.token`, its
//! `deviceId` the peer id, asked for through [`session::serve_as`]), every
//! legacy event a native request ([`translate::Inlet`]), and every native
//! message the legacy events it stands for ([`translate::Outlet`]). Rooms,
//! limits, rate limits, metrics and cross-instance routing are the
//! session's and the hub's, shared with every other transport.
//!
//! A connection is admitted (Socket.IO `CONNECT`) only once the session has
//! answered `welcome`; a refusal (draining, too many connections, a wrong
//! key, a bad `deviceId`) reaches the client as `connect_error`.

pub mod translate;

use crate::gateway::Shared;
use crate::metrics::Transport;
use crate::session::{self, TransportKind};
use axum::http::header;
use futures_util::{Sink, Stream};
use pantheon_protocol::{CloseCode, Inbound, Outbound, PeerId};
use serde_json::{Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError, SocketIo};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use translate::{Emit, Handshake, Inlet, Outlet, Pending};

/// The Socket.IO layer that serves `/socket.io/` in front of the router.
pub fn layer(shared: &Arc<Shared>) -> SocketIoLayer {
    let cfg = &shared.config;
    let max = cfg.limits.max_message_bytes;
    let (layer, io) = SocketIo::builder()
        // The old server's maxHttpBufferSize, pingInterval and pingTimeout.
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_timeout)
        .build_layer();
    let shared = shared.clone();
    let admit = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        let shared = shared.clone();
        async move { admit(shared, socket, auth.ok()).await }
    };
    io.ns("/", (async |_: SocketRef| {}).with(admit));
    layer
}

/// Why a connection was not admitted (sent as `connect_error`).
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Starts the session for a connecting socket and admits the socket once
/// the session has welcomed it.
async fn admit(shared: Arc<Shared>, socket: SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    let refuse = |label: &'static str, why: &str| {
        shared.metrics.refused(Transport::socketio, label);
        Err(Refused(why.to_owned()))
    };
    if shared.is_draining() {
        return refuse("draining", "draining");
    }
    if let Some(allowed) = &shared.config.allowed_origins {
        let origin = socket.req_parts().headers.get(header::ORIGIN);
        // Clients outside a browser send no Origin, as for `/ws`.
        if origin.is_some_and(|o| !allowed.iter().any(|a| o.as_bytes() == a.as_bytes())) {
            return refuse("origin", "origin not allowed");
        }
    }
    let handshake = Handshake::parse(auth.as_ref(), socket.req_parts().uri.query());
    let claim = match handshake.device_id.as_deref().map(PeerId::new) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return refuse("device_id", "invalid deviceId"),
    };
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        return refuse("max_connections", "too many connections");
    };
    let limits = shared.config.limits;
    // Room for a burst and then some; beyond it events are dropped as
    // rate-limited (the session could not keep up with them anyway).
    let (tx, rx) = mpsc::channel(2 * limits.rate_burst as usize + 16);
    let _ = tx.try_send(Inbound::Text(handshake.hello()));
    let closed = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let pending = Pending::default();
    let incoming = Incoming {
        rx,
        closed: Box::pin(closed.clone().cancelled_owned()),
    };
    let outgoing = Outgoing {
        socket: socket.clone(),
        outlet: Outlet::new(pending.clone()),
        ready: Some(ready_tx),
        admitted: false,
    };
    let kind = TransportKind {
        transport: Transport::socketio,
        // Engine.IO has its own ping/pong (pingInterval/pingTimeout).
        keepalive: false,
    };
    let session = session::serve_as(shared.clone(), incoming, outgoing, kind, claim);
    shared.tasks.spawn(async move {
        session.await;
        drop(permit);
    });
    match tokio::time::timeout(shared.config.hello_timeout, ready_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(refused))) => {
            closed.cancel();
            return Err(refused);
        }
        _ => {
            closed.cancel();
            return Err(Refused("unavailable".into()));
        }
    }
    let inlet = Inlet::new(&handshake, &socket.id.to_string(), pending);
    socket.on_fallback(Forward {
        inlet: Arc::new(Mutex::new(inlet)),
        tx,
    });
    socket.on_disconnect(move || async move { closed.cancel() });
    Ok(())
}

/// Hands every event of one socket to its session, in the order received:
/// it translates while socketioxide calls it, before anything is spawned.
#[derive(Clone)]
struct Forward {
    inlet: Arc<Mutex<Inlet>>,
    tx: mpsc::Sender<Inbound>,
}

impl MessageHandler<LocalAdapter, Forward> for Forward {
    fn call(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        mut v: socketioxide::handler::Value,
        ack: Option<i64>,
    ) {
        let Ok(Event(event)) = Event::from_message_parts(&s, &mut v, &ack) else {
            return;
        };
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(&s, &mut v, &ack);
        let request = {
            let mut inlet = self.inlet.lock().unwrap_or_else(|e| e.into_inner());
            inlet.event(&event, data.unwrap_or(Value::Null))
        };
        let Some(request) = request else { return };
        if self.tx.try_send(Inbound::Text(request)).is_err() {
            let _ = s.emit(
                "error",
                &json!({"code": "RATE_LIMITED", "message": "too many events; dropped",
                        "details": {}}),
            );
        }
    }
}

/// The session's view of a socket's events: what [`Forward`] queued, then
/// a goodbye when the client went away (legacy clients never resume).
struct Incoming {
    rx: mpsc::Receiver<Inbound>,
    closed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Stream for Incoming {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
            Poll::Ready(None) => return Poll::Ready(Some(Inbound::Closed { goodbye: true })),
            Poll::Pending => {}
        }
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Inbound::Closed { goodbye: true })),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The session's messages, emitted as legacy events on the socket.
struct Outgoing {
    socket: SocketRef,
    outlet: Outlet,
    /// Told the session's verdict on the handshake, once.
    ready: Option<oneshot::Sender<Result<(), Refused>>>,
    /// Welcomed: the socket is (about to be) connected.
    admitted: bool,
}

/// The socket is gone or cannot keep up.
#[derive(Debug)]
struct Gone;

impl Outgoing {
    fn handle(&mut self, item: Outbound) -> Result<(), Gone> {
        match item {
            Outbound::Text(text) => match self.outlet.message(&text) {
                Emit::Welcome(_) => {
                    self.admitted = true;
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Emit::Refused { code, message } => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(Refused(format!("{code}: {message}"))));
                    }
                }
                Emit::Events(events) => {
                    for (event, data) in events {
                        match self.socket.emit(event, &data) {
                            Ok(()) => {}
                            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                                // A slow consumer, as 4009 for the others.
                                let _ = self.socket.clone().disconnect();
                                return Err(Gone);
                            }
                            Err(_) => return Err(Gone),
                        }
                    }
                }
            },
            Outbound::Ping => {}
            // Going away: the transport closes with the process, without a
            // Socket.IO disconnect, so socket.io-client reconnects by itself
            // (to another instance behind the load balancer).
            Outbound::Close(CloseCode::GoingAway | CloseCode::Restart) => {}
            Outbound::Close(_) => {
                if self.admitted {
                    let _ = self.socket.clone().disconnect();
                }
            }
        }
        Ok(())
    }
}

impl Sink<Outbound> for Outgoing {
    type Error = Gone;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outbound) -> Result<(), Gone> {
        self.handle(item)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }
}
