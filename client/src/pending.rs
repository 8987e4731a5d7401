//! Request ids and the requests waiting for their reply.
//!
//! A caller registers its id before the request is sent, so the reply can
//! never overtake the registration; the reader task completes it by id. When
//! the connection ends every waiter is dropped (its receiver sees the close)
//! and no new one is accepted.

use pantheon_protocol::{MAX_ID, ServerMessage};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Hands out request ids 1, 2, 3, ... up to 2^53 − 1, then wraps to 1.
#[derive(Debug, Default)]
pub(crate) struct IdAllocator(AtomicU64);

impl IdAllocator {
    /// An allocator whose first id is `first` (clamped into 1..=MAX_ID).
    #[cfg(test)]
    pub(crate) fn starting_at(first: u64) -> Self {
        Self(AtomicU64::new(first.clamp(1, MAX_ID) - 1))
    }

    /// The next id.
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) % MAX_ID + 1
    }
}

/// What a waiting request receives: the reply (an `error` included).
pub(crate) type Reply = ServerMessage;

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    closed: bool,
}

/// The requests waiting for a reply, by id.
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<Inner>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the reply to `id`; `None` once the connection has ended.
    pub(crate) fn register(&self, id: u64) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        inner.waiting.insert(id, tx);
        Some(rx)
    }

    /// Stops waiting for `id` (the caller gave up).
    pub(crate) fn cancel(&self, id: u64) {
        let removed = self.lock().waiting.remove(&id);
        drop(removed);
    }

    /// Hands `reply` to whoever waits for `id`; gives it back when nobody
    /// does, so that it becomes an event.
    pub(crate) fn complete(&self, id: u64, reply: Reply) -> Option<Reply> {
        let waiter = self.lock().waiting.remove(&id);
        match waiter {
            // A waiter that gave up in the meantime does not turn its reply
            // into an event: it was a reply all the same.
            Some(tx) => {
                let _ = tx.send(reply);
                None
            }
            None => Some(reply),
        }
    }

    /// The connection ended: wakes every waiter and refuses new ones.
    pub(crate) fn close(&self) {
        let waiting = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.waiting)
        };
        drop(waiting);
    }

    /// How many requests wait for a reply.
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_are_unique() {
        let ids = IdAllocator::default();
        let got: Vec<u64> = (0..5).map(|_| ids.next()).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn ids_stay_javascript_safe_and_wrap_to_one() {
        let ids = IdAllocator::starting_at(MAX_ID - 1);
        assert_eq!(ids.next(), MAX_ID - 1);
        assert_eq!(ids.next(), MAX_ID);
        assert_eq!(ids.next(), 1);
        assert_eq!(IdAllocator::starting_at(0).next(), 1);
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let ids = std::sync::Arc::new(IdAllocator::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..1000).map(|_| ids.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn reply_goes_to_its_waiter() {
        let p = Pending::default();
        let mut rx = p.register(7).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p.complete(8, ServerMessage::Ack { id: 8 }).is_some());
        assert!(p.complete(7, ServerMessage::Ack { id: 7 }).is_none());
        assert_eq!(rx.try_recv().unwrap(), ServerMessage::Ack { id: 7 });
        assert_eq!(p.len(), 0);
        // A second reply with the same id is no longer anyone's.
        assert!(p.complete(7, ServerMessage::Ack { id: 7 }).is_some());
    }

    #[test]
    fn cancelled_waiter_turns_reply_into_event() {
        let p = Pending::default();
        let _rx = p.register(1).unwrap();
        p.cancel(1);
        assert!(p.complete(1, ServerMessage::Pong { id: Some(1) }).is_some());
    }

    #[test]
    fn close_wakes_waiters_and_refuses_new_ones() {
        let p = Pending::default();
        let mut rx = p.register(1).unwrap();
        p.close();
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(p.register(2).is_none());
        assert_eq!(p.len(), 0);
    }
}
