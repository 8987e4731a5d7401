//! Rooms and sessions of this instance, and the membership rules.
//!
//! All membership changes and every relay happen under one short lock, which
//! is never held across an `.await`. Deliveries made under it are what give
//! the ordering guarantees: a joiner gets `joined` before anything from the
//! room, and one sender's messages reach one recipient in order.

use crate::bus::{Bus, RouteError};
use crate::metrics::Metrics;
use crate::peer::{Link, Peer, ReplayError};
use bytes::Bytes;
use pantheon_protocol::{
    CloseCode, Data, ErrorCode, LeaveReason, Limits, Meta, PeerId, PeerInfo, RoomName, ServerKind,
    ServerMessage, encode_server,
};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A request failed: the error to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The protocol error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: &'static str,
}

const fn refuse(code: ErrorCode, message: &'static str) -> Refusal {
    Refusal { code, message }
}

const NOT_IN_ROOM: Refusal = refuse(ErrorCode::NotInRoom, "you are not a member of this room");

/// Why a resume did not succeed (a new session is opened instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// No such session here (unknown, expired, or a wrong token).
    Unknown,
    /// Messages the client has not seen are no longer kept.
    Overrun,
}

impl ResumeFailure {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Overrun => "overrun",
        }
    }
}

#[derive(Debug)]
struct Member {
    peer: Arc<Peer>,
    meta: Meta,
}

#[derive(Debug, Default)]
struct Room {
    members: HashMap<PeerId, Member>,
}

#[derive(Debug)]
struct Entry {
    peer: Arc<Peer>,
    rooms: Vec<RoomName>,
}

#[derive(Debug, Default)]
struct Inner {
    peers: HashMap<PeerId, Entry>,
    rooms: HashMap<RoomName, Room>,
}

/// Settings the hub enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-session limits.
    pub limits: Limits,
    /// Messages kept per session for replay.
    pub resume_buffer: usize,
    /// How long a detached session waits for a resume.
    pub resume_grace: Duration,
}

/// This instance's rooms and sessions.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    settings: Settings,
    metrics: Arc<Metrics>,
    bus: Arc<dyn Bus>,
}

/// Builds the encoded `welcome` for a session once its peer id is known.
pub type WelcomeFn<'a> = &'a dyn Fn(&Peer, bool) -> Bytes;

impl Hub {
    /// An empty hub.
    pub fn new(settings: Settings, metrics: Arc<Metrics>, bus: Arc<dyn Bus>) -> Self {
        Self {
            inner: Mutex::default(),
            settings,
            metrics,
            bus,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bus behind this hub.
    pub fn bus(&self) -> &dyn Bus {
        &*self.bus
    }

    /// Local counts: (rooms, sessions).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.rooms.len(), inner.peers.len())
    }

    fn new_peer(&self) -> Arc<Peer> {
        let mut rng = rand::rng();
        let id: [u8; 10] = rng.random();
        let secret: [u8; 16] = rng.random();
        let id = PeerId::new(&format!("p_{}", hex(&id))).expect("hex ids are valid");
        Arc::new(Peer::new(id, hex(&secret), self.settings.resume_buffer))
    }

    /// Opens a new session on `link`, sending `welcome` first.
    pub fn open(&self, link: Link, welcome: WelcomeFn<'_>) -> Arc<Peer> {
        let peer = self.new_peer();
        peer.attach(link, welcome(&peer, false), 0)
            .expect("a new session accepts any link");
        let mut inner = self.lock();
        inner.peers.insert(
            peer.id.clone(),
            Entry {
                peer: peer.clone(),
                rooms: Vec::new(),
            },
        );
        self.metrics.peers.set(inner.peers.len() as i64);
        peer
    }

    /// Resumes the session named by `token` on `link`, replaying what the
    /// client has not seen. On failure nothing is sent on `link`; an overrun
    /// session ends at once (`peer_left` `disconnected`).
    pub fn resume(
        &self,
        token: &str,
        last_seq: u64,
        link: Link,
        welcome: WelcomeFn<'_>,
    ) -> Result<Arc<Peer>, ResumeFailure> {
        let (id, secret) = token.rsplit_once('.').ok_or(ResumeFailure::Unknown)?;
        let mut inner = self.lock();
        let peer = inner
            .peers
            .get(id)
            .map(|e| e.peer.clone())
            .filter(|p| p.secret_matches(secret))
            .ok_or(ResumeFailure::Unknown)?;
        match peer.attach(link, welcome(&peer, true), last_seq) {
            Ok(()) => Ok(peer),
            Err(ReplayError::Ended) => Err(ResumeFailure::Unknown),
            Err(ReplayError::Overrun | ReplayError::Future) => {
                // The session can no longer be resumed without a gap: end it
                // rather than let it linger until its grace window ends.
                self.remove_locked(&mut inner, &peer.id, LeaveReason::Disconnected);
                peer.end(Some(CloseCode::TakenOver));
                Err(ResumeFailure::Overrun)
            }
        }
    }

    /// Detaches connection `conn` from `peer` and starts the grace window.
    pub fn detach(self: &Arc<Self>, peer: &Arc<Peer>, conn: u64) {
        let Some(generation) = peer.detach(conn) else {
            return;
        };
        let hub = Arc::clone(self);
        let peer = Arc::clone(peer);
        let grace = self.settings.resume_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let mut inner = hub.lock();
            if peer.is_expired_at(generation) {
                hub.remove_locked(&mut inner, &peer.id, LeaveReason::Disconnected);
                peer.end(None);
            }
        });
    }

    /// Ends the session at once (a goodbye), if `conn` still owns it.
    pub fn goodbye(&self, peer: &Peer, conn: u64) {
        let mut inner = self.lock();
        if peer.is_attached_to(conn) {
            self.remove_locked(&mut inner, &peer.id, LeaveReason::Left);
            peer.end(None);
        }
    }

    fn remove_locked(&self, inner: &mut Inner, id: &PeerId, reason: LeaveReason) {
        let Some(entry) = inner.peers.remove(id) else {
            return;
        };
        for room in entry.rooms {
            self.leave_room_locked(inner, &room, id, reason);
        }
        self.metrics.peers.set(inner.peers.len() as i64);
    }

    fn leave_room_locked(
        &self,
        inner: &mut Inner,
        room: &RoomName,
        id: &PeerId,
        reason: LeaveReason,
    ) {
        let Some(r) = inner.rooms.get_mut(room) else {
            return;
        };
        if r.members.remove(id).is_none() {
            return;
        }
        if r.members.is_empty() {
            inner.rooms.remove(room);
            self.metrics.rooms.set(inner.rooms.len() as i64);
            return;
        }
        let body = encode_server(&ServerMessage::PeerLeft {
            room: room.clone(),
            peer: id.clone(),
            reason,
        });
        for m in r.members.values() {
            m.peer.deliver(&body, ServerKind::PeerLeft, &self.metrics);
        }
        let _ = self.bus.publish(room, id, &body);
    }

    fn others(room: &Room, me: &PeerId) -> Vec<PeerInfo> {
        room.members
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, m)| PeerInfo {
                peer: id.clone(),
                meta: m.meta.clone(),
            })
            .collect()
    }

    /// `join`: replies `joined` and tells the others.
    pub fn join(
        &self,
        peer: &Arc<Peer>,
        room: RoomName,
        meta: Meta,
        id: Option<u64>,
    ) -> Result<(), Refusal> {
        let limits = &self.settings.limits;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = inner.peers.get_mut(&peer.id).ok_or(refuse(
            ErrorCode::Internal,
            "session is no longer registered",
        ))?;
        let already = entry.rooms.contains(&room);
        if !already && entry.rooms.len() >= limits.max_rooms {
            return Err(refuse(
                ErrorCode::TooManyRooms,
                "too many rooms for this session",
            ));
        }
        let r = inner.rooms.entry(room.clone()).or_default();
        let notice = match r.members.get_mut(&peer.id) {
            Some(m) if m.meta == meta => None,
            Some(m) => {
                m.meta = meta.clone();
                Some((
                    ServerKind::PeerUpdated,
                    ServerMessage::PeerUpdated {
                        room: room.clone(),
                        peer: peer.id.clone(),
                        meta,
                    },
                ))
            }
            None => {
                if r.members.len() >= limits.max_room_peers {
                    if r.members.is_empty() {
                        inner.rooms.remove(&room);
                    }
                    return Err(refuse(ErrorCode::RoomFull, "room is full"));
                }
                r.members.insert(
                    peer.id.clone(),
                    Member {
                        peer: peer.clone(),
                        meta: meta.clone(),
                    },
                );
                entry.rooms.push(room.clone());
                Some((
                    ServerKind::PeerJoined,
                    ServerMessage::PeerJoined {
                        room: room.clone(),
                        peer: peer.id.clone(),
                        meta,
                    },
                ))
            }
        };
        let reply = encode_server(&ServerMessage::Joined {
            id,
            room: room.clone(),
            peers: Self::others(r, &peer.id),
        });
        peer.deliver(&reply, ServerKind::Joined, &self.metrics);
        if let Some((kind, msg)) = notice {
            let body = encode_server(&msg);
            for (mid, m) in &r.members {
                if *mid != peer.id {
                    m.peer.deliver(&body, kind, &self.metrics);
                }
            }
            let _ = self.bus.publish(&room, &peer.id, &body);
        }
        if !already {
            self.metrics.rooms.set(inner.rooms.len() as i64);
        }
        Ok(())
    }

    /// `leave`: replies `left` and tells the others.
    pub fn leave(&self, peer: &Peer, room: RoomName, id: Option<u64>) -> Result<(), Refusal> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = inner.peers.get_mut(&peer.id).ok_or(NOT_IN_ROOM)?;
        let pos = entry
            .rooms
            .iter()
            .position(|r| *r == room)
            .ok_or(NOT_IN_ROOM)?;
        entry.rooms.swap_remove(pos);
        let reply = encode_server(&ServerMessage::Left {
            id,
            room: room.clone(),
        });
        peer.deliver(&reply, ServerKind::Left, &self.metrics);
        self.leave_room_locked(inner, &room, &peer.id, LeaveReason::Left);
        Ok(())
    }

    /// `update`: replaces meta, acks, and tells the others.
    pub fn update(
        &self,
        peer: &Peer,
        room: RoomName,
        meta: Meta,
        id: Option<u64>,
    ) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let r = inner.rooms.get_mut(&room).ok_or(NOT_IN_ROOM)?;
        let me = r.members.get_mut(&peer.id).ok_or(NOT_IN_ROOM)?;
        let changed = me.meta != meta;
        me.meta = meta.clone();
        if let Some(id) = id {
            peer.deliver(
                &encode_server(&ServerMessage::Ack { id }),
                ServerKind::Ack,
                &self.metrics,
            );
        }
        if changed {
            let body = encode_server(&ServerMessage::PeerUpdated {
                room: room.clone(),
                peer: peer.id.clone(),
                meta,
            });
            for (mid, m) in &r.members {
                if *mid != peer.id {
                    m.peer
                        .deliver(&body, ServerKind::PeerUpdated, &self.metrics);
                }
            }
            let _ = self.bus.publish(&room, &peer.id, &body);
        }
        Ok(())
    }

    /// `peers`: the other members now.
    pub fn peers(&self, peer: &Peer, room: RoomName, id: Option<u64>) -> Result<(), Refusal> {
        let inner = self.lock();
        let r = inner
            .rooms
            .get(&room)
            .filter(|r| r.members.contains_key(&peer.id))
            .ok_or(NOT_IN_ROOM)?;
        let reply = encode_server(&ServerMessage::Peers {
            id,
            peers: Self::others(r, &peer.id),
            room,
        });
        peer.deliver(&reply, ServerKind::Peers, &self.metrics);
        Ok(())
    }

    /// `signal`: relays `data` to one member of a shared room.
    pub fn signal(
        &self,
        peer: &Peer,
        room: RoomName,
        to: PeerId,
        data: Data,
    ) -> Result<(), Refusal> {
        let body = encode_server(&ServerMessage::Signal {
            room: room.clone(),
            from: peer.id.clone(),
            data,
        });
        let inner = self.lock();
        let r = inner
            .rooms
            .get(&room)
            .filter(|r| r.members.contains_key(&peer.id))
            .ok_or(NOT_IN_ROOM)?;
        if to == peer.id {
            return Err(refuse(ErrorCode::BadRequest, "cannot signal yourself"));
        }
        match r.members.get(&to) {
            Some(m) => {
                m.peer.deliver(&body, ServerKind::Signal, &self.metrics);
                Ok(())
            }
            None => match self.bus.send(&room, &to, &body) {
                Ok(()) => Ok(()),
                Err(RouteError::NotFound) => {
                    Err(refuse(ErrorCode::PeerNotFound, "no such peer in this room"))
                }
                Err(RouteError::Unavailable(_)) => Err(refuse(
                    ErrorCode::Internal,
                    "cross-instance routing is unavailable; retry",
                )),
            },
        }
    }

    /// `broadcast`: relays `data` to every other member.
    pub fn broadcast(&self, peer: &Peer, room: RoomName, data: Data) -> Result<(), Refusal> {
        let body = encode_server(&ServerMessage::Broadcast {
            room: room.clone(),
            from: peer.id.clone(),
            data,
        });
        let inner = self.lock();
        let r = inner
            .rooms
            .get(&room)
            .filter(|r| r.members.contains_key(&peer.id))
            .ok_or(NOT_IN_ROOM)?;
        for (mid, m) in &r.members {
            if *mid != peer.id {
                m.peer.deliver(&body, ServerKind::Broadcast, &self.metrics);
            }
        }
        self.bus.publish(&room, &peer.id, &body).map_err(|_| {
            refuse(
                ErrorCode::Internal,
                "cross-instance routing is unavailable; retry",
            )
        })
    }

    /// Every attached or resumable session (for drain).
    pub fn sessions(&self) -> Vec<Arc<Peer>> {
        self.lock().peers.values().map(|e| e.peer.clone()).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
