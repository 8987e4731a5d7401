//! Rooms and sessions as this instance sees them, and the membership rules.
//!
//! A room lists every member: the ones served here (with their session) and
//! the ones served elsewhere (with their instance), kept current by the
//! bus's events. All membership changes and every local relay happen under
//! one short lock, never held across an `.await`. Deliveries made under it
//! give the ordering guarantees: a joiner gets `joined` before anything from
//! the room, and one sender's messages reach one recipient in order.

use crate::bus::{
    BoxFuture, Bus, Change, Claim, Event, Eviction, Handover, Remote, RemoteMember, RouteError,
};
use crate::metrics::{Metrics, RoomStats, room_size_class};
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
const PEER_NOT_FOUND: Refusal = refuse(ErrorCode::PeerNotFound, "no such peer in this room");
const UNROUTABLE: Refusal = refuse(
    ErrorCode::Internal,
    "cross-instance routing is unavailable; retry",
);

fn route_refusal(e: RouteError) -> Refusal {
    match e {
        RouteError::NotFound => PEER_NOT_FOUND,
        RouteError::Unavailable(_) => UNROUTABLE,
    }
}

/// What became of a relayed message (`signal`, `broadcast`).
pub enum Relayed {
    /// Delivered to every recipient on this instance, and there are none
    /// elsewhere.
    Done,
    /// Also on its way to other instances. It is already queued, in order
    /// behind the sender's earlier messages; this resolves once Redis has
    /// it.
    Routing(BoxFuture<'static, Result<(), Refusal>>),
}

impl std::fmt::Debug for Relayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Done => "Done",
            Self::Routing(_) => "Routing",
        })
    }
}

/// Why a resume did not succeed (a new session is opened instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// No such session (unknown, expired, or a wrong token).
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

#[derive(Debug, Clone)]
enum At {
    Local(Arc<Peer>),
    Remote(Remote),
}

#[derive(Debug)]
struct Member {
    at: At,
    meta: Meta,
}

#[derive(Debug, Default)]
struct Room {
    members: HashMap<PeerId, Member>,
    /// Members served here; at zero the room is forgotten.
    local: usize,
    /// While the room's snapshot is loading: membership events that arrived
    /// after the subscription, applied on top of the snapshot.
    pending: Option<Vec<Event>>,
}

impl Room {
    fn has_remote(&self) -> bool {
        self.members.len() > self.local
    }
}

#[derive(Debug)]
struct Entry {
    peer: Arc<Peer>,
    rooms: Vec<RoomName>,
    /// Opened with a peer id its transport chose ([`Hub::open_as`]): a later
    /// connection asking for the same id replaces it.
    claimed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    peers: HashMap<PeerId, Entry>,
    rooms: HashMap<RoomName, Room>,
    /// Sessions handed to another instance, for forwarding stragglers.
    moved: HashMap<PeerId, Remote>,
    /// Sessions being claimed from another instance: once the claim moves
    /// a session in Redis, senders route here, possibly before it is
    /// attached. What arrives in between waits here, in order, for the
    /// session (with the number of resumes claiming it).
    claiming: HashMap<PeerId, (usize, Vec<Bytes>)>,
}

/// Marks a session as being claimed for as long as it lives.
struct Claiming<'a> {
    hub: &'a Hub,
    id: &'a PeerId,
}

impl<'a> Claiming<'a> {
    fn new(hub: &'a Hub, id: &'a PeerId) -> Self {
        hub.lock().claiming.entry(id.clone()).or_default().0 += 1;
        Self { hub, id }
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(e) = inner.claiming.get_mut(self.id) {
            e.0 -= 1;
            if e.0 == 0 {
                inner.claiming.remove(self.id);
            }
        }
    }
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
pub type WelcomeFn<'a> = &'a (dyn Fn(&Peer, bool) -> Bytes + Sync);

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

    /// Local counts: (rooms with local members, sessions served here).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.rooms.len(), inner.peers.len())
    }

    /// How rooms with local members are spread by size, for the metrics.
    pub fn room_stats(&self) -> RoomStats {
        let inner = self.lock();
        let mut stats = RoomStats::default();
        for room in inner.rooms.values() {
            stats.by_size[room_size_class(room.members.len())] += 1;
            stats.local_members += room.local as u64;
            stats.spanning += u64::from(room.has_remote());
        }
        stats
    }

    /// A session for peer `id` (a fresh server-chosen one when `None`) with
    /// a random resume secret ending with `owner`.
    fn new_peer(&self, id: Option<PeerId>, owner: &str) -> Arc<Peer> {
        let mut rng = rand::rng();
        // A transport-named session's secret starts with `bus::NAMED`.
        let mut secret = String::with_capacity(33 + owner.len());
        if id.is_some() {
            secret.push(crate::bus::NAMED);
        }
        let id = id.unwrap_or_else(|| {
            let id: [u8; 10] = rng.random();
            PeerId::new(&format!("p_{}", hex(&id))).expect("hex ids are valid")
        });
        let random: [u8; 16] = rng.random();
        secret.push_str(&hex(&random));
        secret.push_str(owner);
        Arc::new(Peer::new(id, secret, self.settings.resume_buffer))
    }

    /// Attaches a new session to its first link (sending `welcome`, encoded
    /// before the lock was taken), lists it, and registers it for resumes
    /// anywhere.
    fn enter(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        peer: &Arc<Peer>,
        link: Link,
        welcome: Bytes,
        claimed: bool,
    ) {
        peer.attach(link, welcome, 0)
            .expect("a new session accepts any link");
        inner.peers.insert(
            peer.id.clone(),
            Entry {
                peer: peer.clone(),
                rooms: Vec::new(),
                claimed,
            },
        );
        self.set_gauges(&inner);
        drop(inner);
        self.bus.register(&peer.id, peer.secret());
    }

    fn set_gauges(&self, inner: &Inner) {
        self.metrics.peers.set(inner.peers.len() as i64);
        self.metrics.rooms.set(inner.rooms.len() as i64);
    }

    /// Opens a new session on `link`, sending `welcome` first.
    pub fn open(&self, link: Link, welcome: WelcomeFn<'_>) -> Arc<Peer> {
        self.open_owned(link, welcome, "")
    }

    /// Opens a new session whose resume secret ends with `owner`
    /// ([`crate::auth::Grant::owner_tag`]), so that only the same subject
    /// can resume it.
    pub fn open_owned(&self, link: Link, welcome: WelcomeFn<'_>, owner: &str) -> Arc<Peer> {
        let peer = self.new_peer(None, owner);
        let welcome = welcome(&peer, false);
        self.enter(self.lock(), &peer, link, welcome, false);
        peer
    }

    /// Before [`Hub::open_as`] opens `id` here: a session another instance
    /// serves under that id ends there if the transport named it too (its
    /// rooms get `peer_left`, reason `left`, before they hear of the new
    /// one); one the server named refuses the open, as it does here. When
    /// the other instances cannot be asked (Redis unreachable), the open
    /// goes ahead.
    pub async fn evict_elsewhere(&self, id: &PeerId) -> Result<(), Refusal> {
        if self.lock().peers.contains_key(id) {
            // Served here: `open_as` applies the same rule locally.
            return Ok(());
        }
        match self.bus.evict(id).await {
            Eviction::Free => {
                let mut inner = self.lock();
                let rooms: Vec<RoomName> = inner
                    .rooms
                    .iter()
                    .filter(|(_, r)| {
                        r.members
                            .get(id)
                            .is_some_and(|m| matches!(m.at, At::Remote(_)))
                    })
                    .map(|(room, _)| room.clone())
                    .collect();
                for room in rooms {
                    self.leave_room_locked(&mut inner, &room, id, LeaveReason::Left, false);
                }
                Ok(())
            }
            Eviction::Refused => Err(refuse(
                ErrorCode::BadRequest,
                "this peer id belongs to another session",
            )),
            Eviction::Unknown => {
                tracing::warn!(peer = %id, "could not check other instances for a session with this id; opening it anyway");
                Ok(())
            }
        }
    }

    /// Opens a new session with the peer id `id`, which the transport chose
    /// (a legacy Socket.IO client's `deviceId`), sending `welcome` first. A
    /// session served here that was opened the same way with the same id is
    /// replaced: it ends as if it had left (its rooms get `peer_left`) and
    /// its connection is closed with 4010. A session with that id that the
    /// server named is never replaced: the open is refused.
    pub fn open_as(
        &self,
        link: Link,
        welcome: WelcomeFn<'_>,
        id: PeerId,
        owner: &str,
    ) -> Result<Arc<Peer>, Refusal> {
        let peer = self.new_peer(Some(id), owner);
        let welcome = welcome(&peer, false);
        let mut inner = self.lock();
        if let Some(old) = inner.peers.get(&peer.id) {
            if !old.claimed {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    "this peer id belongs to another session",
                ));
            }
            let old = old.peer.clone();
            self.remove_locked(&mut inner, &old.id, LeaveReason::Left);
            old.end(Some(CloseCode::TakenOver));
        }
        self.enter(inner, &peer, link, welcome, true);
        Ok(peer)
    }

    /// Resumes the session named by `token` on `link`, replaying what the
    /// client has not seen — from this instance, or taken over from the one
    /// that served it. On failure nothing is sent on `link`; a session that
    /// cannot be resumed without a gap ends at once.
    pub async fn resume(
        self: &Arc<Self>,
        token: &str,
        last_seq: u64,
        link: Link,
        welcome: WelcomeFn<'_>,
    ) -> Result<Arc<Peer>, ResumeFailure> {
        let (id, secret) = token.rsplit_once('.').ok_or(ResumeFailure::Unknown)?;
        let id = PeerId::new(id).map_err(|_| ResumeFailure::Unknown)?;
        let local = self.lock().peers.get(&id).map(|e| e.peer.clone());
        let Some(peer) = local else {
            return self
                .resume_from_elsewhere(&id, secret, last_seq, link, welcome)
                .await;
        };
        if !peer.secret_matches(secret) {
            return Err(ResumeFailure::Unknown);
        }
        let mut inner = self.lock();
        match peer.attach(link, welcome(&peer, true), last_seq) {
            Ok(()) => Ok(peer),
            Err(ReplayError::Ended) => Err(ResumeFailure::Unknown),
            Err(ReplayError::Overrun | ReplayError::Future) => {
                self.remove_locked(&mut inner, &peer.id, LeaveReason::Disconnected);
                peer.end(Some(CloseCode::TakenOver));
                Err(ResumeFailure::Overrun)
            }
        }
    }

    async fn resume_from_elsewhere(
        self: &Arc<Self>,
        id: &PeerId,
        secret: &str,
        last_seq: u64,
        link: Link,
        welcome: WelcomeFn<'_>,
    ) -> Result<Arc<Peer>, ResumeFailure> {
        let claiming = Claiming::new(self, id);
        let Claim {
            secret: registered,
            lines,
            inbox,
            next_seq,
            rooms,
        } = self
            .bus
            .claim(id, secret, last_seq)
            .await
            .ok_or(ResumeFailure::Unknown)?;
        let peer = Arc::new(Peer::restore(
            id.clone(),
            registered,
            self.settings.resume_buffer,
            next_seq,
            lines,
        ));
        for (room, _) in &rooms {
            self.watch(room).await;
        }
        let mut inner = self.lock();
        inner.peers.insert(
            id.clone(),
            Entry {
                peer: peer.clone(),
                rooms: rooms.iter().map(|(r, _)| r.clone()).collect(),
                claimed: false,
            },
        );
        for (room, meta) in &rooms {
            let r = inner.rooms.entry(room.clone()).or_default();
            let was_local = matches!(
                r.members.get(id),
                Some(Member {
                    at: At::Local(_),
                    ..
                })
            );
            r.members.insert(
                id.clone(),
                Member {
                    at: At::Local(peer.clone()),
                    meta: meta.clone(),
                },
            );
            if !was_local {
                r.local += 1;
            }
        }
        inner.moved.remove(id);
        self.set_gauges(&inner);
        let ok = peer.attach(link, welcome(&peer, true), last_seq).is_ok();
        for body in &inbox {
            peer.deliver(body, ServerKind::Signal, &self.metrics);
        }
        // Sent after the claim, before the session was here to take them.
        let early = inner
            .claiming
            .get_mut(id)
            .map(|e| std::mem::take(&mut e.1))
            .unwrap_or_default();
        for body in &early {
            peer.deliver(body, ServerKind::Signal, &self.metrics);
        }
        drop(inner);
        drop(claiming);
        self.bus.register(id, peer.secret());
        for (room, meta) in rooms {
            drop(self.bus.announce(Change::Member {
                room,
                peer: id.clone(),
                meta,
            }));
        }
        if ok {
            Ok(peer)
        } else {
            Err(ResumeFailure::Unknown)
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
            self.leave_room_locked(inner, &room, id, reason, true);
        }
        self.set_gauges(inner);
        self.bus.unregister(id);
    }

    /// Removes `id` from `room`, tells the local members, and — for a local
    /// member when `announce` — the other instances.
    fn leave_room_locked(
        &self,
        inner: &mut Inner,
        room: &RoomName,
        id: &PeerId,
        reason: LeaveReason,
        announce: bool,
    ) {
        let Some(r) = inner.rooms.get_mut(room) else {
            return;
        };
        let Some(gone) = r.members.remove(id) else {
            return;
        };
        let was_local = matches!(gone.at, At::Local(_));
        if was_local {
            r.local -= 1;
            if announce {
                // Queued in order now; nobody waits on a departure.
                drop(self.bus.announce(Change::Left {
                    room: room.clone(),
                    peer: id.clone(),
                    reason,
                }));
            }
        }
        if r.local == 0 {
            inner.rooms.remove(room);
            self.bus.unwatch(room);
            self.set_gauges(inner);
            return;
        }
        let body = encode_server(&ServerMessage::PeerLeft {
            room: room.clone(),
            peer: id.clone(),
            reason,
        });
        deliver_local(r, None, &body, ServerKind::PeerLeft, &self.metrics);
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

    /// Makes sure `room`'s events from other instances arrive here and its
    /// remote members are known, before a local member joins. Events that
    /// arrive while the snapshot loads are kept and applied after it, so
    /// nothing falls between the subscription and the snapshot.
    async fn watch(self: &Arc<Self>, room: &RoomName) {
        loop {
            {
                let mut inner = self.lock();
                match inner.rooms.get(room) {
                    Some(r) if r.pending.is_none() => return,
                    Some(_) => {}
                    None => {
                        inner.rooms.insert(
                            room.clone(),
                            Room {
                                pending: Some(Vec::new()),
                                ..Room::default()
                            },
                        );
                        break;
                    }
                }
            }
            // Another join is loading this room: wait for it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let loaded = self.bus.watch(room).await;
        let queued = {
            let mut inner = self.lock();
            let Some(r) = inner.rooms.get_mut(room) else {
                return;
            };
            match loaded {
                Ok(remote) => {
                    for m in remote {
                        r.members.entry(m.peer).or_insert(Member {
                            at: At::Remote(m.at),
                            meta: m.meta,
                        });
                    }
                }
                // Local rooms keep working while Redis is away; the room is
                // re-synchronised when it is back.
                Err(e) => {
                    tracing::warn!(%room, error = %e, "room watch failed; serving it locally")
                }
            }
            r.pending.take().unwrap_or_default()
        };
        for event in queued {
            self.apply(event);
        }
    }

    /// `join`: replies `joined` and tells the others.
    pub async fn join(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        room: RoomName,
        meta: Meta,
        id: Option<u64>,
    ) -> Result<(), Refusal> {
        self.watch(&room).await;
        let limits = &self.settings.limits;
        let (notice, announced) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let entry = inner.peers.get_mut(&peer.id).ok_or(refuse(
                ErrorCode::Internal,
                "session is no longer registered",
            ))?;
            let already = entry.rooms.contains(&room);
            if !already && entry.rooms.len() >= limits.max_rooms {
                self.forget_if_empty(inner, &room);
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
                            meta: meta.clone(),
                        },
                    ))
                }
                None => {
                    if r.members.len() >= limits.max_room_peers {
                        self.forget_if_empty(inner, &room);
                        return Err(refuse(ErrorCode::RoomFull, "room is full"));
                    }
                    r.members.insert(
                        peer.id.clone(),
                        Member {
                            at: At::Local(peer.clone()),
                            meta: meta.clone(),
                        },
                    );
                    r.local += 1;
                    entry.rooms.push(room.clone());
                    Some((
                        ServerKind::PeerJoined,
                        ServerMessage::PeerJoined {
                            room: room.clone(),
                            peer: peer.id.clone(),
                            meta: meta.clone(),
                        },
                    ))
                }
            };
            self.set_gauges(inner);
            // The membership is in Redis before anyone hears of it, so a client
            // told `joined` can count on every instance knowing it.
            let announced = notice.is_some().then(|| {
                self.bus.announce(Change::Member {
                    room: room.clone(),
                    peer: peer.id.clone(),
                    meta,
                })
            });
            (notice, announced)
        };
        if let Some(announced) = announced
            && let Err(e) = announced.await
        {
            tracing::debug!(%room, error = %e, "join not announced; re-asserted later");
        }
        let inner = self.lock();
        let Some(r) = inner.rooms.get(&room) else {
            return Err(refuse(ErrorCode::Internal, "room vanished; retry"));
        };
        let reply = encode_server(&ServerMessage::Joined {
            id,
            room: room.clone(),
            peers: Self::others(r, &peer.id),
        });
        peer.deliver(&reply, ServerKind::Joined, &self.metrics);
        if let Some((kind, msg)) = notice {
            deliver_local(r, Some(&peer.id), &encode_server(&msg), kind, &self.metrics);
        }
        Ok(())
    }

    /// Drops a room that a refused join created and nobody here is in.
    fn forget_if_empty(&self, inner: &mut Inner, room: &RoomName) {
        if inner.rooms.get(room).is_some_and(|r| r.local == 0) {
            inner.rooms.remove(room);
            self.bus.unwatch(room);
        }
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
        self.leave_room_locked(inner, &room, &peer.id, LeaveReason::Left, true);
        Ok(())
    }

    /// `update`: replaces meta, tells the others, then acks.
    pub async fn update(
        &self,
        peer: &Peer,
        room: RoomName,
        meta: Meta,
        id: Option<u64>,
    ) -> Result<(), Refusal> {
        let announced = {
            let mut inner = self.lock();
            let r = inner.rooms.get_mut(&room).ok_or(NOT_IN_ROOM)?;
            let me = r.members.get_mut(&peer.id).ok_or(NOT_IN_ROOM)?;
            let changed = me.meta != meta;
            me.meta = meta.clone();
            changed.then(|| {
                let body = encode_server(&ServerMessage::PeerUpdated {
                    room: room.clone(),
                    peer: peer.id.clone(),
                    meta: meta.clone(),
                });
                deliver_local(
                    r,
                    Some(&peer.id),
                    &body,
                    ServerKind::PeerUpdated,
                    &self.metrics,
                );
                self.bus.announce(Change::Member {
                    room,
                    peer: peer.id.clone(),
                    meta,
                })
            })
        };
        if let Some(announced) = announced
            && let Err(e) = announced.await
        {
            tracing::debug!(error = %e, "update not announced; re-asserted later");
        }
        if let Some(id) = id {
            peer.deliver(
                &encode_server(&ServerMessage::Ack { id }),
                ServerKind::Ack,
                &self.metrics,
            );
        }
        Ok(())
    }

    /// `peers`: the other members now.
    pub fn peers(&self, peer: &Peer, room: RoomName, id: Option<u64>) -> Result<(), Refusal> {
        let inner = self.lock();
        let r = joined(&inner, &room, &peer.id)?;
        let reply = encode_server(&ServerMessage::Peers {
            id,
            peers: Self::others(r, &peer.id),
            room,
        });
        peer.deliver(&reply, ServerKind::Peers, &self.metrics);
        Ok(())
    }

    /// `signal`: relays `data` to one member of a shared room, here or on
    /// another instance.
    pub fn signal(
        &self,
        peer: &Peer,
        room: RoomName,
        to: PeerId,
        data: Data,
    ) -> Result<Relayed, Refusal> {
        let body = encode_server(&ServerMessage::Signal {
            room: room.clone(),
            from: peer.id.clone(),
            data,
        });
        let remote = {
            let inner = self.lock();
            let r = joined(&inner, &room, &peer.id)?;
            if to == peer.id {
                return Err(refuse(ErrorCode::BadRequest, "cannot signal yourself"));
            }
            match r.members.get(&to).map(|m| &m.at) {
                Some(At::Local(target)) => {
                    target.deliver(&body, ServerKind::Signal, &self.metrics);
                    return Ok(Relayed::Done);
                }
                Some(At::Remote(at)) => at.clone(),
                None => return Err(PEER_NOT_FOUND),
            }
        };
        let routed = self.bus.send(&remote, &room, &to, body);
        Ok(Relayed::Routing(Box::pin(async move {
            routed.await.map_err(route_refusal)
        })))
    }

    /// `broadcast`: relays `data` to every other member.
    pub fn broadcast(&self, peer: &Peer, room: RoomName, data: Data) -> Result<Relayed, Refusal> {
        let body = encode_server(&ServerMessage::Broadcast {
            room: room.clone(),
            from: peer.id.clone(),
            data,
        });
        let remote = {
            let inner = self.lock();
            let r = joined(&inner, &room, &peer.id)?;
            deliver_local(
                r,
                Some(&peer.id),
                &body,
                ServerKind::Broadcast,
                &self.metrics,
            );
            r.has_remote()
        };
        if !remote {
            return Ok(Relayed::Done);
        }
        let routed = self.bus.publish(&room, &peer.id, body);
        Ok(Relayed::Routing(Box::pin(async move {
            routed.await.map_err(|_| UNROUTABLE)
        })))
    }

    /// Every session served here (for drain).
    pub fn sessions(&self) -> Vec<Arc<Peer>> {
        self.lock().peers.values().map(|e| e.peer.clone()).collect()
    }

    /// Applies what another instance did.
    pub fn apply(self: &Arc<Self>, event: Event) {
        if let Event::Member { room, .. } | Event::Left { room, .. } = &event {
            let mut inner = self.lock();
            if let Some(pending) = inner.rooms.get_mut(room).and_then(|r| r.pending.as_mut()) {
                pending.push(event);
                return;
            }
        }
        match event {
            Event::Member { room, member } => self.remote_member(room, member),
            Event::Left { room, peer, reason } => {
                let mut inner = self.lock();
                let is_remote = inner
                    .rooms
                    .get(&room)
                    .and_then(|r| r.members.get(&peer))
                    .is_some_and(|m| matches!(m.at, At::Remote(_)));
                if is_remote {
                    self.leave_room_locked(&mut inner, &room, &peer, reason, false);
                }
            }
            Event::Deliver { room, to, body, .. } => {
                let mut inner = self.lock();
                match inner
                    .rooms
                    .get(&room)
                    .and_then(|r| r.members.get(&to))
                    .map(|m| &m.at)
                {
                    Some(At::Local(target)) => {
                        target.deliver(&body, ServerKind::Signal, &self.metrics);
                    }
                    _ => {
                        if let Some((_, early)) = inner.claiming.get_mut(&to) {
                            early.push(body);
                            return;
                        }
                        // Sent to us before the sender learnt the session
                        // moved: pass it on.
                        if let Some(at) = inner.moved.get(&to).cloned() {
                            drop(inner);
                            let hub = Arc::clone(self);
                            tokio::spawn(async move {
                                if let Err(e) = hub.bus.send(&at, &room, &to, body).await {
                                    tracing::debug!(error = %e, "forwarding a moved session's message failed");
                                }
                            });
                        }
                    }
                }
            }
            Event::Broadcast {
                room, from, body, ..
            } => {
                let inner = self.lock();
                if let Some(r) = inner.rooms.get(&room) {
                    deliver_local(r, Some(&from), &body, ServerKind::Broadcast, &self.metrics);
                }
            }
            Event::Takeover {
                peer,
                last_seq,
                requester,
            } => self.hand_over(&peer, last_seq, requester),
            Event::Evict { peer, requester } => self.evict_for(&peer, &requester),
            Event::Inbox { to, bodies } => {
                let inner = self.lock();
                if let Some(entry) = inner.peers.get(&to) {
                    for body in &bodies {
                        entry.peer.deliver(body, ServerKind::Signal, &self.metrics);
                    }
                }
            }
            Event::Resync { room, members } => self.resync(room, members),
        }
    }

    fn remote_member(&self, room: RoomName, member: RemoteMember) {
        let mut inner = self.lock();
        let Some(r) = inner.rooms.get_mut(&room) else {
            return;
        };
        let RemoteMember { peer, meta, at } = member;
        let notice = match r.members.get_mut(&peer) {
            Some(m) if matches!(m.at, At::Local(_)) => return,
            Some(m) => {
                m.at = At::Remote(at);
                if m.meta == meta {
                    None
                } else {
                    m.meta = meta.clone();
                    Some((
                        ServerKind::PeerUpdated,
                        ServerMessage::PeerUpdated {
                            room: room.clone(),
                            peer: peer.clone(),
                            meta,
                        },
                    ))
                }
            }
            None => {
                r.members.insert(
                    peer.clone(),
                    Member {
                        at: At::Remote(at),
                        meta: meta.clone(),
                    },
                );
                Some((
                    ServerKind::PeerJoined,
                    ServerMessage::PeerJoined {
                        room: room.clone(),
                        peer: peer.clone(),
                        meta,
                    },
                ))
            }
        };
        if let Some((kind, msg)) = notice {
            deliver_local(r, Some(&peer), &encode_server(&msg), kind, &self.metrics);
        }
    }

    /// Makes a watched room's remote members match what Redis has (after a
    /// Redis outage, when events may have been lost).
    fn resync(&self, room: RoomName, members: Vec<RemoteMember>) {
        let stale: Vec<PeerId> = {
            let inner = self.lock();
            let Some(r) = inner.rooms.get(&room) else {
                return;
            };
            r.members
                .iter()
                .filter(|(id, m)| {
                    matches!(m.at, At::Remote(_)) && !members.iter().any(|n| &n.peer == *id)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for peer in stale {
            let mut inner = self.lock();
            self.leave_room_locked(&mut inner, &room, &peer, LeaveReason::Disconnected, false);
        }
        for member in members {
            self.remote_member(room.clone(), member);
        }
    }

    /// A client of another instance connected under the id of a session of
    /// ours that the transport named: it ends here as if it had left (our
    /// members get `peer_left`; the asker tells everyone else), and its
    /// connection closes with 4010. One the server named stays.
    fn evict_for(&self, id: &PeerId, requester: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let ok = match inner.peers.get(id) {
            None => true,
            Some(entry) if !entry.claimed => false,
            Some(_) => {
                let entry = inner.peers.remove(id).expect("checked above");
                for room in entry.rooms {
                    self.leave_room_locked(inner, &room, id, LeaveReason::Left, false);
                }
                self.set_gauges(inner);
                entry.peer.end(Some(CloseCode::TakenOver));
                true
            }
        };
        drop(guard);
        self.bus.evicted(requester, id, ok);
    }

    /// Another instance resumes one of our sessions: hand it over with what
    /// its client has not seen, and forget it here without telling the room.
    fn hand_over(&self, id: &PeerId, last_seq: u64, requester: Arc<str>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(peer) = inner.peers.get(id).map(|e| e.peer.clone()) else {
            self.bus.hand_over(&requester, id, Handover::Refused);
            return;
        };
        let (lines, next_seq) = match peer.lines_after(last_seq) {
            Ok(x) => x,
            Err(_) => {
                self.remove_locked(inner, id, LeaveReason::Disconnected);
                peer.end(Some(CloseCode::TakenOver));
                self.bus.hand_over(&requester, id, Handover::Refused);
                return;
            }
        };
        peer.end(Some(CloseCode::TakenOver));
        let entry = inner.peers.remove(id).expect("checked above");
        let mut rooms = Vec::with_capacity(entry.rooms.len());
        let there = Remote {
            server: requester.clone(),
            region: Arc::from(""),
        };
        for room in entry.rooms {
            let Some(r) = inner.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(m) = r.members.get_mut(id) {
                // Still a member for everyone here, now served elsewhere:
                // the room sees no `peer_left`/`peer_joined` for a resume.
                rooms.push((room.clone(), m.meta.clone()));
                m.at = At::Remote(there.clone());
                r.local -= 1;
            }
            if r.local == 0 {
                inner.rooms.remove(&room);
                self.bus.unwatch(&room);
            }
        }
        inner.moved.insert(id.clone(), there);
        self.set_gauges(inner);
        drop(guard);
        self.bus.hand_over(
            &requester,
            id,
            Handover::Session(Claim {
                secret: peer.secret().to_owned(),
                lines,
                inbox: Vec::new(),
                next_seq,
                rooms,
            }),
        );
    }
}

/// The room `me` is a member of, or `not_in_room`.
fn joined<'a>(inner: &'a Inner, room: &RoomName, me: &PeerId) -> Result<&'a Room, Refusal> {
    inner
        .rooms
        .get(room)
        .filter(|r| r.members.contains_key(me))
        .ok_or(NOT_IN_ROOM)
}

/// Delivers to every member served here, except `except`.
fn deliver_local(
    r: &Room,
    except: Option<&PeerId>,
    body: &[u8],
    kind: ServerKind,
    metrics: &Metrics,
) {
    for (id, m) in &r.members {
        if Some(id) == except {
            continue;
        }
        if let At::Local(p) = &m.at {
            p.deliver(body, kind, metrics);
        }
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
