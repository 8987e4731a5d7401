//! `pairs`: paced signals between pairs, one room per pair; delivery ratio
//! and one-way relay latency.

use crate::common::{
    Counters, Report, Target, Window, close_all, connect_pairs, drain, histogram, latency_json,
    latency_line, ns_at, receive, settle, transport_name,
};
use crate::{Global, seconds};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `loadgen pairs`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Pairs of connections, each pair in its own room.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Aggregate target rate in signals per second, spread evenly over the
    /// pairs and over time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, value_parser = seconds, default_value = "10")]
    duration: Duration,
    /// Seconds sent before measuring starts.
    #[arg(long, value_parser = seconds, default_value = "2")]
    warmup: Duration,
    /// Bytes of padding in each signal's `data`.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Seconds to wait for signals still in flight after the end.
    #[arg(long, value_parser = seconds, default_value = "5")]
    drain: Duration,
    /// How sends are spaced in time.
    #[arg(long, value_enum, default_value_t = Pacing::Even)]
    pacing: Pacing,
}

/// How `pairs` spaces its sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Pacing {
    /// One send every `1 / rate` seconds, round-robin over the pairs, timed
    /// by a dedicated thread with the operating system's fine-grained
    /// sleep: the aggregate really is spread evenly.
    Even,
    /// Each pair's task sleeps on the runtime's timer, whose resolution is
    /// one millisecond: the sends due within a millisecond go out together,
    /// in bursts of about `rate / 1000`.
    Tick,
}

/// Sends `rate` signals per second from `first` until `end`, each stamped
/// with its send time; catches up at once when it falls behind.
async fn pace(
    target: Target,
    rate: f64,
    first: Instant,
    end: Instant,
    window: Window,
    counters: Arc<Counters>,
    pad: Arc<str>,
) {
    let mut k: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= first {
            let due = ((now - first).as_secs_f64() * rate) as u64 + 1;
            while k < due {
                if !target.send_stamped(k, &pad, window, &counters).await {
                    return;
                }
                k += 1;
            }
        }
        let next = first + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Sends one signal per tick of `ticks` until it closes, each stamped with
/// its send time.
async fn on_ticks(
    target: Target,
    mut ticks: tokio::sync::mpsc::UnboundedReceiver<()>,
    window: Window,
    counters: Arc<Counters>,
    pad: Arc<str>,
) {
    let mut k: u64 = 0;
    while ticks.recv().await.is_some() {
        if !target.send_stamped(k, &pad, window, &counters).await {
            return;
        }
        k += 1;
    }
}

/// The clock of [`Pacing::Even`]: from `start` until `end`, ticks the
/// pairs' senders in turn, one every `1 / rate` seconds. A thread of its
/// own, because `std::thread::sleep` wakes within microseconds where the
/// runtime's timer rounds to milliseconds. Falling behind, it catches up at
/// once.
fn even_clock(
    senders: Vec<tokio::sync::mpsc::UnboundedSender<()>>,
    rate: f64,
    start: Instant,
    end: Instant,
) {
    let mut n: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if senders[(n % senders.len() as u64) as usize]
            .send(())
            .is_err()
        {
            break;
        }
        n += 1;
    }
}

/// Runs `pairs`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.pairs > 0, "--pairs must be at least 1");
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let pairs = connect_pairs(global, args.pairs).await?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let window = Window {
        from_ns: ns_at(measure_from),
        to_ns: ns_at(end),
    };
    let per_pair = args.rate / args.pairs as f64;
    let pad: Arc<str> = "x".repeat(args.payload).into();

    let (mut receivers, mut drains, mut senders) = (Vec::new(), Vec::new(), Vec::new());
    let mut ticks = Vec::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let target = Target {
            handle: pair.sender.handle(),
            room: pair.room,
            to: pair.to,
        };
        let c = counters.clone();
        receivers.push(tokio::spawn(receive(
            pair.receiver,
            window,
            c,
            None,
            stop.clone(),
        )));
        drains.push(tokio::spawn(drain(
            pair.sender,
            counters.clone(),
            stop.clone(),
        )));
        let (c, pad) = (counters.clone(), pad.clone());
        match args.pacing {
            Pacing::Even => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                ticks.push(tx);
                senders.push(tokio::spawn(on_ticks(target, rx, window, c, pad)));
            }
            Pacing::Tick => {
                // Stagger the pairs over one aggregate period so that the
                // total is paced, not bursts of one signal per pair.
                let first = start + Duration::from_secs_f64(i as f64 / args.rate);
                senders.push(tokio::spawn(pace(
                    target, per_pair, first, end, window, c, pad,
                )));
            }
        }
    }
    if !ticks.is_empty() {
        let rate = args.rate;
        std::thread::Builder::new()
            .name("pacing".into())
            .spawn(move || even_clock(ticks, rate, start, end))?;
    }
    for s in senders {
        s.await?;
    }
    settle(&counters, args.drain).await;
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

    let sent = counters.sent.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let ratio = if sent == 0 {
        0.0
    } else {
        delivered as f64 / sent as f64
    };
    let send_rate = sent as f64 / args.duration.as_secs_f64();
    let errors = counters.errors.load(Ordering::Relaxed);
    let rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    let reordered = counters.reordered.load(Ordering::Relaxed);
    let (closed_json, closed_text) = counters.closed_summary();
    let line = format!(
        "pairs [{}]: {} pairs, target {}/s, sent {sent} ({send_rate:.0}/s), delivered {delivered} ({:.2}%), \
         latency {}, errors {errors} (rate_limited {rate_limited}), reordered {reordered}, \
         closed early [{closed_text}], seq errors {seq_errors}",
        transport_name(global),
        args.pairs,
        args.rate,
        ratio * 100.0,
        latency_line(&latency),
    );
    let json = serde_json::json!({
        "mode": "pairs",
        "transport": transport_name(global),
        "pairs": args.pairs,
        "target_rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "payload_bytes": args.payload,
        "pacing": format!("{:?}", args.pacing).to_lowercase(),
        "sent": sent,
        "send_rate": send_rate,
        "delivered": delivered,
        "delivered_ratio": ratio,
        "latency_us": latency_json(&latency),
        "errors": errors,
        "rate_limited": rate_limited,
        "reordered": reordered,
        "closed_early": closed_json,
        "seq_errors": seq_errors,
    });
    Ok(Report { line, json })
}
