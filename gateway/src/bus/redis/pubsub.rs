//! Subscriptions: one pub/sub connection (or sharded pub/sub on a
//! cluster), restored and re-asserted after every reconnect.

use super::*;

/// Keeps the pub/sub connection: subscribes, dispatches, reconnects with
/// backoff and jitter, restores subscriptions and re-asserts this
/// instance's state after every reconnect.
pub(super) async fn subscriber(
    inner: Arc<Inner>,
    from: PubSubFrom,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    // Sentinels answer at once, and a failover is over in seconds: retry
    // often enough not to add to it.
    let max_backoff = match &from {
        PubSubFrom::Client(_) => Duration::from_secs(5),
        PubSubFrom::Sentinel(_) => Duration::from_millis(500),
    };
    let mut epochs = match &from {
        PubSubFrom::Client(_) => None,
        PubSubFrom::Sentinel(p) => Some(p.epochs()),
    };
    let mut first = true;
    loop {
        let connect = async {
            match &from {
                PubSubFrom::Client(client) => client.get_async_pubsub().await,
                PubSubFrom::Sentinel(primary) => primary.pubsub().await,
            }
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(COMMAND_TIMEOUT * 2, connect) => r,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            other => {
                if let Ok(Err(e)) = other {
                    tracing::warn!(error = %e, "redis pub/sub connection failed");
                }
                inner.healthy.store(false, Ordering::Relaxed);
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        if let Some(epochs) = epochs.as_mut() {
            // This connection is to the primary as of now.
            epochs.borrow_and_update();
        }
        // Restore every subscription before declaring routing healthy.
        let mut channels = vec![inner.keys.ch_srv(&inner.s.server)];
        channels.extend(
            lock(&inner.local)
                .watched
                .iter()
                .map(|r| inner.keys.ch_room(r.as_str())),
        );
        if let Err(e) = sink.subscribe(&channels).await {
            tracing::warn!(error = %e, "redis subscribe failed");
            continue;
        }
        backoff = Duration::from_millis(100);
        if !first {
            inner.metrics.redis_reconnects.inc();
            tracing::info!("redis pub/sub reconnected; re-asserting this instance");
            *lock(&inner.judge_after) = Instant::now() + inner.s.instance_ttl * 2;
            reassert(&inner);
            let resync = inner.clone();
            tokio::spawn(async move {
                // Give every instance a heartbeat to re-assert first.
                tokio::time::sleep(resync.s.instance_ttl / 2).await;
                let rooms: Vec<RoomName> = lock(&resync.local).watched.iter().cloned().collect();
                for room in rooms {
                    if let Ok(members) = snapshot(&resync, &room).await {
                        resync.emit(Event::Resync { room, members });
                    }
                }
            });
        }
        if !first {
            // Before anything that comes over the new subscription.
            drain_inboxes(&inner).await;
        }
        first = false;
        inner.healthy.store(true, Ordering::Relaxed);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                cmd = cmds.recv() => {
                    let Some((channel, subscribe, ack)) = cmd else { return };
                    let r = if subscribe { sink.subscribe(&channel).await } else { sink.unsubscribe(&channel).await };
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    if r.is_err() {
                        break;
                    }
                }
                msg = stream.next() => match msg {
                    Some(msg) => inner.on_message(Bytes::copy_from_slice(msg.get_payload_bytes())),
                    None => break,
                },
                () = primary_moved(&mut epochs) => {
                    // Still connected, to a node that is no longer the
                    // primary: what is published on the new one would
                    // count no subscriber here.
                    tracing::info!("redis primary changed; moving pub/sub to the new primary");
                    break;
                }
            }
        }
        inner.healthy.store(false, Ordering::Relaxed);
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// Resolves when the sentinels named a new primary (never without them).
async fn primary_moved(epochs: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match epochs {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Where pub/sub messages come from.
pub(super) enum Source {
    Single(PubSubFrom),
    Cluster(Box<ClusterSource>),
}

/// The one node the pub/sub connection goes to.
pub(super) enum PubSubFrom {
    /// A fixed address.
    Client(Box<redis::Client>),
    /// The primary as the sentinels name it at each (re)connect.
    Sentinel(Arc<Primary>),
}

pub(super) struct ClusterSource {
    pub(super) client: redis::cluster::ClusterClient,
    pub(super) conn: Arc<OnceLock<ClusterConnection>>,
    pub(super) pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
}

pub(super) type SubCmd = (String, bool, Option<oneshot::Sender<()>>);

/// Sharded pub/sub on a Redis Cluster: the cluster connection routes each
/// `SSUBSCRIBE` to the shard that owns the channel and restores
/// subscriptions after reconnecting; messages arrive as RESP3 pushes.
pub(super) async fn cluster_subscriber(
    inner: Arc<Inner>,
    client: redis::cluster::ClusterClient,
    slot: Arc<OnceLock<ClusterConnection>>,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut conn = loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = client.get_async_connection() => match r {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "redis cluster connection failed"),
            },
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let _ = slot.set(conn.clone());
    let mut channels = vec![inner.keys.ch_srv(&inner.s.server)];
    channels.extend(
        lock(&inner.local)
            .watched
            .iter()
            .map(|r| inner.keys.ch_room(r.as_str())),
    );
    for ch in &channels {
        if let Err(e) = conn.ssubscribe(ch).await {
            tracing::warn!(error = %e, "redis cluster subscribe failed");
        }
    }
    inner.healthy.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            cmd = cmds.recv() => {
                let Some((channel, subscribe, ack)) = cmd else { return };
                let r = if subscribe { conn.ssubscribe(&channel).await } else { conn.sunsubscribe(&channel).await };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "redis cluster (un)subscribe failed");
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        if let Some(Value::BulkString(payload)) = push.data.get(1) {
                            inner.on_message(Bytes::copy_from_slice(payload));
                        }
                    }
                    redis::PushKind::Disconnection => {
                        // The connection reconnects and resubscribes by
                        // itself; re-assert once commands work again.
                        inner.healthy.store(false, Ordering::Relaxed);
                        inner.metrics.redis_reconnects.inc();
                        let again = inner.clone();
                        let mut probe = conn.clone();
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut probe).await;
                                if pong.is_ok() {
                                    break;
                                }
                            }
                            *lock(&again.judge_after) = Instant::now() + again.s.instance_ttl * 2;
                            reassert(&again);
                            // Sharded channels cannot be published to from
                            // the inbox script, and the client re-subscribes
                            // on its own: what was kept comes now, maybe
                            // after newer messages, but it is not lost.
                            drain_inboxes(&again).await;
                            again.healthy.store(true, Ordering::Relaxed);
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// After a re-subscription: hands the hub what was kept in the inboxes of
/// the sessions served here while this instance had no subscription
/// (another instance published to our channel and found no subscriber; see
/// [`DELIVER_OR_INBOX`]). Runs before the new subscription's messages are
/// read, so those come after. Messages kept after this point cannot exist:
/// a publisher that finds no subscriber publishes once more and inboxes
/// only if that too finds none, in one atomic step.
async fn drain_inboxes(inner: &Inner) {
    let peers: Vec<PeerId> = lock(&inner.local).peers.keys().cloned().collect();
    if peers.is_empty() {
        return;
    }
    let drained = tokio::time::timeout(COMMAND_TIMEOUT * 2, async {
        let mut conn = inner.conn().await.map_err(|e| e.to_string())?;
        let k = &inner.keys;
        // One round trip finds the few sessions with anything kept.
        let mut pipe = redis::pipe();
        for peer in &peers {
            pipe.cmd("HGET").arg(k.peer(peer.as_str())).arg("inboxed");
        }
        let counts = exec(&mut conn, &pipe).await.map_err(|e| e.to_string())?;
        for (peer, count) in peers.iter().zip(counts) {
            let kept = redis::from_redis_value::<Option<u64>>(count)
                .ok()
                .flatten()
                .unwrap_or(0);
            if kept == 0 {
                continue;
            }
            let reply: Value = inner
                .take_inbox
                .key(k.peer(peer.as_str()))
                .key(k.inbox(peer.as_str()))
                .arg(&*inner.s.server)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let Some((total, kept)) = inbox_entries(&reply) else {
                continue;
            };
            if total > kept.len() {
                tracing::warn!(
                    %peer,
                    lost = total - kept.len(),
                    "more messages were kept for a session during the reconnect than its inbox holds (RESUME_BUFFER); the oldest are lost"
                );
            }
            // Publishes reach subscribers of replicas too: while this
            // instance was subscribed to a primary that had just been
            // demoted, it got live what the new primary also kept.
            let bodies: Vec<Bytes> = {
                let seen = lock(&inner.delivered);
                kept.into_iter()
                    .filter(|(_, id)| *id == 0 || !seen.contains(*id))
                    .map(|(body, _)| body)
                    .collect()
            };
            if bodies.is_empty() {
                continue;
            }
            tracing::info!(%peer, messages = bodies.len(), "delivering what was kept while re-subscribing");
            inner.emit(Event::Inbox {
                to: peer.clone(),
                bodies,
            });
        }
        Ok::<(), String>(())
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not drain inboxes after re-subscribing; they are drained after the next reconnect")
        }
        Err(_) => tracing::warn!(
            "draining inboxes after re-subscribing timed out; they are drained after the next reconnect"
        ),
    }
}

pub(super) fn reassert(inner: &Inner) {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(inner.keys.srv(&inner.s.server))
        .arg(&*inner.s.region)
        .arg("PX")
        .arg(inner.s.instance_ttl.as_millis() as u64)
        .ignore();
    let entry = Instance {
        server: inner.s.server.to_string(),
        region: inner.s.region.to_string(),
        ws_url: inner.s.ws_url.clone(),
        wt_url: inner.s.wt_url.clone(),
    };
    pipe.cmd("HSET")
        .arg(inner.keys.instances())
        .arg(&*inner.s.server)
        .arg(serde_json::to_string(&entry).unwrap_or_default())
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(inner.keys.instances())
        .arg(inner.long_ttl_ms())
        .ignore();
    let local = lock(&inner.local);
    for (peer, (secret, rooms)) in &local.peers {
        inner.assert_peer(&mut pipe, peer, secret, rooms);
    }
    drop(local);
    let _ = inner.queue(Op::Cmds { pipe, done: None });
}

/// The members of `room` on other instances, as Redis has them.
pub(super) async fn snapshot(
    inner: &Inner,
    room: &RoomName,
) -> Result<Vec<RemoteMember>, RouteError> {
    let mut conn = inner.conn().await?;
    let all: HashMap<String, String> = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("HGETALL")
            .arg(inner.keys.room(room.as_str()))
            .query_async(&mut conn),
    )
    .await
    .map_err(unavailable)?
    .map_err(unavailable)?;
    tracing::debug!(%room, entries = all.len(), "room snapshot");
    let mut members = Vec::with_capacity(all.len());
    for (peer, value) in all {
        let mut parts = value.splitn(3, '\n');
        let (Some(server), Some(region), Some(meta)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if server == &*inner.s.server {
            continue;
        }
        let (Ok(peer), Ok(meta)) = (PeerId::new(&peer), parse_meta(meta)) else {
            continue;
        };
        let server: Arc<str> = server.into();
        lock(&inner.local).servers.insert(server.clone());
        members.push(RemoteMember {
            peer,
            meta,
            at: Remote {
                server,
                region: region.into(),
            },
        });
    }
    Ok(members)
}
