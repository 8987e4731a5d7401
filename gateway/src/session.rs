//! The one session loop every transport feeds: `hello`/`welcome`, resume,
//! limits, rate limiting, keepalive, dispatch to the hub, and the writer that
//! drains a connection's bounded outbound queue.
//!
//! A transport hands over a `Stream` of [`Inbound`] and a `Sink` of
//! [`Outbound`]; nothing here knows which transport it serves.

use crate::auth::Grant;
use crate::bus::BoxFuture;
use crate::gateway::Shared;
use crate::hub::{Refusal, Relayed};
use crate::limit::{Limiter, Verdict};
use crate::metrics::Transport;
use crate::peer::{Control, Link, Peer};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use pantheon_protocol::{
    ClientMessage, CloseCode, ErrorCode, Inbound, Meta, Outbound, PeerId, Request, RoomName,
    ServerKind, ServerMessage, VERSION, Welcome, decode_client, encode_server,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Most queued items written per flush.
const WRITE_BATCH: usize = 256;
/// Most relayed messages one session keeps in flight to other instances.
/// They are routed in the order sent; their replies come in the same order.
const MAX_IN_FLIGHT: usize = 64;
/// Messages a session handles before it lets other tasks run (see
/// `Session::serve`): small enough that a flood delays others by tens of
/// microseconds per turn, large enough that yielding costs nothing
/// measurable at full speed.
const YIELD_EVERY: u32 = 32;
/// While a session is over its rate limit, it reads at most [`DROP_RUN`]
/// messages per [`DROP_PAUSE`] (about 5 000 a second with tokio's 1 ms
/// timer): still hundreds of times any sensible `RATE_LIMIT_PER_SEC`, so
/// what is over the limit is still dropped and answered as PROTOCOL.md §6
/// says, but a flood can no longer take a whole core.
const DROP_RUN: u32 = 8;
const DROP_PAUSE: Duration = Duration::from_millis(1);

/// A relayed message on its way to another instance: its request `id`, when
/// it was received, and the outcome once Redis has it.
type InFlight = BoxFuture<'static, (Option<u64>, Instant, Result<(), Refusal>)>;

const FORBIDDEN_ROOM: Refusal = Refusal {
    code: ErrorCode::Unauthorized,
    message: "your token does not grant this room",
};

/// How a connection ended, seen from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client said goodbye: the session ends at once.
    Goodbye,
    /// The connection was lost: the grace window starts.
    Lost,
    /// The server closed it with this code.
    Closed(CloseCode),
}

/// Per-transport behaviour of the session loop.
#[derive(Debug, Clone, Copy)]
pub struct TransportKind {
    /// The metrics label.
    pub transport: Transport,
    /// Whether the session sends keepalive pings (WebSocket) or the transport
    /// has its own (QUIC).
    pub keepalive: bool,
}

/// Serves one client connection until it ends.
pub async fn serve<I, O>(shared: Arc<Shared>, incoming: I, outgoing: O, kind: TransportKind)
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Sink<Outbound> + Unpin + Send + 'static,
{
    serve_as(shared, incoming, outgoing, kind, None).await;
}

/// Serves one client connection until it ends, as peer `claim` when given:
/// a transport whose clients name themselves (the legacy Socket.IO adapter,
/// whose `deviceId` is the peer id) asks for that id here instead of the one
/// the server would assign. A session opened with the same claimed id, here
/// or on another instance, is replaced (see
/// [`crate::hub::Hub::evict_elsewhere`] and [`crate::hub::Hub::open_as`]);
/// a `hello` with `resume` ignores the claim.
pub async fn serve_as<I, O>(
    shared: Arc<Shared>,
    incoming: I,
    outgoing: O,
    kind: TransportKind,
    claim: Option<PeerId>,
) where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Sink<Outbound> + Unpin + Send + 'static,
{
    let gauge = shared.metrics.connections(kind.transport);
    gauge.inc();
    // Room for `welcome` and a full replay on top of the queue proper, so a
    // resume never fails for want of space; the slow-consumer limit
    // (`Link::queue_limit`) counts only what is delivered beyond them.
    let cfg = &shared.config;
    let (tx, rx) = mpsc::channel(cfg.outbound_queue + cfg.resume_buffer + 1);
    let control = Arc::new(Control::default());
    let writer = tokio::spawn(write_loop(outgoing, rx, control.clone()));
    let limits = shared.config.limits;
    let mut session = Session {
        link: Link {
            conn: shared.next_conn_id(),
            tx,
            control,
            queue_limit: shared.config.outbound_queue,
        },
        limiter: Limiter::new(limits.rate_per_sec, limits.rate_burst),
        dropped_run: 0,
        last_seen: Instant::now(),
        peer: None,
        claim,
        grant: Grant::open(),
        kind,
        shared,
    };
    let end = session.run(incoming).await;
    session.finish(end);
    let Session { link, shared, .. } = session;
    // Dropping the queue lets the writer finish what is queued and stop.
    drop(link);
    let _ = tokio::time::timeout(CLOSE_FLUSH * 2, writer).await;
    gauge.dec();
    shared.metrics.closed(match end {
        End::Goodbye => "goodbye",
        End::Lost => "lost",
        End::Closed(code) => close_label(code),
    });
}

fn close_label(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Normal => "normal",
        CloseCode::GoingAway | CloseCode::Restart => "going_away",
        CloseCode::TooLarge => "too_large",
        CloseCode::InvalidPayload => "invalid_payload",
        CloseCode::HelloTimeout => "hello_timeout",
        CloseCode::UnsupportedVersion => "unsupported_version",
        CloseCode::Unauthorized => "unauthorized",
        CloseCode::RateLimited => "rate_limited",
        CloseCode::SlowConsumer => "slow_consumer",
        CloseCode::TakenOver => "taken_over",
    }
}

struct Session {
    shared: Arc<Shared>,
    link: Link,
    limiter: Limiter,
    /// Messages dropped by the limiter since the last pause or allowed one.
    dropped_run: u32,
    last_seen: Instant,
    peer: Option<Arc<Peer>>,
    /// The peer id the transport asked for.
    claim: Option<PeerId>,
    /// What this connection's `hello.token` allows (checked once: a token
    /// that expires later does not end the session).
    grant: Grant,
    kind: TransportKind,
}

impl Session {
    async fn run<I>(&mut self, mut incoming: I) -> End
    where
        I: Stream<Item = Inbound> + Unpin,
    {
        if let Err(end) = self.handshake(&mut incoming).await {
            return end;
        }
        let mut in_flight = FuturesOrdered::new();
        let end = self.serve(&mut incoming, &mut in_flight).await;
        if !in_flight.is_empty() {
            // The connection is gone but these messages are queued for other
            // instances: see them through, so none is cancelled as abandoned,
            // and keep their replies for a resume.
            let shared = Arc::clone(&self.shared);
            let peer = self.peer.clone().expect("in flight after hello");
            tokio::spawn(async move {
                while let Some((id, received, outcome)) = in_flight.next().await {
                    settle(&shared, &peer, id, received, outcome);
                }
            });
        }
        end
    }

    /// Reads and answers messages until the connection ends.
    ///
    /// Yields to the runtime every [`YIELD_EVERY`] messages: tokio's
    /// cooperative budget does not stop a task whose stream keeps returning
    /// frames already buffered, so a flooding client's task could otherwise
    /// run for milliseconds at a time while other sessions' messages wait.
    async fn serve<I>(&mut self, incoming: &mut I, in_flight: &mut FuturesOrdered<InFlight>) -> End
    where
        I: Stream<Item = Inbound> + Unpin,
    {
        let cfg = &self.shared.config;
        let (ping_interval, ping_timeout) = (cfg.ping_interval, cfg.ping_timeout);
        let mut next_ping = Instant::now() + ping_interval;
        let mut silence_deadline = self.last_seen + ping_timeout;
        let mut reconnect_sent = false;
        let mut since_yield = 0u32;
        let (drain, shutdown) = (self.shared.drain.clone(), self.shared.shutdown.clone());
        let control = self.link.control.clone();
        // Made once, not per message: registering a waiter is not free.
        let (closed, shut, draining) = (control.closed(), shutdown.cancelled(), drain.cancelled());
        tokio::pin!(closed, shut, draining);
        loop {
            tokio::select! {
                biased;
                () = &mut closed => {
                    return End::Closed(control.code().unwrap_or(CloseCode::Normal));
                }
                () = &mut shut => return self.close(CloseCode::GoingAway),
                () = &mut draining, if !reconnect_sent => {
                    reconnect_sent = true;
                    self.send(&ServerMessage::Reconnect { reason: "draining".into(), after_ms: 0 });
                }
                Some((id, received, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(id, received, outcome);
                }
                item = incoming.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                    self.last_seen = Instant::now();
                    // A client whose messages are always ready (a flood)
                    // would otherwise keep its worker thread for as long as
                    // its socket has data: let the others run in between.
                    since_yield += 1;
                    if since_yield == YIELD_EVERY {
                        since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                    match item {
                        Some(Inbound::Text(text)) => {
                            if let Some(end) = self.on_text(&text, in_flight).await {
                                return end;
                            }
                        }
                        Some(Inbound::Binary) => match self.drain(in_flight).await.admit(None) {
                            Ok(()) => {
                                self.shared.metrics.received(None);
                                self.error(None, ErrorCode::BadRequest, "binary frames are not part of the protocol; send text");
                            }
                            Err(Some(end)) => return end,
                            Err(None) => {}
                        },
                        Some(Inbound::Alive) => {}
                        Some(Inbound::TooLarge) => return self.close(CloseCode::TooLarge),
                        Some(Inbound::NotUtf8) => return self.close(CloseCode::InvalidPayload),
                        Some(Inbound::Closed { goodbye: true }) => return End::Goodbye,
                        Some(Inbound::Closed { goodbye: false }) | None => return End::Lost,
                    }
                }
                () = sleep_until(next_ping), if self.kind.keepalive => {
                    next_ping = Instant::now() + ping_interval;
                    let _ = self.link.tx.try_send(Outbound::Ping);
                }
                () = sleep_until(silence_deadline), if self.kind.keepalive => {
                    if self.last_seen + ping_timeout <= Instant::now() {
                        return self.close(CloseCode::GoingAway);
                    }
                    silence_deadline = self.last_seen + ping_timeout;
                }
            }
        }
    }

    /// Waits for `hello` and answers `welcome` (or closes).
    async fn handshake<I>(&mut self, incoming: &mut I) -> Result<(), End>
    where
        I: Stream<Item = Inbound> + Unpin,
    {
        let deadline = Instant::now() + self.shared.config.hello_timeout;
        let text = loop {
            let item = tokio::select! {
                item = tokio::time::timeout_at(deadline, incoming.next()) => item,
                () = self.shared.shutdown.cancelled() => return Err(self.close(CloseCode::GoingAway)),
            };
            match item {
                Err(_elapsed) => return Err(self.close(CloseCode::HelloTimeout)),
                Ok(Some(Inbound::Alive)) => continue,
                Ok(Some(Inbound::Text(text))) => break text,
                Ok(Some(Inbound::TooLarge)) => return Err(self.close(CloseCode::TooLarge)),
                Ok(Some(Inbound::NotUtf8)) => return Err(self.close(CloseCode::InvalidPayload)),
                Ok(Some(Inbound::Binary)) => return Err(self.close(CloseCode::HelloTimeout)),
                Ok(Some(Inbound::Closed { goodbye: true })) => return Err(End::Goodbye),
                Ok(Some(Inbound::Closed { goodbye: false }) | None) => return Err(End::Lost),
            }
        };
        self.last_seen = Instant::now();
        let msg = match decode_client(&text) {
            Ok(msg) if text.len() <= self.shared.config.limits.max_message_bytes => msg,
            Ok(_) => {
                self.send_raw_error(None, ErrorCode::TooLarge, "message too large");
                return Err(self.close(CloseCode::HelloTimeout));
            }
            Err(rejection) => {
                self.shared.metrics.received(None);
                self.send_raw_error(
                    rejection.id,
                    ErrorCode::BadRequest,
                    &format!("expected hello: {}", rejection.error),
                );
                return Err(self.close(CloseCode::HelloTimeout));
            }
        };
        let ClientMessage {
            id,
            request: Request::Hello { v, token, resume },
        } = msg
        else {
            self.shared.metrics.received(Some(msg.request.kind()));
            self.send_raw_error(
                msg.id,
                ErrorCode::BadRequest,
                "the first message must be hello",
            );
            return Err(self.close(CloseCode::HelloTimeout));
        };
        self.shared
            .metrics
            .received(Some(pantheon_protocol::RequestKind::Hello));
        if v.unwrap_or(VERSION) != VERSION {
            self.send_raw_error(
                id,
                ErrorCode::UnsupportedVersion,
                "this server speaks protocol version 1",
            );
            return Err(self.close(CloseCode::UnsupportedVersion));
        }
        let shared = Arc::clone(&self.shared);
        self.grant = match shared.auth.verify(token.as_deref()) {
            Ok(grant) => grant,
            Err(e) => {
                shared.metrics.auth_failure(e.reason());
                tracing::info!(
                    reason = e.reason(),
                    transport = ?self.kind.transport,
                    "hello refused: {e}"
                );
                self.send_raw_error(id, ErrorCode::Unauthorized, &e.to_string());
                return Err(self.close(CloseCode::Unauthorized));
            }
        };
        let welcome = |peer: &Peer, resumed: bool| shared.welcome(id, peer, resumed);
        let owner = self.grant.owner_tag();
        let resume = resume.filter(|r| {
            // Someone else's session is treated as unknown: a new session,
            // and the other one stays as it was.
            let own = self.grant.owns(&r.session);
            if !own {
                shared.metrics.resume("wrong_subject");
                shared.metrics.auth_failure("wrong_subject");
                tracing::info!(
                    subject = self.grant.subject(),
                    "resume of a session opened by another subject refused; new session"
                );
            }
            own
        });
        let peer = match resume {
            Some(r) => match shared
                .hub
                .resume(&r.session, r.last_seq, self.link.clone(), &welcome)
                .await
            {
                Ok(peer) => {
                    shared.metrics.resume("resumed");
                    peer
                }
                Err(failure) => {
                    shared.metrics.resume(failure.as_str());
                    shared.hub.open_owned(self.link.clone(), &welcome, &owner)
                }
            },
            None => match self.claim.take() {
                None => shared.hub.open_owned(self.link.clone(), &welcome, &owner),
                Some(claim) => match shared.hub.evict_elsewhere(&claim).await.and_then(|()| {
                    shared
                        .hub
                        .open_as(self.link.clone(), &welcome, claim, &owner)
                }) {
                    Ok(peer) => peer,
                    Err(refusal) => {
                        self.send_raw_error(id, refusal.code, refusal.message);
                        return Err(self.close(CloseCode::HelloTimeout));
                    }
                },
            },
        };
        shared.metrics.sent(ServerKind::Welcome, 1);
        self.peer = Some(peer);
        Ok(())
    }

    /// Applies the rate limit to one message. `Err(None)`: dropped (and
    /// reported as the protocol says); `Err(Some(end))`: the connection closes.
    fn admit(&mut self, id: Option<u64>) -> Result<(), Option<End>> {
        match self.limiter.check() {
            Verdict::Allow => Ok(()),
            Verdict::Drop {
                notify_unidentified,
            } => {
                self.shared.metrics.rate_limited.inc();
                if id.is_some() || notify_unidentified {
                    self.error(
                        id,
                        ErrorCode::RateLimited,
                        "rate limit exceeded; message dropped",
                    );
                }
                Err(None)
            }
            Verdict::Abuse => {
                self.shared.metrics.rate_limited.inc();
                Err(Some(self.close(CloseCode::RateLimited)))
            }
        }
    }

    /// Handles one text message; returns how the connection ends, if it does.
    ///
    /// A `signal` or `broadcast` to another instance does not hold up the
    /// next message: it joins `in_flight` (already queued for Redis, in
    /// order) and is acknowledged when Redis has it. Any other message first
    /// waits for those, so every reply comes in request order.
    async fn on_text(
        &mut self,
        text: &Bytes,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Option<End> {
        let received = Instant::now();
        if text.len() > self.shared.config.limits.max_message_bytes {
            self.drain(in_flight).await;
            self.shared.metrics.received(None);
            return match self.admit(None) {
                Ok(()) => {
                    self.error(
                        None,
                        ErrorCode::TooLarge,
                        "message over max_message_bytes; discarded",
                    );
                    None
                }
                Err(end) => end,
            };
        }
        // Over the rate limit, a message is dropped before it is decoded:
        // all that matters of it is its id, read without allocating. A
        // flooding client costs the gateway little per message it sends.
        match self.limiter.check() {
            Verdict::Allow => self.dropped_run = 0,
            Verdict::Drop {
                notify_unidentified,
            } => {
                self.shared.metrics.rate_limited.inc();
                // Read no faster than DROP_RUN messages per DROP_PAUSE while
                // over the limit: the rest waits in the client's socket
                // (TCP or QUIC flow control pushes back), and a flood costs
                // a bounded share of a core whatever its sender's speed.
                self.dropped_run += 1;
                if self.dropped_run >= DROP_RUN {
                    self.dropped_run = 0;
                    tokio::time::sleep(DROP_PAUSE).await;
                }
                let id = pantheon_protocol::peek_id(text);
                if id.is_some() || notify_unidentified {
                    // Replies go out in request order.
                    self.drain(in_flight).await;
                    self.error(
                        id,
                        ErrorCode::RateLimited,
                        "rate limit exceeded; message dropped",
                    );
                }
                return None;
            }
            Verdict::Abuse => {
                self.shared.metrics.rate_limited.inc();
                return Some(self.close(CloseCode::RateLimited));
            }
        }
        let decoded = decode_client(text);
        let id = match &decoded {
            Ok(m) => m.id,
            Err(r) => r.id,
        };
        let is_relay = matches!(
            &decoded,
            Ok(ClientMessage {
                request: Request::Signal { .. } | Request::Broadcast { .. },
                ..
            })
        );
        if !is_relay {
            self.drain(in_flight).await;
        }
        let msg = match decoded {
            Ok(msg) => msg,
            Err(rejection) => {
                self.shared.metrics.received(None);
                let text = rejection.error.to_string();
                self.error(rejection.id, rejection.error.code(), &text);
                return None;
            }
        };
        self.shared.metrics.received(Some(msg.request.kind()));
        let peer = self.peer.clone().expect("messages after hello have a peer");
        let shared = Arc::clone(&self.shared);
        let hub = &shared.hub;
        let replied = match msg.request {
            Request::Signal { room, to, data } => {
                self.relayed(hub.signal(&peer, room, to, data), id, received, in_flight);
                return None;
            }
            Request::Broadcast { room, data } => {
                self.relayed(hub.broadcast(&peer, room, data), id, received, in_flight);
                return None;
            }
            Request::Hello { .. } => Err(Refusal {
                code: ErrorCode::BadRequest,
                message: "hello was already sent on this connection",
            }),
            Request::Join { room, meta } => match self.granted(&room, meta) {
                Ok(meta) => hub.join(&peer, room, meta, id).await,
                Err(refusal) => Err(refusal),
            },
            Request::Leave { room } => hub.leave(&peer, room, id),
            Request::Update { room, meta } => match self.stamp(meta) {
                Ok(meta) => hub.update(&peer, room, meta, id).await,
                Err(refusal) => Err(refusal),
            },
            Request::Peers { room } => hub.peers(&peer, room, id),
            Request::Ping => {
                self.send(&ServerMessage::Pong { id });
                Ok(())
            }
        };
        if let Err(refusal) = replied {
            self.error(id, refusal.code, refusal.message);
        }
        None
    }

    /// Answers a relayed message now, or once Redis has it when it went to
    /// other instances; behind any earlier ones still in flight either way.
    fn relayed(
        &self,
        relayed: Result<Relayed, Refusal>,
        id: Option<u64>,
        received: Instant,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) {
        let outcome = match relayed {
            Ok(Relayed::Routing(routed)) => {
                in_flight.push_back(routed.map(move |r| (id, received, r)).boxed());
                return;
            }
            Ok(Relayed::Done) => Ok(()),
            Err(refusal) => Err(refusal),
        };
        if in_flight.is_empty() {
            self.settle(id, received, outcome);
        } else {
            in_flight.push_back(std::future::ready((id, received, outcome)).boxed());
        }
    }

    /// Waits for every relayed message in flight and answers each.
    async fn drain(&mut self, in_flight: &mut FuturesOrdered<InFlight>) -> &mut Self {
        while let Some((id, received, outcome)) = in_flight.next().await {
            self.settle(id, received, outcome);
        }
        self
    }

    /// Whether the token grants `room`; the `meta` to join with.
    fn granted(&self, room: &RoomName, meta: Option<Meta>) -> Result<Meta, Refusal> {
        if !self.grant.allows(room.as_str()) {
            self.shared.metrics.auth_failure("forbidden_room");
            tracing::debug!(
                %room,
                subject = self.grant.subject(),
                "join refused: the token does not grant this room"
            );
            return Err(FORBIDDEN_ROOM);
        }
        self.stamp(meta.unwrap_or_else(Meta::empty))
    }

    /// `meta` with `user` set by the server (when authentication is on).
    fn stamp(&self, meta: Meta) -> Result<Meta, Refusal> {
        self.grant.stamp(meta).map_err(|_| Refusal {
            code: ErrorCode::BadRequest,
            message: "meta with the user from your token is over 1024 bytes",
        })
    }

    /// Answers a relayed message: `ack` (when it had an `id`) or the error.
    fn settle(&self, id: Option<u64>, received: Instant, outcome: Result<(), Refusal>) {
        if let Some(peer) = &self.peer {
            settle(&self.shared, peer, id, received, outcome);
        }
    }

    /// Sends a numbered message to this session.
    fn send(&self, msg: &ServerMessage) {
        if let Some(peer) = &self.peer {
            peer.deliver(&encode_server(msg), msg.kind(), &self.shared.metrics);
        }
    }

    fn error(&self, id: Option<u64>, code: ErrorCode, message: &str) {
        self.shared.metrics.error(code);
        self.send(&ServerMessage::error(id, code, message));
    }

    /// An error before `welcome`: it carries no `seq`.
    fn send_raw_error(&self, id: Option<u64>, code: ErrorCode, message: &str) {
        self.shared.metrics.error(code);
        let _ = self
            .link
            .tx
            .try_send(Outbound::Text(encode_server(&ServerMessage::error(
                id, code, message,
            ))));
    }

    /// Closes the connection after what is already queued.
    fn close(&self, code: CloseCode) -> End {
        if self.link.tx.try_send(Outbound::Close(code)).is_err() {
            self.link.control.close(code);
        }
        End::Closed(code)
    }

    /// Settles the session after the connection ended.
    fn finish(&self, end: End) {
        let Some(peer) = &self.peer else { return };
        let hub = &self.shared.hub;
        match end {
            End::Goodbye => hub.goodbye(peer, self.link.conn),
            End::Closed(CloseCode::TakenOver) => {}
            End::Lost | End::Closed(_) => hub.detach(peer, self.link.conn),
        }
    }
}

/// Answers a relayed message: `ack` (when it had an `id`) or the error.
fn settle(
    shared: &Shared,
    peer: &Peer,
    id: Option<u64>,
    received: Instant,
    outcome: Result<(), Refusal>,
) {
    let metrics = &shared.metrics;
    let reply = match outcome {
        Ok(()) => {
            metrics
                .relay_latency
                .observe(received.elapsed().as_secs_f64());
            match id {
                Some(id) => ServerMessage::Ack { id },
                None => return,
            }
        }
        Err(refusal) => {
            metrics.error(refusal.code);
            ServerMessage::error(id, refusal.code, refusal.message)
        }
    };
    peer.deliver(&encode_server(&reply), reply.kind(), metrics);
}

impl Shared {
    fn welcome(&self, id: Option<u64>, peer: &Peer, resumed: bool) -> Bytes {
        let cfg = &self.config;
        encode_server(&ServerMessage::Welcome(Welcome {
            id,
            v: VERSION,
            peer: peer.id.clone(),
            session: peer.token(),
            resumed,
            server: cfg.server_id.clone(),
            region: cfg.region.clone(),
            heartbeat_ms: cfg.ping_interval.as_millis() as u64,
            limits: cfg.limits,
            ice_servers: self.ice.is_configured().then(|| {
                self.ice
                    .servers(peer.id.as_str(), std::time::SystemTime::now())
            }),
            regions: Some(self.regions()).filter(|r| crate::regions::worth_announcing(r)),
        }))
    }
}

/// Drains the outbound queue into the transport, many messages per flush.
/// An urgent close (slow consumer, takeover) stops taking from the queue and
/// sends the close frame as soon as the transport accepts it.
async fn write_loop<O>(mut sink: O, mut rx: mpsc::Receiver<Outbound>, control: Arc<Control>)
where
    O: Sink<Outbound> + Unpin,
{
    let mut closing = None;
    let closed = control.closed();
    tokio::pin!(closed);
    'outer: loop {
        let first = tokio::select! {
            biased;
            () = &mut closed => break,
            item = rx.recv() => item,
        };
        let Some(first) = first else { break };
        let mut item = Some(first);
        let mut n = 0;
        while let Some(out) = item.take() {
            if let Outbound::Close(code) = out {
                closing = Some(code);
                break 'outer;
            }
            let fed = tokio::select! {
                biased;
                () = &mut closed => break 'outer,
                r = sink.feed(out) => r,
            };
            if fed.is_err() {
                return;
            }
            n += 1;
            if n < WRITE_BATCH {
                item = rx.try_recv().ok();
            }
        }
        let flushed = tokio::select! {
            biased;
            () = &mut closed => break,
            r = sink.flush() => r,
        };
        if flushed.is_err() {
            return;
        }
    }
    let code = closing.or_else(|| control.code());
    let _ = tokio::time::timeout(CLOSE_FLUSH, async {
        if let Some(code) = code {
            sink.send(Outbound::Close(code)).await?;
        }
        sink.close().await
    })
    .await;
}
