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
                            again.healthy.store(true, Ordering::Relaxed);
                        });
                    }
                    _ => {}
                }
            }
        }
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
