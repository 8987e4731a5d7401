//! The session logic over any transport: the `hello` → `welcome` handshake,
//! then a reader task (decode, `seq` check, route replies to their waiters
//! and everything else to the event queue) and a writer task (feed every
//! queued message, flush once).

use crate::error::{CloseInfo, Error};
use crate::event::Event;
use crate::pending::{IdAllocator, Pending};
use crate::seq::SeqTracker;
use crate::transport::{Incoming, Outgoing, TransportSink, TransportStream};
use futures_util::{SinkExt, StreamExt};
use pantheon_protocol::{Received, ServerMessage, Welcome, decode_server};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// Most messages written between two flushes.
const WRITE_BATCH: usize = 256;

/// How long the reader keeps the connection after a close frame, so that
/// tungstenite can send the closing handshake's answer.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// State shared by the client handles and the connection's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) welcome: Welcome,
    pub(crate) ids: IdAllocator,
    pub(crate) pending: Pending,
    pub(crate) last_seq: AtomicU64,
    pub(crate) seq_errors: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    closed: watch::Sender<Option<CloseInfo>>,
}

impl Shared {
    pub(crate) fn new(welcome: Welcome, seq: &SeqTracker) -> Self {
        Self {
            welcome,
            ids: IdAllocator::default(),
            pending: Pending::default(),
            last_seq: AtomicU64::new(seq.last()),
            seq_errors: AtomicU64::new(seq.errors()),
            protocol_errors: AtomicU64::new(0),
            closed: watch::Sender::new(None),
        }
    }

    /// How the connection ended, once it has.
    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone()
    }

    /// Records how the connection ended (the first record wins) and wakes
    /// every request still waiting.
    pub(crate) fn set_closed(&self, info: CloseInfo) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(info);
                true
            } else {
                false
            }
        });
        self.pending.close();
    }

    /// Waits until the connection has ended.
    pub(crate) async fn closed(&self) -> CloseInfo {
        let mut rx = self.closed.subscribe();
        let info = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        info.clone().expect("waited for Some")
    }

    /// The error for a request on an ended (or ending) connection.
    pub(crate) fn closed_error(&self) -> Error {
        self.close_info()
            .unwrap_or_else(|| CloseInfo::lost("connection closed"))
            .into()
    }
}

/// Sends `hello` and waits for `welcome`. Returns it with its `seq` (which
/// should be absent).
pub(crate) async fn handshake<S: TransportSink, R: TransportStream>(
    sink: &mut S,
    stream: &mut R,
    hello: String,
) -> Result<(Welcome, Option<u64>), Error> {
    sink.send(Outgoing::Text(hello)).await?;
    match stream.next().await {
        Some(Ok(Incoming::Text(bytes))) => {
            let Received { seq, message } = decode_server(&bytes)
                .map_err(|e| Error::Protocol(format!("undecodable answer to hello: {e}")))?;
            match message {
                ServerMessage::Welcome(w) => Ok((w, seq)),
                ServerMessage::Error { code, message, .. } => Err(Error::Server { code, message }),
                other => Err(Error::Protocol(format!(
                    "expected welcome, got {}",
                    other.kind().as_str()
                ))),
            }
        }
        Some(Ok(Incoming::Binary)) => Err(Error::Protocol("binary frame before welcome".into())),
        Some(Ok(Incoming::Closed(info))) => Err(info.into()),
        Some(Err(e)) => Err(e),
        None => Err(CloseInfo::lost("connection lost before welcome").into()),
    }
}

/// The `id` a message answers, when it is a reply.
pub(crate) fn reply_id(message: &ServerMessage) -> Option<u64> {
    match message {
        ServerMessage::Ack { id } => Some(*id),
        ServerMessage::Joined { id, .. }
        | ServerMessage::Left { id, .. }
        | ServerMessage::Peers { id, .. }
        | ServerMessage::Pong { id }
        | ServerMessage::Error { id, .. } => *id,
        ServerMessage::Welcome(w) => w.id,
        ServerMessage::PeerJoined { .. }
        | ServerMessage::PeerLeft { .. }
        | ServerMessage::PeerUpdated { .. }
        | ServerMessage::Signal { .. }
        | ServerMessage::Broadcast { .. }
        | ServerMessage::Reconnect { .. } => None,
    }
}

/// Reads until the connection ends, then records how and stops the writer.
pub(crate) async fn read_loop<R: TransportStream>(
    mut stream: R,
    shared: std::sync::Arc<Shared>,
    events: mpsc::Sender<Event>,
    mut seq: SeqTracker,
    writer: AbortHandle,
) {
    let info = loop {
        match stream.next().await {
            Some(Ok(Incoming::Text(bytes))) => dispatch(&bytes, &shared, &mut seq, &events).await,
            Some(Ok(Incoming::Binary)) => {
                shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("binary frame from the server");
            }
            Some(Ok(Incoming::Closed(info))) => break info,
            Some(Err(Error::Closed { code, reason })) => break CloseInfo { code, reason },
            Some(Err(e)) => break CloseInfo::lost(e.to_string()),
            None => break CloseInfo::lost("connection lost without a close frame"),
        }
    };
    tracing::debug!(peer = %shared.welcome.peer, %info, "connection ended");
    shared.set_closed(info);
    drop(events);
    // Keep reading briefly so tungstenite flushes its answer to a close frame.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    writer.abort();
}

async fn dispatch(
    bytes: &[u8],
    shared: &Shared,
    seq: &mut SeqTracker,
    events: &mpsc::Sender<Event>,
) {
    let Received { seq: n, message } = match decode_server(bytes) {
        Ok(r) => r,
        Err(e) => {
            shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "undecodable server message");
            return;
        }
    };
    if let ServerMessage::Welcome(_) = message {
        shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("second welcome");
    } else if let Err(e) = seq.observe(n) {
        shared.seq_errors.store(seq.errors(), Ordering::Relaxed);
        tracing::warn!(peer = %shared.welcome.peer, error = %e, "seq violation");
    }
    shared.last_seq.store(seq.last(), Ordering::Relaxed);
    let message = match reply_id(&message) {
        Some(id) => match shared.pending.complete(id, message) {
            None => return,
            Some(unclaimed) => unclaimed,
        },
        None => message,
    };
    // Waits while the application does not read its events: backpressure.
    let _ = events.send(Event::Message { seq: n, message }).await;
}

/// Writes queued messages, flushing once per batch, until a close frame is
/// written, the transport fails, or every handle is gone.
pub(crate) async fn write_loop<S: TransportSink>(mut sink: S, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut closing = false;
        for item in batch.drain(..) {
            closing = matches!(item, Outgoing::Close { .. });
            if let Err(e) = sink.feed(item).await {
                tracing::debug!(error = %e, "write failed");
                return;
            }
            if closing {
                break;
            }
        }
        if let Err(e) = sink.flush().await {
            tracing::debug!(error = %e, "flush failed");
            return;
        }
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pantheon_protocol::{ErrorCode, PeerId, RoomName};

    #[test]
    fn replies_are_recognised_by_id() {
        assert_eq!(reply_id(&ServerMessage::Ack { id: 3 }), Some(3));
        assert_eq!(reply_id(&ServerMessage::Pong { id: None }), None);
        assert_eq!(
            reply_id(&ServerMessage::error(Some(9), ErrorCode::NotInRoom, "x")),
            Some(9)
        );
        let signal = ServerMessage::Signal {
            room: RoomName::new("r").unwrap(),
            from: PeerId::new("p").unwrap(),
            data: pantheon_protocol::Data::from_value(&1).unwrap(),
        };
        assert_eq!(reply_id(&signal), None);
    }
}
