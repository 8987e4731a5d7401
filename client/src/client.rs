//! [`Client`] (one connection: handshake, events, close) and [`Handle`]
//! (the cloneable request side).

use crate::connection::{self, Shared};
use crate::error::{CloseInfo, Error};
use crate::event::Event;
use crate::fields::{IntoData, IntoPeer, IntoRoom};
use crate::options::Options;
use crate::seq::SeqTracker;
use crate::transport::{Outgoing, Transport, TransportSink, TransportStream};
use crate::{ws, wt};
use pantheon_protocol::{
    ClientMessage, PeerId, PeerInfo, Request, Resume, ServerMessage, Welcome, encode_client,
};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A connected, welcomed session.
///
/// Requests are methods of [`Handle`], reachable directly on the client
/// (`Client` dereferences to its handle) or through a clone from
/// [`Client::handle`] that another task can own. Events are read with
/// [`Client::next_event`].
///
/// Everything the server sends is read in order by one task. When the
/// event buffer (`Options::event_buffer`) is full, that task stops reading
/// until the application takes an event, so replies and the close frame
/// queued behind the unread events wait too: a request awaited while nobody
/// reads events can wait forever, and [`Handle::closed`] does not see the
/// end until the events before it are read. This is the backpressure a real
/// slow client exerts (the server closes it with 4009); read events from a
/// task of their own, or size the buffer, when the application needs both.
///
/// Dropping the client drops the connection without a close frame, like
/// [`Client::abort`]: the server keeps the session for its resume grace
/// window. Call [`Client::close`] to end the session.
#[derive(Debug)]
pub struct Client {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    end_reported: bool,
    close_timeout: Duration,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// The request side of a [`Client`]: cheap to clone, usable from any task.
///
/// Typed requests allocate an `id`, send, and resolve to the reply;
/// an `error` reply resolves to [`Error::Server`]. Dropping a request's
/// future stops waiting for its reply (a late reply is discarded).
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Outgoing>,
}

impl Client {
    /// Connects with [`Options::default`]: subprotocol `pantheon.v1`, no
    /// token, a new session.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, Options::default()).await
    }

    /// Connects: opens the transport the URL's scheme selects
    /// ([`Transport::of_url`]: `ws://HOST:PORT/ws` → WebSocket,
    /// `https://HOST:WT_PORT/wt` → WebTransport), sends `hello`, waits for
    /// `welcome`, all within `options.connect_timeout`.
    ///
    /// WebTransport trusts the server by [`Options::cert_hashes`] (see
    /// [`crate::fetch_cert_hash`]), by [`Options::insecure_skip_verify`], or
    /// else by the system's root certificates. `wss://` needs a TLS feature
    /// of tokio-tungstenite that this crate does not enable.
    pub async fn connect_with(url: &str, options: Options) -> Result<Self, Error> {
        let transport = Transport::of_url(url)?;
        let limit = options.connect_timeout;
        tokio::time::timeout(limit, async {
            match transport {
                Transport::WebSocket => {
                    let (sink, stream) = open_ws(url, &options).await?;
                    Self::start(sink, stream, &options).await
                }
                Transport::WebTransport => {
                    let (sink, stream) = wt::open(url, wt_dial(&options)).await?;
                    Self::start(sink, stream, &options).await
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout(limit))?
    }

    /// Runs the handshake over any transport, then spawns its tasks.
    pub(crate) async fn start<S: TransportSink, R: TransportStream>(
        mut sink: S,
        mut stream: R,
        options: &Options,
    ) -> Result<Self, Error> {
        let hello = encode_client(&ClientMessage {
            id: options.hello_id,
            request: Request::Hello {
                v: options.version,
                token: options.token.clone(),
                resume: options.resume.clone(),
            },
        });
        let (welcome, welcome_seq) = connection::handshake(&mut sink, &mut stream, hello).await?;
        let mut seq = match &options.resume {
            Some(r) if welcome.resumed => SeqTracker::new(r.last_seq),
            _ => SeqTracker::new(0),
        };
        if let Err(e) = seq.welcome(welcome_seq) {
            tracing::warn!(error = %e, "seq violation");
        }
        let shared = Arc::new(Shared::new(welcome, &seq));
        let (queue, queued) = mpsc::channel(options.send_buffer.max(1));
        let (events_tx, events) = mpsc::channel(options.event_buffer.max(1));
        let writer = tokio::spawn(connection::write_loop(sink, queued));
        let reader = tokio::spawn(connection::read_loop(
            stream,
            shared.clone(),
            events_tx,
            seq,
            writer.abort_handle(),
        ));
        Ok(Self {
            handle: Handle { shared, queue },
            events,
            end_reported: false,
            close_timeout: options.close_timeout,
            reader,
            writer,
        })
    }

    /// The `welcome` this session started with.
    pub fn welcome(&self) -> &Welcome {
        &self.handle.shared.welcome
    }

    /// A handle for sending requests from another task.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The next event: a server message that is not the reply to a pending
    /// request, in `seq` order. When the connection has ended and every
    /// buffered event has been read, yields one [`Event::Closed`], then
    /// `None`.
    pub async fn next_event(&mut self) -> Option<Event> {
        match self.events.recv().await {
            Some(event) => Some(event),
            None => self.end_event(),
        }
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        match self.events.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => self.end_event(),
        }
    }

    fn end_event(&mut self) -> Option<Event> {
        if std::mem::replace(&mut self.end_reported, true) {
            return None;
        }
        let info = self
            .shared
            .close_info()
            .unwrap_or_else(|| CloseInfo::lost("connection closed"));
        Some(info.into())
    }

    /// Says goodbye: the server ends the session at once and its rooms see
    /// `peer_left` `left`. Events that arrived before can still be read.
    ///
    /// Over WebSocket: close code 1000; returns the server's answering
    /// close frame. Over WebTransport: session close code 0, sent as the
    /// gateway reads a goodbye from a client that cannot send the close
    /// capsule (the control stream's FIN, acknowledged, then the QUIC
    /// connection closed with 0); returns `code: Some(0)` once the
    /// connection is closed.
    pub async fn close(&mut self) -> Result<CloseInfo, Error> {
        self.close_with(1000, "").await
    }

    /// Closes with any code and reason (1001 for "page unloading", which
    /// starts the resume grace window instead of ending the session). Waits
    /// up to `Options::close_timeout` for the server's answer, then drops the
    /// connection and fails with [`Error::Timeout`].
    ///
    /// Over WebTransport, 0 and 1000 are the goodbye of [`Client::close`];
    /// any other code closes the QUIC connection at once with that code,
    /// which the gateway counts as a loss (the grace window starts) and
    /// which discards messages not yet sent.
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Result<CloseInfo, Error> {
        if let Some(info) = self.shared.close_info() {
            return Ok(info);
        }
        let close = Outgoing::Close {
            code,
            reason: reason.to_owned(),
        };
        // When the writer is gone the connection has ended or is ending:
        // wait for the reader to say how.
        let _ = self.handle.queue.send(close).await;
        match tokio::time::timeout(self.close_timeout, self.handle.closed()).await {
            Ok(info) => Ok(info),
            Err(_) => {
                self.abort().await;
                Err(Error::Timeout(self.close_timeout))
            }
        }
    }

    /// Drops the connection without a close frame (over WebTransport:
    /// resets the control stream and lets the QUIC connection go without a
    /// goodbye), as a network loss would:
    /// the server keeps the session for its grace window, so it can be
    /// resumed with [`Handle::resume_info`]. Returns once the socket is
    /// closed. Events already received can still be read; then
    /// [`Event::Closed`] with no code.
    pub async fn abort(&mut self) {
        for task in [&mut self.reader, &mut self.writer] {
            if !task.is_finished() {
                task.abort();
                let _ = task.await;
            }
        }
        self.shared
            .set_closed(CloseInfo::lost("aborted by the client"));
    }
}

impl Deref for Client {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.set_closed(CloseInfo::lost("client dropped"));
    }
}

/// Opens a WebSocket with `options`.
pub(crate) async fn open_ws(
    url: &str,
    options: &Options,
) -> Result<(ws::WsSink, ws::WsStream), Error> {
    let upgrade = ws::Upgrade {
        subprotocol: options.subprotocol.as_deref(),
        origin: options.origin.as_deref(),
        read_buffer: options.read_buffer,
        trust: crate::tls::Trust {
            cert_hashes: &options.cert_hashes,
            insecure: options.insecure_skip_verify,
        },
    };
    let (conn, _selected) = ws::open(url, upgrade).await?;
    Ok(ws::split(conn))
}

/// How `options` open a WebTransport session.
pub(crate) fn wt_dial(options: &Options) -> wt::Dial<'_> {
    wt::Dial {
        origin: options.origin.as_deref(),
        cert_hashes: &options.cert_hashes,
        insecure: options.insecure_skip_verify,
        read_buffer: options.read_buffer,
        endpoint: options.wt_endpoint.as_ref(),
    }
}

/// The reply a typed request expected, and what came.
fn unexpected(expected: &str, got: &ServerMessage) -> Error {
    Error::Protocol(format!("expected {expected}, got {}", got.kind().as_str()))
}

/// Stops waiting for a reply when a request future is dropped early.
struct Waiting<'a> {
    shared: &'a Shared,
    id: Option<u64>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.pending.cancel(id);
        }
    }
}

impl Handle {
    /// This session's peer id.
    pub fn peer(&self) -> &PeerId {
        &self.shared.welcome.peer
    }

    /// This session's resume token (`welcome.session`).
    pub fn session(&self) -> &str {
        &self.shared.welcome.session
    }

    /// The highest `seq` received so far (replies included), or the resumed
    /// `last_seq` before anything arrived.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Relaxed)
    }

    /// What to put in [`Options::resume`] to resume this session on a new
    /// connection.
    pub fn resume_info(&self) -> Resume {
        Resume {
            session: self.session().to_owned(),
            last_seq: self.last_seq(),
        }
    }

    /// How many server messages broke the `seq` rules (a gap, a repeat, a
    /// missing `seq`, a `seq` on `welcome`). The protocol promises zero.
    pub fn seq_errors(&self) -> u64 {
        self.shared.seq_errors.load(Ordering::Relaxed)
    }

    /// How many server messages were not protocol at all (undecodable,
    /// binary frames, a second `welcome`). The protocol promises zero.
    pub fn protocol_errors(&self) -> u64 {
        self.shared.protocol_errors.load(Ordering::Relaxed)
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.close_info()
    }

    /// Waits until the connection has ended and says how.
    pub async fn closed(&self) -> CloseInfo {
        self.shared.closed().await
    }

    /// How many requests wait for their reply.
    pub fn in_flight(&self) -> usize {
        self.shared.pending.len()
    }

    async fn enqueue(&self, item: Outgoing) -> Result<(), Error> {
        self.queue
            .send(item)
            .await
            .map_err(|_| self.shared.closed_error())
    }

    /// Sends any request with a fresh `id` and waits for its reply.
    /// An `error` reply is [`Error::Server`].
    pub async fn request(&self, request: Request) -> Result<ServerMessage, Error> {
        let id = self.shared.ids.next();
        let reply = self
            .shared
            .pending
            .register(id)
            .ok_or_else(|| self.shared.closed_error())?;
        let mut waiting = Waiting {
            shared: &self.shared,
            id: Some(id),
        };
        let text = encode_client(&ClientMessage {
            id: Some(id),
            request,
        });
        self.enqueue(Outgoing::Text(text)).await?;
        let reply = reply.await.map_err(|_| self.shared.closed_error())?;
        // Completed: nothing left to cancel, so skip the lock.
        waiting.id = None;
        match reply {
            ServerMessage::Error { code, message, .. } => Err(Error::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Sends a request without waiting for a reply. With `with_id` it gets a
    /// fresh `id` (returned): its reply, not being awaited, becomes an
    /// [`Event`]. Without, the server sends no `ack`, and errors come
    /// without `id`.
    pub async fn send(&self, request: Request, with_id: bool) -> Result<Option<u64>, Error> {
        let id = with_id.then(|| self.shared.ids.next());
        let text = encode_client(&ClientMessage { id, request });
        self.enqueue(Outgoing::Text(text)).await?;
        Ok(id)
    }

    /// Sends a text frame as is (for tests of bad input).
    pub async fn send_raw_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.enqueue(Outgoing::Text(text.into())).await
    }

    /// Sends a binary frame (not protocol: the server answers `bad_request`).
    pub async fn send_raw_binary(&self, bytes: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.enqueue(Outgoing::Binary(bytes.into())).await
    }

    /// Joins a room (`meta` must be a JSON object); returns the other
    /// members.
    pub async fn join(
        &self,
        room: impl IntoRoom,
        meta: Option<serde_json::Value>,
    ) -> Result<Vec<PeerInfo>, Error> {
        let request = Request::Join {
            room: room.into_room()?,
            meta: meta.as_ref().map(crate::fields::meta).transpose()?,
        };
        match self.request(request).await? {
            ServerMessage::Joined { peers, .. } => Ok(peers),
            other => Err(unexpected("joined", &other)),
        }
    }

    /// Leaves a room.
    pub async fn leave(&self, room: impl IntoRoom) -> Result<(), Error> {
        match self
            .request(Request::Leave {
                room: room.into_room()?,
            })
            .await?
        {
            ServerMessage::Left { .. } => Ok(()),
            other => Err(unexpected("left", &other)),
        }
    }

    /// Sends `data` to one member of a room and waits for the `ack`.
    pub async fn signal(
        &self,
        room: impl IntoRoom,
        to: impl IntoPeer,
        data: impl IntoData,
    ) -> Result<(), Error> {
        let request = Request::Signal {
            room: room.into_room()?,
            to: to.into_peer()?,
            data: data.into_data()?,
        };
        self.expect_ack(request).await
    }

    /// Sends `data` to every other member of a room and waits for the `ack`.
    pub async fn broadcast(&self, room: impl IntoRoom, data: impl IntoData) -> Result<(), Error> {
        let request = Request::Broadcast {
            room: room.into_room()?,
            data: data.into_data()?,
        };
        self.expect_ack(request).await
    }

    /// Replaces this peer's meta in a room (a JSON object) and waits for the
    /// `ack`.
    pub async fn update(&self, room: impl IntoRoom, meta: serde_json::Value) -> Result<(), Error> {
        let request = Request::Update {
            room: room.into_room()?,
            meta: crate::fields::meta(&meta)?,
        };
        self.expect_ack(request).await
    }

    /// Lists the other members of a room.
    pub async fn peers(&self, room: impl IntoRoom) -> Result<Vec<PeerInfo>, Error> {
        match self
            .request(Request::Peers {
                room: room.into_room()?,
            })
            .await?
        {
            ServerMessage::Peers { peers, .. } => Ok(peers),
            other => Err(unexpected("peers", &other)),
        }
    }

    /// Sends `ping`; returns the time until `pong`.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        match self.request(Request::Ping).await? {
            ServerMessage::Pong { .. } => Ok(start.elapsed()),
            other => Err(unexpected("pong", &other)),
        }
    }

    async fn expect_ack(&self, request: Request) -> Result<(), Error> {
        match self.request(request).await? {
            ServerMessage::Ack { .. } => Ok(()),
            other => Err(unexpected("ack", &other)),
        }
    }

    /// `signal` without `id`: no `ack`, nothing to wait for but queue space.
    /// Errors come later as [`Event`]s without `id`.
    pub async fn signal_no_ack(
        &self,
        room: impl IntoRoom,
        to: impl IntoPeer,
        data: impl IntoData,
    ) -> Result<(), Error> {
        let request = Request::Signal {
            room: room.into_room()?,
            to: to.into_peer()?,
            data: data.into_data()?,
        };
        self.send(request, false).await.map(drop)
    }

    /// `broadcast` without `id`.
    pub async fn broadcast_no_ack(
        &self,
        room: impl IntoRoom,
        data: impl IntoData,
    ) -> Result<(), Error> {
        let request = Request::Broadcast {
            room: room.into_room()?,
            data: data.into_data()?,
        };
        self.send(request, false).await.map(drop)
    }

    /// `update` without `id`.
    pub async fn update_no_ack(
        &self,
        room: impl IntoRoom,
        meta: serde_json::Value,
    ) -> Result<(), Error> {
        let request = Request::Update {
            room: room.into_room()?,
            meta: crate::fields::meta(&meta)?,
        };
        self.send(request, false).await.map(drop)
    }
}
