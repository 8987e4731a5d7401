//! The bus operations the hub calls.

use super::*;

impl Bus for Redis {
    fn health(&self) -> Health {
        let inner = &self.inner;
        if inner.healthy.load(Ordering::Relaxed) && inner.commands_ok.load(Ordering::Relaxed) {
            Health::Ok
        } else {
            Health::Down
        }
    }

    fn watch(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<RemoteMember>, RouteError>> {
        let room = room.clone();
        Box::pin(async move {
            let inner = &self.inner;
            let newly = lock(&inner.local).watched.insert(room.clone());
            if newly {
                let (tx, rx) = oneshot::channel();
                inner
                    .subs
                    .send((inner.keys.ch_room(room.as_str()), true, Some(tx)))
                    .map_err(unavailable)?;
                // Subscribed before the snapshot: nothing falls between them.
                tokio::time::timeout(COMMAND_TIMEOUT, rx)
                    .await
                    .map_err(unavailable)?
                    .map_err(unavailable)?;
            }
            snapshot(inner, &room).await
        })
    }

    fn unwatch(&self, room: &RoomName) {
        if lock(&self.inner.local).watched.remove(room) {
            let _ = self
                .inner
                .subs
                .send((self.inner.keys.ch_room(room.as_str()), false, None));
        }
    }

    fn announce(&self, change: Change) -> BoxFuture<'_, Result<(), RouteError>> {
        let inner = &self.inner;
        let k = &inner.keys;
        let mut pipe = redis::pipe();
        let wire = match change {
            Change::Member { room, peer, meta } => {
                if let Some((_, rooms)) = lock(&inner.local).peers.get_mut(&peer) {
                    rooms.insert(room.clone(), meta.clone());
                }
                let roomk = k.room(room.as_str());
                pipe.cmd("HSET")
                    .arg(&roomk)
                    .arg(peer.as_str())
                    .arg(inner.member_value(&meta))
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&roomk)
                    .arg(inner.long_ttl_ms())
                    .ignore();
                pipe.cmd("SADD")
                    .arg(k.prooms(peer.as_str()))
                    .arg(room.as_str())
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(k.prooms(peer.as_str()))
                    .arg(inner.long_ttl_ms())
                    .ignore();
                Wire::Member {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    room,
                    peer,
                    meta,
                }
            }
            Change::Left { room, peer, reason } => {
                if let Some((_, rooms)) = lock(&inner.local).peers.get_mut(&peer) {
                    rooms.remove(&room);
                }
                pipe.cmd("HDEL")
                    .arg(k.room(room.as_str()))
                    .arg(peer.as_str())
                    .ignore();
                pipe.cmd("SREM")
                    .arg(k.prooms(peer.as_str()))
                    .arg(room.as_str())
                    .ignore();
                Wire::Left {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    room,
                    peer,
                    reason,
                }
            }
        };
        let channel = match &wire {
            Wire::Member { room, .. } | Wire::Left { room, .. } => k.ch_room(room.as_str()),
            _ => unreachable!(),
        };
        pipe.cmd(inner.publish)
            .arg(channel)
            .arg(wire.encode().as_ref())
            .ignore();
        let (tx, rx) = oneshot::channel();
        let queued = inner.queue(Op::Cmds {
            pipe,
            done: Some(tx),
        });
        if queued.is_err() {
            inner.metrics.redis_errors.inc();
        }
        Box::pin(async move {
            queued?;
            answer(rx).await.map(|_| ())
        })
    }

    fn send(
        &self,
        at: &Remote,
        room: &RoomName,
        to: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>> {
        let inner = &self.inner;
        let id = rand::random::<u64>().max(1);
        let payload = Wire::Deliver {
            origin: inner.s.server.clone(),
            region: inner.s.region.clone(),
            room: room.clone(),
            to: to.clone(),
            body: body.clone(),
            id,
        }
        .encode();
        let payload = stamp(&payload);
        if at.region != inner.s.region {
            inner.metrics.cross_region.inc();
        }
        let (tx, rx) = oneshot::channel();
        let queued = inner.queue(Op::Direct {
            server: at.server.clone(),
            to: to.clone(),
            payload,
            body,
            id,
            done: Some(tx),
        });
        Box::pin(async move {
            queued?;
            answer(rx).await
        })
    }

    fn publish(
        &self,
        room: &RoomName,
        from: &PeerId,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), RouteError>> {
        let inner = &self.inner;
        let message = Wire::Broadcast {
            origin: inner.s.server.clone(),
            region: inner.s.region.clone(),
            room: room.clone(),
            from: from.clone(),
            body,
        };
        let mut pipe = redis::pipe();
        pipe.cmd(inner.publish)
            .arg(inner.keys.ch_room(room.as_str()))
            .arg(stamp(&message.encode()).as_ref());
        let (tx, rx) = oneshot::channel();
        let queued = inner.queue(Op::Cmds {
            pipe,
            done: Some(tx),
        });
        Box::pin(async move {
            queued?;
            answer(rx).await.map(|_| ())
        })
    }

    fn register(&self, peer: &PeerId, secret: &str) {
        let inner = &self.inner;
        lock(&inner.local)
            .peers
            .insert(peer.clone(), (secret.to_owned(), HashMap::new()));
        let mut pipe = redis::pipe();
        inner.assert_peer(&mut pipe, peer, secret, &HashMap::new());
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }

    fn unregister(&self, peer: &PeerId) {
        let inner = &self.inner;
        lock(&inner.local).peers.remove(peer);
        let k = &inner.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(k.peer(peer.as_str()))
            .arg(k.prooms(peer.as_str()))
            .arg(k.inbox(peer.as_str()))
            .ignore();
        pipe.cmd("SREM")
            .arg(k.srvpeers(&inner.s.server))
            .arg(peer.as_str())
            .ignore();
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }

    fn claim(&self, peer: &PeerId, secret: &str, last_seq: u64) -> BoxFuture<'_, Option<Claim>> {
        let peer = peer.clone();
        let offered = secret.to_owned();
        Box::pin(async move {
            let inner = &self.inner;
            let k = &inner.keys;
            let mut conn = inner.conn().await.ok()?;
            let entry: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(k.peer(peer.as_str()))
                .query_async(&mut conn)
                .await
                .ok()?;
            let owner = entry.get("server")?.clone();
            let secret = entry.get("secret")?.clone();
            if owner == *inner.s.server || !same_secret(&secret, &offered) {
                return None;
            }
            // Ask the owner first; nobody listening means it is gone.
            let ask = Wire::Takeover {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                peer: peer.clone(),
                last_seq,
            };
            match inner
                .ask_owner(&mut conn, &owner, ask, &peer, &inner.claims)
                .await
            {
                Asked::Gone | Asked::Failed => {}
                Asked::NoAnswer => return None,
                Asked::Answer(answer) => {
                    let Wire::Handover {
                        ok: true,
                        next_seq,
                        rooms,
                        lines,
                        ..
                    } = answer
                    else {
                        return None;
                    };
                    let mut pipe = redis::pipe();
                    pipe.cmd("SREM")
                        .arg(k.srvpeers(&owner))
                        .arg(peer.as_str())
                        .ignore();
                    let _ = exec(&mut conn, &pipe).await;
                    return Some(Claim {
                        secret,
                        lines,
                        inbox: Vec::new(),
                        next_seq,
                        rooms,
                    });
                }
            }
            let reply: Value = inner
                .claim_orphan
                .key(k.peer(peer.as_str()))
                .key(k.inbox(peer.as_str()))
                .arg(&owner)
                .arg(&*inner.s.server)
                .arg(&*inner.s.region)
                .invoke_async(&mut conn)
                .await
                .ok()?;
            let (total, kept) = inbox_entries(&reply)?;
            let inbox: Vec<Bytes> = kept.into_iter().map(|(body, _)| body).collect();
            if total > inbox.len() {
                // More arrived than the inbox keeps: resuming would skip some.
                return None;
            }
            let rooms: Vec<String> = redis::cmd("SMEMBERS")
                .arg(k.prooms(peer.as_str()))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let mut with_meta = Vec::new();
            for room in rooms {
                let Ok(room) = RoomName::new(&room) else {
                    continue;
                };
                let value: Option<String> = redis::cmd("HGET")
                    .arg(k.room(room.as_str()))
                    .arg(peer.as_str())
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(None);
                let meta = value
                    .and_then(|v| v.splitn(3, '\n').nth(2).and_then(|m| parse_meta(m).ok()))
                    .unwrap_or_default();
                with_meta.push((room, meta));
            }
            let _: Result<(), _> = redis::pipe()
                .cmd("SREM")
                .arg(k.srvpeers(&owner))
                .arg(peer.as_str())
                .ignore()
                .query_async(&mut conn)
                .await;
            Some(Claim {
                secret,
                lines: Vec::new(),
                inbox,
                next_seq: last_seq + 1,
                rooms: with_meta,
            })
        })
    }

    fn evict(&self, peer: &PeerId) -> BoxFuture<'_, Eviction> {
        let peer = peer.clone();
        Box::pin(async move {
            let inner = &self.inner;
            let k = &inner.keys;
            let Ok(mut conn) = inner.conn().await else {
                return Eviction::Unknown;
            };
            let entry: HashMap<String, String> = match redis::cmd("HGETALL")
                .arg(k.peer(peer.as_str()))
                .query_async(&mut conn)
                .await
            {
                Ok(entry) => entry,
                Err(_) => return Eviction::Unknown,
            };
            let Some(owner) = entry.get("server").cloned() else {
                return Eviction::Free;
            };
            if owner == *inner.s.server {
                return Eviction::Free;
            }
            if !entry.get("secret").is_some_and(|s| crate::bus::is_named(s)) {
                return Eviction::Refused;
            }
            let ask = Wire::Evict {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                peer: peer.clone(),
            };
            match inner
                .ask_owner(&mut conn, &owner, ask, &peer, &inner.evictions)
                .await
            {
                Asked::Gone | Asked::Answer(true) => {}
                Asked::Answer(false) => return Eviction::Refused,
                Asked::NoAnswer | Asked::Failed => return Eviction::Unknown,
            }
            // The old session is over: forget it here, so that its rooms
            // hear `peer_left` before they hear of the new one (same
            // instance, same channel, in order).
            let rooms: Vec<String> = match redis::cmd("SMEMBERS")
                .arg(k.prooms(peer.as_str()))
                .query_async(&mut conn)
                .await
            {
                Ok(rooms) => rooms,
                Err(_) => return Eviction::Unknown,
            };
            let rooms: Vec<RoomName> = rooms.iter().filter_map(|r| RoomName::new(r).ok()).collect();
            let mut pipe = redis::pipe();
            inner.forget_peer(&mut pipe, &peer, &rooms, LeaveReason::Left);
            pipe.cmd("SREM")
                .arg(k.srvpeers(&owner))
                .arg(peer.as_str())
                .ignore();
            match exec(&mut conn, &pipe).await {
                Ok(_) => Eviction::Free,
                Err(_) => Eviction::Unknown,
            }
        })
    }

    fn evicted(&self, requester: &str, peer: &PeerId, ok: bool) {
        let inner = &self.inner;
        if ok {
            // Not asserted again by our heartbeat; the asker forgets it in
            // Redis.
            lock(&inner.local).peers.remove(peer);
        }
        let wire = Wire::Evicted {
            origin: inner.s.server.clone(),
            region: inner.s.region.clone(),
            peer: peer.clone(),
            ok,
        };
        let mut pipe = redis::pipe();
        pipe.cmd(inner.publish)
            .arg(inner.keys.ch_srv(requester))
            .arg(wire.encode().as_ref())
            .ignore();
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }

    fn instances(&self) -> Option<Vec<Instance>> {
        lock(&self.inner.directory).clone()
    }

    fn hand_over(&self, requester: &str, peer: &PeerId, handover: Handover) {
        let inner = &self.inner;
        let wire = match handover {
            Handover::Session(c) => {
                lock(&inner.local).peers.remove(peer);
                Wire::Handover {
                    origin: inner.s.server.clone(),
                    region: inner.s.region.clone(),
                    peer: peer.clone(),
                    ok: true,
                    next_seq: c.next_seq,
                    rooms: c.rooms,
                    lines: c.lines,
                }
            }
            Handover::Refused => Wire::Handover {
                origin: inner.s.server.clone(),
                region: inner.s.region.clone(),
                peer: peer.clone(),
                ok: false,
                next_seq: 0,
                rooms: Vec::new(),
                lines: Vec::new(),
            },
        };
        let mut pipe = redis::pipe();
        pipe.cmd(inner.publish)
            .arg(inner.keys.ch_srv(requester))
            .arg(wire.encode().as_ref())
            .ignore();
        let _ = inner.queue(Op::Cmds { pipe, done: None });
    }
}

/// Waits for the outbox's answer, but never longer than one request may
/// take, however much is queued before it.
async fn answer<T>(rx: oneshot::Receiver<Result<T, RouteError>>) -> Result<T, RouteError> {
    match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(RouteError::Unavailable("redis outbox stopped".into())),
        Err(_) => Err(RouteError::Unavailable("redis timed out".into())),
    }
}

/// Stamps a message with its publication time and delivery deadline.
fn stamp(payload: &[u8]) -> Bytes {
    let now_us = wire::now_us();
    wire::stamped(payload, now_us, now_us / 1000 + DELIVERY_DEADLINE_MS)
}
