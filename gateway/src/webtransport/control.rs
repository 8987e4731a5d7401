//! One WebTransport session as the transport-neutral seam: the client's
//! first bidirectional stream carries NDJSON both ways ([`Incoming`],
//! [`Outgoing`]); everything else the client opens is refused ([`guard`]).
//!
//! How a session ended: a `CLOSE_WEBTRANSPORT_SESSION` capsule with code 0
//! (what a browser's `wt.close()` sends) is a goodbye, and so is the client
//! finishing its control stream (FIN) — the orderly end open to clients that
//! cannot send the capsule, such as wtransport — unless a capsule with
//! another code follows at once. A capsule with another code, a reset
//! control stream, a bare QUIC close, a lost connection or the idle timeout
//! is a loss.
//!
//! A bare QUIC `CONNECTION_CLOSE` is a loss whatever its code, because its
//! code cannot be read reliably: web-transport-quinn closes the connection
//! itself as soon as its CONNECT stream fails, and quinn then reports
//! `LocallyClosed` in place of the peer's reason; which of the two a reader
//! sees depends on task scheduling.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Sink;
use futures_util::stream::{BoxStream, StreamExt};
use pantheon_protocol::ndjson::LineDecoder;
use pantheon_protocol::{CloseCode, Inbound, Outbound};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use web_transport_quinn::{RecvStream, SendStream, Session, SessionError, WebTransportError};

/// Stream error code for streams and datagrams the protocol does not use.
pub(super) const REFUSED: u32 = 1;
/// Largest read from the control stream at once.
const READ_CHUNK: usize = 16 * 1024;
/// After the control stream ends, how long to wait for the session's close
/// reason (the capsule travels on another stream and may come later).
const CLOSE_WAIT: Duration = Duration::from_millis(250);
/// How long a close waits for queued messages to be acknowledged before the
/// session is closed regardless.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// The client's side: one [`Inbound`] per NDJSON line, then one
/// [`Inbound::Closed`] or [`Inbound::TooLarge`].
pub(super) type Incoming = BoxStream<'static, Inbound>;

/// Splits a session into the seam, and starts the task that hands over the
/// control stream and refuses everything else. `max_line` is the longest
/// line read (4 × `max_message_bytes`).
pub(super) fn split(session: Session, max_line: usize, tasks: TaskTracker) -> (Incoming, Outgoing) {
    let (recv_tx, recv_rx) = oneshot::channel();
    let (send_tx, send_rx) = oneshot::channel();
    tasks.spawn(guard(session.clone(), recv_tx, send_tx));
    let reader = Reader {
        session: session.clone(),
        control: Control::Waiting(recv_rx),
        decoder: LineDecoder::new(max_line),
        done: false,
    };
    let incoming = futures_util::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        Some((item, reader))
    })
    .boxed();
    let outgoing = Outgoing {
        session,
        send: Slot::Waiting(send_rx),
        buf: BytesMut::new(),
        closed: false,
        tasks,
    };
    (incoming, outgoing)
}

/// Hands the client's first bidirectional stream to the reader and writer,
/// then refuses further streams and drops datagrams until the session ends.
/// Nothing a client opens beyond the control stream is ever buffered.
async fn guard(
    session: Session,
    recv_tx: oneshot::Sender<RecvStream>,
    send_tx: oneshot::Sender<SendStream>,
) {
    let Ok((send, recv)) = session.accept_bi().await else {
        return;
    };
    let _ = send_tx.send(send);
    let _ = recv_tx.send(recv);
    loop {
        tokio::select! {
            r = session.accept_bi() => match r {
                Ok((mut send, mut recv)) => {
                    tracing::debug!("refusing an extra bidirectional stream");
                    let _ = send.reset(REFUSED);
                    let _ = recv.stop(REFUSED);
                }
                Err(_) => return,
            },
            r = session.accept_uni() => match r {
                Ok(mut recv) => {
                    tracing::debug!("refusing a unidirectional stream");
                    let _ = recv.stop(REFUSED);
                }
                Err(_) => return,
            },
            r = session.read_datagram() => if r.is_err() {
                return;
            },
        }
    }
}

enum Control {
    Waiting(oneshot::Receiver<RecvStream>),
    Open(RecvStream),
}

struct Reader {
    session: Session,
    control: Control,
    decoder: LineDecoder,
    done: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Inbound> {
        if self.done {
            return None;
        }
        loop {
            match self.decoder.next_line() {
                Ok(Some(line)) => return Some(Inbound::Text(line)),
                Ok(None) => {}
                Err(_too_long) => {
                    self.done = true;
                    return Some(Inbound::TooLarge);
                }
            }
            let recv = match &mut self.control {
                Control::Open(recv) => recv,
                Control::Waiting(rx) => match rx.await {
                    Ok(recv) => {
                        self.control = Control::Open(recv);
                        continue;
                    }
                    Err(_) => return Some(self.ended(false).await),
                },
            };
            // Never pull more than can still belong to an acceptable line:
            // the rest stays in quinn's (bounded) flow-control window.
            let max = self.decoder.room_left().min(READ_CHUNK);
            match recv.read_chunk(max, true).await {
                Ok(Some(chunk)) => self.decoder.extend(&chunk.bytes),
                // No more messages can come either way.
                Ok(None) => return Some(self.ended(true).await),
                Err(_) => return Some(self.ended(false).await),
            }
        }
    }

    /// `finished`: the client ended the control stream cleanly.
    async fn ended(&mut self, finished: bool) -> Inbound {
        self.done = true;
        // The capsule travels on the CONNECT stream and may trail the end of
        // the control stream a little.
        let reason = match self.session.close_reason() {
            Some(reason) => Some(reason),
            None => tokio::time::timeout(CLOSE_WAIT, self.session.closed())
                .await
                .ok(),
        };
        let capsule = match reason {
            Some(SessionError::WebTransportError(WebTransportError::Closed(code, _))) => Some(code),
            _ => None,
        };
        let goodbye = capsule.map_or(finished, |code| code == 0);
        tracing::debug!(
            client = %self.session.remote_address(),
            finished,
            ?reason,
            goodbye,
            "WebTransport control stream ended"
        );
        Inbound::Closed { goodbye }
    }
}

enum Slot {
    Waiting(oneshot::Receiver<SendStream>),
    Open(SendStream),
    Gone,
}

/// The server's side: NDJSON lines on the control stream, many per write;
/// [`Outbound::Close`] closes the session with that application code and
/// reason, after the lines before it have been delivered.
pub(super) struct Outgoing {
    session: Session,
    send: Slot,
    buf: BytesMut,
    closed: bool,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("buffered", &self.buf.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The session is gone; nothing more can be sent.
#[derive(Debug, thiserror::Error)]
#[error("webtransport control stream: {0}")]
pub(super) struct SendError(#[from] std::io::Error);

impl Outgoing {
    /// Starts closing: the buffered lines are written and acknowledged
    /// (within [`CLOSE_DRAIN`]), then the session is closed with `code`.
    fn close(&mut self, code: CloseCode) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let send = match std::mem::replace(&mut self.send, Slot::Gone) {
            Slot::Open(send) => Some(send),
            Slot::Waiting(mut rx) => rx.try_recv().ok(),
            Slot::Gone => None,
        };
        let rest = self.buf.split().freeze();
        // Taken over or too slow: what is queued will be replayed on resume,
        // and a client that does not read would only delay the close.
        let urgent = matches!(code, CloseCode::TakenOver | CloseCode::SlowConsumer);
        let session = self.session.clone();
        tracing::debug!(client = %session.remote_address(), %code, "closing WebTransport session");
        self.tasks.spawn(async move {
            if let (Some(send), false) = (send, urgent) {
                let _ = tokio::time::timeout(CLOSE_DRAIN, drain(send, rest)).await;
            }
            session.close(code.as_u16().into(), code.reason().as_bytes());
        });
    }
}

async fn drain(mut send: SendStream, rest: Bytes) {
    if !rest.is_empty() && send.write_all(&rest).await.is_err() {
        return;
    }
    if send.finish().is_ok() {
        let _ = send.stopped().await;
    }
}

impl Sink<Outbound> for Outgoing {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        // Always ready: the session's writer flushes every batch it feeds,
        // so the buffer holds one batch at most, and a close must never wait
        // behind a client that does not read.
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outbound) -> Result<(), SendError> {
        match item {
            Outbound::Text(text) => {
                if !self.closed {
                    self.buf.reserve(text.len() + 1);
                    self.buf.extend_from_slice(&text);
                    self.buf.extend_from_slice(b"\n");
                }
            }
            // QUIC keep-alive does this job.
            Outbound::Ping => {}
            Outbound::Close(code) => self.close(code),
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let this = &mut *self;
        while !this.buf.is_empty() {
            let send = match &mut this.send {
                Slot::Open(send) => send,
                Slot::Waiting(rx) => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(send) => {
                        this.send = Slot::Open(send);
                        continue;
                    }
                    Err(_) => {
                        this.send = Slot::Gone;
                        continue;
                    }
                },
                Slot::Gone => {
                    return Poll::Ready(Err(std::io::Error::from(
                        std::io::ErrorKind::NotConnected,
                    )
                    .into()));
                }
            };
            let n = ready!(Pin::new(send).poll_write(cx, &this.buf))?;
            this.buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        // Ended without a code (the client left, or its control stream did):
        // what is buffered is still delivered if the client is there.
        self.close(CloseCode::Normal);
        Poll::Ready(Ok(()))
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        // The writer stopped on an error: make sure the session goes too.
        if !self.closed {
            self.closed = true;
            let code = CloseCode::Normal;
            self.session
                .close(code.as_u16().into(), code.reason().as_bytes());
        }
    }
}
