//! One session's delivery state: its `seq` counter, the replay buffer kept for
//! resume, and the connection it is attached to (if any).
//!
//! Every server message after `welcome` goes through [`Peer::deliver`], which
//! numbers it, keeps it for replay and hands it to the attached connection's
//! bounded queue. A full queue never drops silently: the connection is closed
//! with 4009 and the session can resume from its buffer.

use crate::metrics::Metrics;
use bytes::Bytes;
use pantheon_protocol::{CloseCode, Outbound, PeerId, ServerKind, with_seq};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// A way to close one connection at once, from any task.
#[derive(Debug, Default)]
pub struct Control {
    code: Mutex<Option<CloseCode>>,
    token: CancellationToken,
}

impl Control {
    /// Asks the connection to close with `code` (the first request wins).
    pub fn close(&self, code: CloseCode) {
        let mut slot = lock(&self.code);
        if slot.is_none() {
            *slot = Some(code);
        }
        drop(slot);
        self.token.cancel();
    }

    /// The requested close code, once [`Control::close`] was called.
    pub fn code(&self) -> Option<CloseCode> {
        *lock(&self.code)
    }

    /// Resolves when a close was requested.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }
}

/// A connection a session is attached to.
#[derive(Debug, Clone)]
pub struct Link {
    /// The connection's id (unique per process).
    pub conn: u64,
    /// Its outbound queue.
    pub tx: mpsc::Sender<Outbound>,
    /// Its close switch.
    pub control: Arc<Control>,
    /// How many delivered messages may wait in `tx`, beyond the `welcome`
    /// and replay that [`Peer::attach`] queued, before the connection is
    /// closed as a slow consumer. Well below `RESUME_BUFFER`, it lets a slow
    /// consumer resume without a gap.
    pub queue_limit: usize,
}

#[derive(Debug)]
struct Attached {
    link: Link,
    /// Set once a message could not be queued: nothing more is sent on this
    /// connection, so the client never sees a gap.
    broken: bool,
    /// The queue length at which the connection is a slow consumer.
    limit: usize,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    buffer: VecDeque<Bytes>,
    attached: Option<Attached>,
    generation: u64,
    ended: bool,
}

/// Why a session cannot be resumed from a given `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Messages after `last_seq` were already dropped from the buffer.
    Overrun,
    /// `last_seq` is ahead of anything sent.
    Future,
    /// The session has ended.
    Ended,
}

/// One session (a peer), shared between its connection and everyone who
/// delivers to it.
#[derive(Debug)]
pub struct Peer {
    /// The peer id.
    pub id: PeerId,
    secret: String,
    capacity: usize,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take every session down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peer {
    /// A new, unattached session that keeps `capacity` messages for replay.
    pub fn new(id: PeerId, secret: String, capacity: usize) -> Self {
        Self {
            id,
            secret,
            capacity,
            state: Mutex::new(State {
                next_seq: 1,
                buffer: VecDeque::new(),
                attached: None,
                generation: 0,
                ended: false,
            }),
        }
    }

    /// A session handed over from another instance: `lines` are the
    /// numbered messages the client has not seen, ending before `next_seq`.
    pub fn restore(
        id: PeerId,
        secret: String,
        capacity: usize,
        next_seq: u64,
        lines: Vec<Bytes>,
    ) -> Self {
        let peer = Self::new(id, secret, capacity);
        {
            let mut st = lock(&peer.state);
            st.next_seq = next_seq.max(1);
            // Every line is still owed to the client, even beyond capacity.
            st.buffer = lines.into();
        }
        peer
    }

    /// The session's secret (registered with the bus for resumes elsewhere).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The numbered messages after `last_seq` and the `seq` of the next one,
    /// for handing the session to another instance.
    pub fn lines_after(&self, last_seq: u64) -> Result<(Vec<Bytes>, u64), ReplayError> {
        let st = lock(&self.state);
        if st.ended {
            return Err(ReplayError::Ended);
        }
        let first_kept = st.next_seq - st.buffer.len() as u64;
        if last_seq >= st.next_seq {
            return Err(ReplayError::Future);
        }
        if last_seq + 1 < first_kept {
            return Err(ReplayError::Overrun);
        }
        let skip = (last_seq + 1 - first_kept) as usize;
        Ok((st.buffer.iter().skip(skip).cloned().collect(), st.next_seq))
    }

    /// The opaque resume token given in `welcome`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Whether `secret` is this session's, compared in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Numbers, keeps and queues one encoded message (encoded without `seq`).
    pub fn deliver(&self, body: &[u8], kind: ServerKind, metrics: &Metrics) {
        let mut st = lock(&self.state);
        if st.ended {
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let line = with_seq(body, seq);
        if self.capacity > 0 {
            while st.buffer.len() >= self.capacity {
                st.buffer.pop_front();
            }
            st.buffer.push_back(line.clone());
        }
        if let Some(a) = st.attached.as_mut().filter(|a| !a.broken) {
            let queued = a.link.tx.max_capacity() - a.link.tx.capacity();
            let sent = if queued >= a.limit {
                Err(TrySendError::Full(Outbound::Text(line)))
            } else {
                a.link.tx.try_send(Outbound::Text(line))
            };
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    a.broken = true;
                    a.link.control.close(CloseCode::SlowConsumer);
                }
                Err(TrySendError::Closed(_)) => a.broken = true,
            }
        }
        drop(st);
        metrics.sent(kind, 1);
    }

    /// Attaches a connection, queueing `welcome` and then every buffered
    /// message after `last_seq`. A connection attached before is closed with
    /// 4010. Returns the new generation.
    pub fn attach(&self, link: Link, welcome: Bytes, last_seq: u64) -> Result<(), ReplayError> {
        let mut st = lock(&self.state);
        if st.ended {
            return Err(ReplayError::Ended);
        }
        let first_kept = st.next_seq - st.buffer.len() as u64;
        if last_seq >= st.next_seq {
            return Err(ReplayError::Future);
        }
        if last_seq + 1 < first_kept {
            return Err(ReplayError::Overrun);
        }
        if let Some(old) = st.attached.take() {
            old.link.control.close(CloseCode::TakenOver);
        }
        let skip = (last_seq + 1 - first_kept) as usize;
        let limit = link.queue_limit + 1 + (st.buffer.len() - skip);
        let mut broken = link.tx.try_send(Outbound::Text(welcome)).is_err();
        for line in st.buffer.iter().skip(skip) {
            if broken {
                break;
            }
            broken = link.tx.try_send(Outbound::Text(line.clone())).is_err();
        }
        if broken {
            link.control.close(CloseCode::SlowConsumer);
        }
        st.attached = Some(Attached {
            link,
            broken,
            limit,
        });
        st.generation += 1;
        Ok(())
    }

    /// Detaches connection `conn` if it is the attached one; returns the
    /// generation that a grace timer must still find for the session to
    /// expire.
    pub fn detach(&self, conn: u64) -> Option<u64> {
        let mut st = lock(&self.state);
        if st.ended || st.attached.as_ref().is_none_or(|a| a.link.conn != conn) {
            return None;
        }
        st.attached = None;
        st.generation += 1;
        Some(st.generation)
    }

    /// Whether connection `conn` is the one attached.
    pub fn is_attached_to(&self, conn: u64) -> bool {
        lock(&self.state)
            .attached
            .as_ref()
            .is_some_and(|a| a.link.conn == conn)
    }

    /// Whether the session is detached and still at `generation`.
    pub fn is_expired_at(&self, generation: u64) -> bool {
        let st = lock(&self.state);
        !st.ended && st.attached.is_none() && st.generation == generation
    }

    /// Ends the session: nothing is delivered after this. An attached
    /// connection is closed with `close` when given.
    pub fn end(&self, close: Option<CloseCode>) {
        let mut st = lock(&self.state);
        st.ended = true;
        st.buffer = VecDeque::new();
        if let (Some(a), Some(code)) = (st.attached.take(), close) {
            a.link.control.close(code);
        }
    }

    /// Whether the session has ended.
    pub fn has_ended(&self) -> bool {
        lock(&self.state).ended
    }

    /// The last `seq` assigned (0 before any message).
    pub fn last_seq(&self) -> u64 {
        lock(&self.state).next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pantheon_protocol::{ServerMessage, encode_server};

    fn link(conn: u64, cap: usize) -> (Link, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            Link {
                conn,
                tx,
                control: Arc::default(),
                queue_limit: cap,
            },
            rx,
        )
    }

    fn text(o: Outbound) -> String {
        match o {
            Outbound::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_buffers_and_replays() {
        let m = Metrics::new("t", "t");
        let p = Peer::new(PeerId::new("p_1").unwrap(), "s".into(), 3);
        let (l, mut rx) = link(1, 16);
        p.attach(l, Bytes::from_static(b"{\"type\":\"welcome\"}"), 0)
            .unwrap();
        assert!(text(rx.try_recv().unwrap()).contains("welcome"));
        let body = encode_server(&ServerMessage::Pong { id: None });
        for _ in 0..5 {
            p.deliver(&body, ServerKind::Pong, &m);
        }
        for seq in 1..=5 {
            assert!(text(rx.try_recv().unwrap()).starts_with(&format!("{{\"seq\":{seq},")));
        }
        assert_eq!(p.detach(1), Some(2));
        // Buffer holds 3..=5: resuming from 2 works, from 1 does not.
        let (l, _rx) = link(2, 16);
        assert_eq!(
            p.attach(l, Bytes::from_static(b"{}"), 1),
            Err(ReplayError::Overrun)
        );
        let (l, _rx) = link(2, 16);
        assert_eq!(
            p.attach(l, Bytes::from_static(b"{}"), 6),
            Err(ReplayError::Future)
        );
        let (l, mut rx) = link(2, 16);
        p.attach(l, Bytes::from_static(b"{}"), 2).unwrap();
        assert_eq!(text(rx.try_recv().unwrap()), "{}");
        for seq in 3..=5 {
            assert!(text(rx.try_recv().unwrap()).starts_with(&format!("{{\"seq\":{seq},")));
        }
    }

    #[test]
    fn full_queue_closes_as_slow_consumer_and_never_gaps() {
        let m = Metrics::new("t", "t");
        let p = Peer::new(PeerId::new("p_1").unwrap(), "s".into(), 100);
        let (l, mut rx) = link(1, 3);
        let control = l.control.clone();
        p.attach(l, Bytes::from_static(b"{}"), 0).unwrap();
        let body = encode_server(&ServerMessage::Pong { id: None });
        for _ in 0..4 {
            p.deliver(&body, ServerKind::Pong, &m);
        }
        assert_eq!(control.code(), Some(CloseCode::SlowConsumer));
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        // Room again, but the connection is broken: nothing more is queued.
        p.deliver(&body, ServerKind::Pong, &m);
        assert!(rx.try_recv().is_err());
        assert_eq!(p.last_seq(), 5);
    }

    #[test]
    fn slow_consumer_limit_counts_what_follows_the_replay() {
        let m = Metrics::new("t", "t");
        let p = Peer::new(PeerId::new("p_1").unwrap(), "s".into(), 100);
        let body = encode_server(&ServerMessage::Pong { id: None });
        for _ in 0..5 {
            p.deliver(&body, ServerKind::Pong, &m);
        }
        // A large channel, a live queue of 2: welcome and 5 replayed
        // messages fit, then 2 more, and the next one is one too many.
        let (mut l, _rx) = link(1, 64);
        l.queue_limit = 2;
        let control = l.control.clone();
        p.attach(l, Bytes::from_static(b"{}"), 0).unwrap();
        p.deliver(&body, ServerKind::Pong, &m);
        p.deliver(&body, ServerKind::Pong, &m);
        assert_eq!(control.code(), None);
        p.deliver(&body, ServerKind::Pong, &m);
        assert_eq!(control.code(), Some(CloseCode::SlowConsumer));
    }

    #[test]
    fn takeover_closes_the_old_connection() {
        let p = Peer::new(PeerId::new("p_1").unwrap(), "s".into(), 10);
        let (a, _ra) = link(1, 4);
        let ca = a.control.clone();
        p.attach(a, Bytes::from_static(b"{}"), 0).unwrap();
        let (b, _rb) = link(2, 4);
        p.attach(b, Bytes::from_static(b"{}"), 0).unwrap();
        assert_eq!(ca.code(), Some(CloseCode::TakenOver));
        assert_eq!(
            p.detach(1),
            None,
            "the old connection no longer owns the session"
        );
        assert!(p.is_attached_to(2));
    }

    #[test]
    fn secrets_compare_exactly() {
        let p = Peer::new(PeerId::new("p_1").unwrap(), "abc".into(), 0);
        assert!(p.secret_matches("abc"));
        assert!(!p.secret_matches("abd"));
        assert!(!p.secret_matches("ab"));
        assert_eq!(p.token(), "p_1.abc");
    }
}
