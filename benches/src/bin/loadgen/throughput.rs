//! `throughput`: every sender pushes as fast as its window allows; the
//! figure is signals delivered per second.
//!
//! The window (signals sent but not yet delivered, per pair) keeps the
//! gateway's outbound queues short, so its slow-consumer protection (4009)
//! measures nothing here; the receiving side returns credit per delivery.

use crate::common::{
    Counters, Report, Target, Window, close_all, connect_pairs, drain, histogram, latency_json,
    latency_line, ns_at, receive, settle, transport_name,
};
use crate::{Global, seconds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// `loadgen throughput`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Pairs of connections, each pair in its own room.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Measured seconds.
    #[arg(long, value_parser = seconds, default_value = "10")]
    duration: Duration,
    /// Seconds sent before measuring starts.
    #[arg(long, value_parser = seconds, default_value = "2")]
    warmup: Duration,
    /// Signals in flight (sent, not yet delivered) per pair.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Bytes of padding in each signal's `data`.
    #[arg(long, default_value_t = 0)]
    payload: usize,
}

/// A window that has not moved for this long is assumed lost (dropped by
/// the server) and refilled, so one loss does not stop a pair for good.
const STALL: Duration = Duration::from_secs(1);

/// One pair's sending side.
struct Push {
    target: Target,
    credit: Arc<Semaphore>,
    window_size: usize,
    end: Instant,
    window: Window,
    counters: Arc<Counters>,
    stalls: Arc<AtomicU64>,
    pad: Arc<str>,
}

impl Push {
    async fn run(self) {
        let mut k: u64 = 0;
        while Instant::now() < self.end {
            match tokio::time::timeout(STALL, self.credit.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                Ok(Err(_)) => return,
                Err(_) => {
                    self.stalls.fetch_add(1, Ordering::Relaxed);
                    self.credit.add_permits(self.window_size);
                    continue;
                }
            }
            if !self
                .target
                .send_stamped(k, &self.pad, self.window, &self.counters)
                .await
            {
                return;
            }
            k += 1;
        }
    }
}

/// Runs `throughput`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.pairs > 0, "--pairs must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    let pairs = connect_pairs(global, args.pairs).await?;
    let counters = Arc::new(Counters::default());
    let stalls = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let window = Window {
        from_ns: ns_at(measure_from),
        to_ns: ns_at(end),
    };
    let pad: Arc<str> = "x".repeat(args.payload).into();

    let (mut receivers, mut drains, mut senders) = (Vec::new(), Vec::new(), Vec::new());
    for pair in pairs {
        let credit = Arc::new(Semaphore::new(args.window));
        let target = Target {
            handle: pair.sender.handle(),
            room: pair.room,
            to: pair.to,
        };
        let c = counters.clone();
        let rx_credit = Some(credit.clone());
        receivers.push(tokio::spawn(receive(
            pair.receiver,
            window,
            c,
            rx_credit,
            stop.clone(),
        )));
        drains.push(tokio::spawn(drain(
            pair.sender,
            counters.clone(),
            stop.clone(),
        )));
        let push = Push {
            target,
            credit,
            window_size: args.window,
            end,
            window,
            counters: counters.clone(),
            stalls: stalls.clone(),
            pad: pad.clone(),
        };
        senders.push(tokio::spawn(push.run()));
    }
    // Delivered-per-second over the measured window, from the deliveries
    // counted at its two ends (not from send stamps), so it is a pure
    // relay rate.
    tokio::time::sleep_until(measure_from.into()).await;
    let delivered_before = counters.delivered_all.load(Ordering::Relaxed);
    tokio::time::sleep_until(end.into()).await;
    let delivered_after = counters.delivered_all.load(Ordering::Relaxed);
    for s in senders {
        s.await?;
    }
    settle(&counters, Duration::from_secs(5)).await;
    stop_tx.send_replace(true);

    let mut latency = histogram();
    let mut clients = Vec::with_capacity(args.pairs * 2);
    for r in receivers {
        let r = r.await?;
        latency.add(&r.latency_ns)?;
        clients.push(r.client);
    }
    for d in drains {
        clients.push(d.await?);
    }
    let seq_errors = close_all(clients, global.connect_concurrency).await;

    let relayed = delivered_after - delivered_before;
    let per_sec = relayed as f64 / args.duration.as_secs_f64();
    let sent = counters.sent.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let stalls = stalls.load(Ordering::Relaxed);
    let (closed_json, closed_text) = counters.closed_summary();
    let line = format!(
        "throughput [{}]: {} pairs, window {}, {per_sec:.0} signals/s delivered ({relayed} in {:.1}s), \
         sent {sent}, delivered {delivered}, latency {}, errors {errors}, stalls {stalls}, \
         closed early [{closed_text}], seq errors {seq_errors}",
        transport_name(global),
        args.pairs,
        args.window,
        args.duration.as_secs_f64(),
        latency_line(&latency),
    );
    let json = serde_json::json!({
        "mode": "throughput",
        "transport": transport_name(global),
        "pairs": args.pairs,
        "window": args.window,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "payload_bytes": args.payload,
        "delivered_per_sec": per_sec,
        "relayed": relayed,
        "sent": sent,
        "delivered": delivered,
        "latency_us": latency_json(&latency),
        "errors": errors,
        "rate_limited": counters.rate_limited.load(Ordering::Relaxed),
        "reordered": counters.reordered.load(Ordering::Relaxed),
        "stalls": stalls,
        "closed_early": closed_json,
        "seq_errors": seq_errors,
    });
    Ok(Report { line, json })
}
