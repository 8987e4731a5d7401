//! Liveness, key refresh, and clean-up after instances that died.

use super::*;

/// Liveness, key refresh, and clean-up of instances that died.
pub(super) async fn heartbeat(inner: Arc<Inner>, stop: CancellationToken) {
    let period = inner.s.instance_ttl / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        reassert(&inner);
        if inner.healthy.load(Ordering::Relaxed) {
            read_directory(&inner).await;
        }
        if let Commands::Single(pool) = &inner.commands {
            let status = pool.status();
            inner
                .metrics
                .redis_pool(status.size, status.available, status.waiting);
        }
        if Instant::now() < *lock(&inner.judge_after) || !inner.healthy.load(Ordering::Relaxed) {
            continue;
        }
        let servers: Vec<Arc<str>> = lock(&inner.local).servers.iter().cloned().collect();
        if servers.is_empty() {
            continue;
        }
        let Ok(mut conn) = inner.conn().await else {
            continue;
        };
        let mut pipe = redis::pipe();
        for s in &servers {
            pipe.cmd("EXISTS").arg(inner.keys.srv(s));
        }
        let Ok(alive) = exec(&mut conn, &pipe).await else {
            continue;
        };
        let alive: Vec<i64> = alive
            .into_iter()
            .map(|v| if let Value::Int(n) = v { n } else { 1 })
            .collect();
        for (server, alive) in servers.into_iter().zip(alive) {
            if alive > 0 {
                continue;
            }
            lock(&inner.local).servers.remove(&server);
            let claim: Option<String> = redis::cmd("SET")
                .arg(inner.keys.cleanup(&server))
                .arg(&*inner.s.server)
                .arg("NX")
                .arg("PX")
                .arg(inner.long_ttl_ms())
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            if claim.is_some() {
                tracing::warn!(%server, grace_ms = inner.s.resume_grace.as_millis() as u64,
                    "instance is gone; its sessions end after the grace window unless resumed");
                tokio::spawn(clean_up(inner.clone(), server));
            }
        }
    }
    // A clean stop: this instance is gone at once rather than after its TTL.
    if let Ok(mut conn) = inner.conn().await {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(inner.keys.srv(&inner.s.server))
            .query_async(&mut conn)
            .await;
    }
}

/// Lists the live instances of the directory; removes the entries of the
/// dead (their liveness key expired) once deaths are judged.
async fn read_directory(inner: &Arc<Inner>) {
    let Ok(mut conn) = inner.conn().await else {
        return;
    };
    let listed = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("HGETALL")
            .arg(inner.keys.instances())
            .query_async::<HashMap<String, String>>(&mut conn),
    )
    .await;
    let Ok(Ok(listed)) = listed else {
        return;
    };
    let mut entries: Vec<Instance> = listed
        .values()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    entries.sort_by(|a, b| a.server.cmp(&b.server));
    let mut pipe = redis::pipe();
    for e in &entries {
        pipe.cmd("EXISTS").arg(inner.keys.srv(&e.server));
    }
    let alive = match tokio::time::timeout(COMMAND_TIMEOUT, exec(&mut conn, &pipe)).await {
        Ok(Ok(alive)) => alive,
        _ => return,
    };
    let judge = Instant::now() >= *lock(&inner.judge_after);
    let mut live = Vec::with_capacity(entries.len());
    let mut dead = redis::pipe();
    for (e, alive) in entries.into_iter().zip(alive) {
        let own = e.server == *inner.s.server;
        if own || matches!(alive, Value::Int(n) if n > 0) {
            live.push(e);
        } else if judge {
            dead.cmd("HDEL")
                .arg(inner.keys.instances())
                .arg(&e.server)
                .ignore();
        }
    }
    *lock(&inner.directory) = Some(live);
    if dead.cmd_iter().next().is_some() {
        let _ = exec(&mut conn, &dead).await;
    }
}

/// After the grace window, ends every session the dead instance still owns:
/// exactly one `peer_left` per member, announced by this instance alone.
pub(super) async fn clean_up(inner: Arc<Inner>, dead: Arc<str>) {
    tokio::time::sleep(inner.s.resume_grace).await;
    let Ok(mut conn) = inner.conn().await else {
        return;
    };
    let k = &inner.keys;
    let peers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(k.srvpeers(&dead))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for peer in peers {
        let Ok(peer) = PeerId::new(&peer) else {
            continue;
        };
        let owner: Option<String> = redis::cmd("HGET")
            .arg(k.peer(peer.as_str()))
            .arg("server")
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        if owner.as_deref() != Some(&*dead) {
            continue; // resumed elsewhere
        }
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(k.prooms(peer.as_str()))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let rooms: Vec<RoomName> = rooms.iter().filter_map(|r| RoomName::new(r).ok()).collect();
        let mut pipe = redis::pipe();
        inner.forget_peer(&mut pipe, &peer, &rooms, LeaveReason::Disconnected);
        // Our own publishes are not echoed back to us.
        for room in rooms {
            inner.emit(Event::Left {
                room,
                peer: peer.clone(),
                reason: LeaveReason::Disconnected,
            });
        }
        let _ = exec(&mut conn, &pipe).await;
    }
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(k.srvpeers(&dead))
        .query_async(&mut conn)
        .await;
}
