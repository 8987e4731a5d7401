//! The load: `pairs` sender/receiver connections, senders paced to `rate`
//! messages/s in total, receivers timing each message (one-way, same clock).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::server::{ACK_BYTES, READY};
use crate::stack::{Connector, Writer};
use crate::{ClientArgs, Pacing};

fn ns_at(t: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    t.saturating_duration_since(base).as_nanos() as u64
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
    acks: AtomicU64,
}

/// Stamps in `[from, to)` are measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: u64,
    to: u64,
}

type Reader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;

async fn handshake(
    connector: &Connector,
    pair: u32,
    role: u32,
) -> anyhow::Result<(Reader, Writer, Box<dyn std::any::Any + Send>)> {
    let conn = connector.connect().await?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&pair.to_le_bytes());
    header[4..].copy_from_slice(&role.to_le_bytes());
    let mut writer = conn.writer;
    writer
        .send(&mut vec![Bytes::copy_from_slice(&header)])
        .await?;
    let mut reader = BufReader::with_capacity(64 * 1024, conn.reader);
    anyhow::ensure!(
        reader.read_u8().await? == READY,
        "pair {pair}: bad ready byte"
    );
    Ok((reader, writer, Box::new(conn._keep)))
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(SELF) cannot fail");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

pub(crate) async fn run(args: &ClientArgs) -> anyhow::Result<String> {
    let connector = Connector::new(args.client_stack.unwrap_or(args.stack), args.addr)?;
    // Receivers first: the server pairs a sender with a registered receiver.
    let mut receivers = Vec::new();
    for pair in 0..args.pairs {
        receivers.push(handshake(&connector, pair, 1).await?);
    }
    let mut senders = Vec::new();
    for pair in 0..args.pairs {
        senders.push(handshake(&connector, pair, 0).await?);
    }

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + ClientArgs::secs(args.warmup);
    let end = measure_from + ClientArgs::secs(args.duration);
    let window = Window {
        from: ns_at(measure_from),
        to: ns_at(end),
    };
    let cpu_before = cpu_seconds();

    let mut timers = Vec::new();
    for (reader, writer, keep) in receivers {
        // The receiver's write half stays open (and unused) until the end.
        let keep = (keep, writer);
        let (c, stop) = (counters.clone(), stop.clone());
        let size = args.size;
        timers.push(tokio::spawn(async move {
            let r = receive(reader, size, window, &c, stop).await;
            drop(keep);
            r
        }));
    }
    let (mut tasks, mut sending) = (Vec::new(), Vec::new());
    let mut ticks = Vec::new();
    let per_pair = args.rate / f64::from(args.pairs);
    for (i, (reader, writer, keep)) in senders.into_iter().enumerate() {
        let (c, stop) = (counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let r = count_acks(reader, &c, stop).await;
            drop(keep);
            r
        }));
        let (c, size) = (counters.clone(), args.size);
        let clock = match args.pacing {
            Pacing::Even => {
                let (tx, rx) = mpsc::unbounded_channel();
                ticks.push(tx);
                Clock::Even(rx)
            }
            Pacing::Tick => {
                // Stagger the pairs over one aggregate period (1/rate) so
                // that the total is paced, not one burst of all pairs.
                let first = start + Duration::from_secs_f64(i as f64 / args.rate);
                let mut interval =
                    tokio::time::interval_at(first.into(), Duration::from_secs_f64(1.0 / per_pair));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                Clock::Tick(interval, end)
            }
        };
        sending.push(tokio::spawn(send(writer, clock, size, c)));
    }
    if !ticks.is_empty() {
        let rate = args.rate;
        std::thread::Builder::new()
            .name("pacing".into())
            .spawn(move || even_clock(ticks, rate, start, end))?;
    }
    tokio::time::sleep_until(end.into()).await;
    // Let the senders finish their last message, then wait for every
    // message and ack to arrive (or the drain time to pass).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deadline = Instant::now() + ClientArgs::secs(args.drain);
    loop {
        let sent = counters.sent.load(Ordering::Relaxed);
        let all = counters.delivered.load(Ordering::Relaxed) >= sent
            && counters.acks.load(Ordering::Relaxed) >= sent;
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu_seconds() - cpu_before;
    stop_tx.send_replace(true);

    let mut latency = histogram();
    for t in timers {
        latency.add(&t.await??)?;
    }
    for t in tasks {
        t.await??;
    }
    let mut writers = Vec::new();
    for t in sending {
        writers.push(t.await??);
    }
    drop(writers);
    let sent = counters.sent.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "stack": args.stack.name(),
        "client_stack": args.client_stack.unwrap_or(match args.stack {
            crate::Stack::Quiche => crate::Stack::Quinn,
            s => s,
        }).name(),
        "pacing": match args.pacing { Pacing::Tick => "tick", Pacing::Even => "even" },
        "pairs": args.pairs,
        "rate": args.rate,
        "size": args.size,
        "sent": sent,
        "delivered": delivered,
        "acks": counters.acks.load(Ordering::Relaxed),
        "delivered_ratio": if sent == 0 { 0.0 } else { delivered as f64 / sent as f64 },
        "measured": latency.len(),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": latency.max() as f64 / 1000.0,
        "client_cpu_s": (cpu * 1000.0).round() / 1000.0,
    })
    .to_string())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

enum Clock {
    Tick(tokio::time::Interval, Instant),
    Even(mpsc::UnboundedReceiver<()>),
}

impl Clock {
    /// Waits for the next send; `false` when sending is over.
    async fn next(&mut self) -> bool {
        match self {
            Clock::Tick(interval, end) => {
                interval.tick().await;
                Instant::now() < *end
            }
            Clock::Even(rx) => rx.recv().await.is_some(),
        }
    }
}

async fn send(
    mut writer: Writer,
    mut clock: Clock,
    size: usize,
    c: Arc<Counters>,
) -> anyhow::Result<Writer> {
    let mut batch = Vec::with_capacity(1);
    while clock.next().await {
        let mut m = BytesMut::zeroed(size);
        m[..8].copy_from_slice(&ns_at(Instant::now()).to_le_bytes());
        batch.push(m.freeze());
        writer.send(&mut batch).await?;
        c.sent.fetch_add(1, Ordering::Relaxed);
    }
    // Returned, not dropped: closing the stream now could race the last
    // messages on some stacks.
    Ok(writer)
}

/// Ticks the senders round-robin every 1/rate s from a std thread: its
/// sleep wakes within microseconds where tokio's timer rounds to 1 ms.
fn even_clock(senders: Vec<mpsc::UnboundedSender<()>>, rate: f64, start: Instant, end: Instant) {
    for n in 0u64.. {
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
    }
}

async fn receive(
    mut reader: Reader,
    size: usize,
    window: Window,
    c: &Counters,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = histogram();
    let mut m = vec![0u8; size];
    loop {
        tokio::select! {
            r = reader.read_exact(&mut m) => { r?; }
            _ = stop.changed() => return Ok(h),
        }
        let now = ns_at(Instant::now());
        let stamp = u64::from_le_bytes(m[..8].try_into()?);
        if (window.from..window.to).contains(&stamp) {
            h.record(now.saturating_sub(stamp).max(1))?;
        }
        c.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

async fn count_acks(
    mut reader: Reader,
    c: &Counters,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut ack = [0u8; ACK_BYTES];
    loop {
        tokio::select! {
            r = reader.read_exact(&mut ack) => { r?; }
            _ = stop.changed() => return Ok(()),
        }
        c.acks.fetch_add(1, Ordering::Relaxed);
    }
}
