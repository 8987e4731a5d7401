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
        /// The message's [`Wire::Deliver`] id.
        id: u64,
        done: Option<oneshot::Sender<Result<(), RouteError>>>,
    },
}

/// How one attempt at a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// Every operation was answered (some perhaps with an error of its own).
    Done,
    /// Redis could not be reached or failed mid-way: every operation was
    /// answered `internal`.
    Failed,
    /// The node is a replica now (`READONLY`) and the batch had no effect
    /// at all: every write was refused and every publication reached
    /// nobody. Nothing was answered; the batch may run again elsewhere.
    Refused,
}

/// Runs queued operations in order, many per round trip.
pub(super) async fn outbox(inner: Arc<Inner>, mut rx: mpsc::Receiver<Op>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    // One connection held across batches: taking one from the pool costs a
    // health-check round trip, which a remote region pays dearly for.
    let mut held: Option<Conn> = None;
    // In Sentinel mode: the primary the held connection goes to.
    let mut epochs = inner.epochs();
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        if let Some(epochs) = epochs.as_mut()
            && epochs.has_changed().unwrap_or(false)
        {
            // The sentinels named a new primary: the held connection goes
            // to the old one, which may still accept writes for a while.
            epochs.borrow_and_update();
            held = None;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(
            COMMAND_TIMEOUT,
            run_with_retry(&inner, &mut held, &mut batch),
        )
        .await;
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

/// Runs one batch; a batch a demoted primary refused without any effect
/// runs once more on the primary the sentinels name now (see
/// [`Ran::Refused`]: it cannot be delivered twice, and nothing queued
/// after it has run yet, so order holds). False when Redis could not be
/// reached.
async fn run_with_retry(inner: &Inner, held: &mut Option<Conn>, batch: &mut Vec<Op>) -> bool {
    match run_batch(inner, held, batch).await {
        Ran::Done => return true,
        Ran::Failed => return false,
        Ran::Refused => {}
    }
    *held = None;
    inner.commands_failed();
    inner.metrics.redis_errors.inc();
    tracing::info!("retrying a batch the demoted primary refused on the primary named now");
    match run_batch(inner, held, batch).await {
        Ran::Done => true,
        Ran::Failed => false,
        Ran::Refused => {
            fail(
                batch,
                RouteError::Unavailable("redis primary is now a replica".into()),
            );
            false
        }
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

fn readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

/// An operation's result, answered once the whole batch is known.
enum Answer {
    Cmds(Result<Vec<Value>, RouteError>),
    Direct(Result<(), RouteError>),
}

/// Runs one batch. Answers are sent only once every operation's outcome
/// is known, so a batch that turns out to have been refused by a demoted
/// primary ([`Ran::Refused`]) is still whole and unanswered.
pub(super) async fn run_batch(inner: &Inner, held: &mut Option<Conn>, batch: &mut Vec<Op>) -> Ran {
    let conn = match held {
        Some(c) => c,
        None => match inner.conn().await {
            Ok(c) => held.insert(c),
            Err(e) => {
                inner.metrics.redis_errors.inc();
                fail(batch, e);
                return Ran::Failed;
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
            // Whether any of it ran is unknown: failed, never repeated.
            inner.metrics.redis_errors.inc();
            if e.code() == Some("READONLY") {
                demoted();
            }
            fail(batch, unavailable(e));
            return Ran::Failed;
        }
    };
    // Did anything of this batch take effect anywhere? A publication that
    // reached a subscriber did (a demoted primary still relays PUBLISH to
    // its own subscribers), and so did any write that was not refused.
    let is_publish = |c: &redis::Cmd| matches!(c.args_iter().next(), Some(redis::Arg::Simple(name)) if name == inner.publish.as_bytes());
    let mut refused = false;
    let mut effect = false;
    for (cmd, reply) in pipe.cmd_iter().zip(&replies) {
        if readonly(reply) {
            refused = true;
        } else if !is_publish(cmd) || !matches!(reply, Value::Int(0)) {
            effect = true;
        }
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut replies = replies.into_iter();
    for (op, n) in batch.iter().zip(&counts) {
        let mine: Vec<Value> = replies.by_ref().take(*n).collect();
        match op {
            Op::Cmds { .. } => {
                let err = mine.iter().find_map(|v| match v {
                    Value::ServerError(e) => Some(unavailable(format!("{e:?}"))),
                    _ => None,
                });
                answers.push(Answer::Cmds(match err {
                    Some(e) => Err(e),
                    None => Ok(mine),
                }));
            }
            Op::Direct {
                server,
                to,
                payload,
                body,
                id,
                ..
            } => {
                let listeners = matches!(mine.first(), Some(Value::Int(n)) if *n > 0);
                let result = if listeners {
                    Ok(())
                } else if refused {
                    // The inbox cannot be written on a replica either.
                    Err(RouteError::Unavailable(
                        "redis primary is now a replica".into(),
                    ))
                } else {
                    match orphan_delivery(
                        inner,
                        conn,
                        server,
                        to,
                        payload.clone(),
                        body.clone(),
                        *id,
                    )
                    .await
                    {
                        Err(Orphan::Refused) => {
                            refused = true;
                            Err(RouteError::Unavailable(
                                "redis primary is now a replica".into(),
                            ))
                        }
                        Err(Orphan::Failed(e)) => Err(e),
                        Ok(()) => {
                            effect = true;
                            Ok(())
                        }
                    }
                };
                answers.push(Answer::Direct(result));
            }
        }
    }
    if refused {
        inner.metrics.redis_errors.inc();
        demoted();
        if !effect {
            return Ran::Refused;
        }
    }
    for (op, answer) in batch.drain(..).zip(answers) {
        match (op, answer) {
            (Op::Cmds { done, .. }, Answer::Cmds(result)) => {
                if let Some(tx) = done {
                    let _ = tx.send(result);
                }
            }
            (Op::Direct { done, .. }, Answer::Direct(result)) => {
                inner.metrics.cross_instance_sent.inc();
                if let Some(tx) = done {
                    let _ = tx.send(result);
                }
            }
            _ => unreachable!("answers follow the operations"),
        }
    }
    if refused { Ran::Failed } else { Ran::Done }
}

/// A write reached a primary demoted to a replica while this connection
/// stayed open: a failover this instance has not followed yet. The next
/// batch looks the primary up again.
fn demoted() {
    tracing::warn!("redis answered READONLY: the primary was demoted; looking it up again");
}

/// Why an orphan delivery failed.
pub(super) enum Orphan {
    /// The node is a replica now: nothing was written.
    Refused,
    /// Anything else (the session is gone: `NotFound`).
    Failed(RouteError),
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
    id: u64,
) -> Result<(), Orphan> {
    let k = &inner.keys;
    let reply: Option<String> = inner
        .deliver_or_inbox
        .key(k.peer(to.as_str()))
        .key(k.inbox(to.as_str()))
        .arg(dead)
        .arg(body.as_ref())
        .arg(inner.s.resume_buffer.max(1))
        .arg(inner.long_ttl_ms())
        .arg(if inner.publish == "PUBLISH" {
            k.ch_srv(dead)
        } else {
            String::new()
        })
        .arg(payload.as_ref())
        .arg(id)
        .invoke_async(conn)
        .await
        .map_err(|e| {
            if e.code() == Some("READONLY") {
                Orphan::Refused
            } else {
                Orphan::Failed(unavailable(e))
            }
        })?;
    match reply.as_deref() {
        None => Err(Orphan::Failed(RouteError::NotFound)),
        Some("inbox" | "delivered") => Ok(()),
        Some(now) => {
            let n: i64 = redis::cmd(inner.publish)
                .arg(k.ch_srv(now))
                .arg(payload.as_ref())
                .query_async(conn)
                .await
                .map_err(|e| Orphan::Failed(unavailable(e)))?;
            if n > 0 {
                Ok(())
            } else {
                Err(Orphan::Failed(RouteError::NotFound))
            }
        }
    }
}
