//! The ordered outbox: queued operations, many per round trip.

use super::*;

pub(super) enum Op {
    /// Plain commands whose replies are only checked for errors.
    Cmds {
        pipe: redis::Pipeline,
        done: Option<oneshot::Sender<Result<Vec<Value>, RouteError>>>,
    },
    /// A directed message: published to the instance channel; when nobody
    /// listens there, kept in the recipient's inbox or sent where it moved.
    Direct {
        server: Arc<str>,
        to: PeerId,
        payload: Bytes,
        body: Bytes,
        done: Option<oneshot::Sender<Result<(), RouteError>>>,
    },
}

/// Runs queued operations in order, many per round trip.
pub(super) async fn outbox(inner: Arc<Inner>, mut rx: mpsc::Receiver<Op>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    // One connection held across batches: taking one from the pool costs a
    // health-check round trip, which a remote region pays dearly for.
    let mut held: Option<Conn> = None;
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(COMMAND_TIMEOUT, run_batch(&inner, &mut held, &mut batch)).await;
        let ok = matches!(result, Ok(true));
        if !ok {
            held = None;
            inner.commands_failed();
        }
        inner.commands_ok.store(ok, Ordering::Relaxed);
        inner
            .metrics
            .redis_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(_elapsed) = result {
            inner.metrics.redis_errors.inc();
            fail(
                &mut batch,
                RouteError::Unavailable("redis timed out".into()),
            );
        }
        batch.clear();
    }
}

pub(super) fn fail(batch: &mut Vec<Op>, err: RouteError) {
    for op in batch.drain(..) {
        match op {
            Op::Cmds { done: Some(tx), .. } => {
                let _ = tx.send(Err(err.clone()));
            }
            Op::Direct { done: Some(tx), .. } => {
                let _ = tx.send(Err(err.clone()));
            }
            _ => {}
        }
    }
}

/// Runs one batch; false when Redis could not be reached.
pub(super) async fn run_batch(inner: &Inner, held: &mut Option<Conn>, batch: &mut Vec<Op>) -> bool {
    let conn = match held {
        Some(c) => c,
        None => match inner.conn().await {
            Ok(c) => held.insert(c),
            Err(e) => {
                inner.metrics.redis_errors.inc();
                fail(batch, e);
                return false;
            }
        },
    };
    // Signals whose sender already gave up (deadline) are not sent.
    // (Membership changes always are: nobody waits on a departure.)
    batch.retain(|op| match op {
        Op::Direct { done: Some(tx), .. } => !tx.is_closed(),
        _ => true,
    });
    let mut pipe = redis::pipe();
    let mut counts = Vec::with_capacity(batch.len());
    for op in batch.iter() {
        match op {
            Op::Cmds { pipe: p, .. } => {
                let n = p.cmd_iter().count();
                for c in p.cmd_iter() {
                    pipe.add_command(c.clone());
                }
                counts.push(n);
            }
            Op::Direct {
                server, payload, ..
            } => {
                pipe.cmd(inner.publish)
                    .arg(inner.keys.ch_srv(server))
                    .arg(payload.as_ref());
                counts.push(1);
            }
        }
    }
    let replies: Vec<Value> = match exec(conn, &pipe).await {
        Ok(r) => r,
        Err(e) => {
            inner.metrics.redis_errors.inc();
            if e.code() == Some("READONLY") {
                demoted();
            }
            fail(batch, unavailable(e));
            return false;
        }
    };
    if replies
        .iter()
        .any(|v| matches!(v, Value::ServerError(e) if e.code() == "READONLY"))
    {
        inner.metrics.redis_errors.inc();
        demoted();
        fail(
            batch,
            RouteError::Unavailable("redis primary is now a replica".into()),
        );
        return false;
    }
    let mut replies = replies.into_iter();
    for (op, n) in batch.drain(..).zip(counts) {
        let mine: Vec<Value> = replies.by_ref().take(n).collect();
        match op {
            Op::Cmds { done, .. } => {
                let err = mine.iter().find_map(|v| match v {
                    Value::ServerError(e) => Some(unavailable(format!("{e:?}"))),
                    _ => None,
                });
                if let Some(tx) = done {
                    let _ = tx.send(match err {
                        Some(e) => Err(e),
                        None => Ok(mine),
                    });
                }
            }
            Op::Direct {
                server,
                to,
                payload,
                body,
                done,
            } => {
                let listeners = matches!(mine.first(), Some(Value::Int(n)) if *n > 0);
                inner.metrics.cross_instance_sent.inc();
                let result = if listeners {
                    Ok(())
                } else {
                    orphan_delivery(inner, conn, &server, &to, payload, body).await
                };
                if let Some(tx) = done {
                    let _ = tx.send(result);
                }
            }
        }
    }
    true
}

/// A write reached a primary demoted to a replica while this connection
/// stayed open: a failover this instance has not followed yet. Failing the
/// batch makes the next one look the primary up again.
fn demoted() {
    tracing::warn!("redis answered READONLY: the primary was demoted; looking it up again");
}

/// Nobody listens on the recipient's instance channel: the instance is gone
/// (or the session moved). Keep the message for the session's resume, or
/// send it where the session is now.
pub(super) async fn orphan_delivery(
    inner: &Inner,
    conn: &mut Conn,
    dead: &str,
    to: &PeerId,
    payload: Bytes,
    body: Bytes,
) -> Result<(), RouteError> {
    let k = &inner.keys;
    let reply: Option<String> = inner
        .deliver_or_inbox
        .key(k.peer(to.as_str()))
        .key(k.inbox(to.as_str()))
        .arg(dead)
        .arg(body.as_ref())
        .arg(inner.s.resume_buffer.max(1))
        .arg(inner.long_ttl_ms())
        .invoke_async(conn)
        .await
        .map_err(unavailable)?;
    match reply.as_deref() {
        None => Err(RouteError::NotFound),
        Some("inbox") => Ok(()),
        Some(now) => {
            let n: i64 = redis::cmd(inner.publish)
                .arg(k.ch_srv(now))
                .arg(payload.as_ref())
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if n > 0 {
                Ok(())
            } else {
                Err(RouteError::NotFound)
            }
        }
    }
}
