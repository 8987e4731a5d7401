//! What the subcommands share: the clock that stamps signals, connecting
//! pairs, the receiving loop, counters, closing, reporting.

use crate::{Global, TransportArg};
use anyhow::Context as _;
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use pantheon_client::protocol::{ErrorCode, PeerId, RoomName, ServerMessage};
use pantheon_client::{Client, Event, Handle, Options, Transport};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

static CLOCK: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the process-local clock.
pub(crate) fn init_clock() {
    LazyLock::force(&CLOCK);
}

/// Nanoseconds since the clock started: what signals carry as send time.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(CLOCK.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds of the clock at `at`.
pub(crate) fn ns_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*CLOCK).as_nanos()).unwrap_or(u64::MAX)
}

/// What a subcommand prints.
#[derive(Debug)]
pub(crate) struct Report {
    /// The one-line human summary.
    pub(crate) line: String,
    /// The figures for scripts.
    pub(crate) json: serde_json::Value,
}

/// Counters shared by every task of a run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Signals sent inside the measured window.
    pub(crate) sent: AtomicU64,
    /// Signals sent, warm-up included.
    pub(crate) sent_all: AtomicU64,
    /// Signals delivered that were sent inside the measured window.
    pub(crate) delivered: AtomicU64,
    /// Signals delivered, warm-up included.
    pub(crate) delivered_all: AtomicU64,
    /// `error` events (sent without id, so errors come as events).
    pub(crate) errors: AtomicU64,
    /// Of those, `rate_limited`.
    pub(crate) rate_limited: AtomicU64,
    /// Signals that arrived out of order or after a skip.
    pub(crate) reordered: AtomicU64,
    /// Connections that ended before the run did, by close code.
    pub(crate) closed_early: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn closed(&self, code: Option<u16>) {
        let key = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        let mut map = self.closed_early.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_default() += 1;
    }

    fn error(&self, code: ErrorCode) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if code == ErrorCode::RateLimited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Early closes as JSON and as text.
    pub(crate) fn closed_summary(&self) -> (serde_json::Value, String) {
        let map = self.closed_early.lock().unwrap_or_else(|e| e.into_inner());
        let text = map
            .iter()
            .map(|(code, n)| format!("{code}x{n}"))
            .collect::<Vec<_>>()
            .join(",");
        (serde_json::json!(*map), text)
    }
}

/// The measured window, in clock nanoseconds: signals stamped inside it
/// count, those of the warm-up and after the end do not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from_ns: u64,
    pub(crate) to_ns: u64,
}

impl Window {
    pub(crate) fn contains(&self, t: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&t)
    }
}

/// One pair: the sender signals the receiver in their own room.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) sender: Client,
    pub(crate) receiver: Client,
    pub(crate) room: RoomName,
    pub(crate) to: PeerId,
}

/// Settles which URL the run connects to, and for WebTransport fetches
/// the certificate hash (unless `--insecure`).
pub(crate) async fn resolve(global: &mut Global) -> anyhow::Result<()> {
    let given = Transport::of_url(&global.url)?;
    let (host, port) = host_port(&global.url)
        .with_context(|| format!("--url {}: expected SCHEME://HOST:PORT/...", global.url))?;
    match (given, global.transport) {
        (Transport::WebSocket, TransportArg::Ws) | (Transport::WebTransport, TransportArg::Wt) => {}
        (Transport::WebSocket, TransportArg::Wt) => {
            let wt_port = global.wt_port.unwrap_or(port);
            global.url = format!("https://{host}:{wt_port}/wt");
        }
        (Transport::WebTransport, TransportArg::Ws) => {
            // An https:// URL says WebTransport unless told otherwise.
            global.transport = TransportArg::Wt;
        }
    }
    if global.transport == TransportArg::Wt && !global.insecure {
        let base = global
            .http
            .clone()
            .unwrap_or_else(|| format!("http://{host}:{port}"));
        let hash = pantheon_client::fetch_cert_hash(&base)
            .await
            .with_context(|| format!("fetching the certificate hash from {base}/webtransport/cert-hash (or pass --insecure)"))?;
        global.cert_hash = Some(hash);
    }
    if global.transport == TransportArg::Wt && global.wt_shared_endpoint {
        global.wt_endpoint = Some(pantheon_client::WtEndpoint::new(&options(global))?);
    }
    Ok(())
}

/// `HOST` (brackets kept for IPv6) and `PORT` of `scheme://HOST:PORT/...`.
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let authority = url.split_once("://")?.1.split(['/', '?']).next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The transport of a run, for reports.
pub(crate) fn transport_name(global: &Global) -> &'static str {
    match global.transport {
        TransportArg::Ws if global.url.starts_with("wss://") => "wss",
        TransportArg::Ws => "ws",
        TransportArg::Wt => "wt",
    }
}

/// Options for the clients of a run.
pub(crate) fn options(global: &Global) -> Options {
    Options {
        token: global.token.clone(),
        connect_timeout: Duration::from_secs(30),
        cert_hashes: global.cert_hash.into_iter().collect(),
        insecure_skip_verify: global.insecure,
        wt_endpoint: global.wt_endpoint.clone(),
        ..Options::default()
    }
}

/// Connects `n` pairs, each joined to its own room.
pub(crate) async fn connect_pairs(global: &Global, n: usize) -> anyhow::Result<Vec<Pair>> {
    let prefix = format!("lg.{}", std::process::id());
    let opts = options(global);
    let pairs: Vec<anyhow::Result<Pair>> = stream::iter(0..n)
        .map(|i| {
            let room = format!("{prefix}.{i}");
            let opts = opts.clone();
            async move {
                let room = RoomName::new(&room)?;
                let sender = Client::connect_with(&global.url, opts.clone()).await?;
                let receiver_url = global.peer_url.as_deref().unwrap_or(&global.url);
                let receiver = Client::connect_with(receiver_url, opts).await?;
                sender.join(&room, None).await?;
                receiver.join(&room, None).await?;
                let to = receiver.peer().clone();
                Ok(Pair {
                    sender,
                    receiver,
                    room,
                    to,
                })
            }
        })
        .buffer_unordered(global.connect_concurrency.max(1) / 2 + 1)
        .collect()
        .await;
    pairs
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("connecting {n} pairs to {}", global.url))
}

/// A signal's `data`: `[send time ns, index]`, plus padding when asked.
pub(crate) fn payload(t: u64, k: u64, pad: &str) -> Box<RawValue> {
    let text = if pad.is_empty() {
        format!("[{t},{k}]")
    } else {
        format!("[{t},{k},\"{pad}\"]")
    };
    RawValue::from_string(text).expect("numbers and a plain string are JSON")
}

/// Reads `[t,k,...]` back.
pub(crate) fn parse_payload(data: &str) -> Option<(u64, u64)> {
    let mut parts = data.strip_prefix('[')?.splitn(3, [',', ']']);
    let t = parts.next()?.trim().parse().ok()?;
    let k = parts.next()?.trim().parse().ok()?;
    Some((t, k))
}

/// A latency histogram in nanoseconds, 1 ns to 1 h at 3 significant
/// figures; longer values are recorded as 1 h.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

/// What a receiver hands back at the end.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) client: Client,
    pub(crate) latency_ns: Histogram<u64>,
}

/// Receives signals until `stop`: records latency of measured ones, counts
/// deliveries, returns window permits to the sender.
pub(crate) async fn receive(
    mut client: Client,
    window: Window,
    counters: Arc<Counters>,
    credit: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut latency_ns = histogram();
    let mut expected_k = 0;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            event = client.next_event() => event,
        };
        match event {
            Some(Event::Message {
                message: ServerMessage::Signal { data, .. },
                ..
            }) => {
                let now = now_ns();
                if let Some(c) = &credit {
                    c.add_permits(1);
                }
                counters.delivered_all.fetch_add(1, Ordering::Relaxed);
                let Some((t, k)) = parse_payload(data.as_str()) else {
                    continue;
                };
                if window.contains(t) {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    latency_ns.saturating_record(now.saturating_sub(t));
                }
                if k != expected_k {
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                }
                expected_k = k + 1;
            }
            Some(Event::Message {
                message: ServerMessage::Error { code, .. },
                ..
            }) => counters.error(code),
            Some(Event::Message { .. }) => {}
            Some(Event::Closed { code, .. }) => {
                counters.closed(code);
                break;
            }
            None => break,
        }
    }
    Received { client, latency_ns }
}

/// Reads a sender's events until `stop`, counting errors (signals sent
/// without `id` report their errors as events).
pub(crate) async fn drain(
    mut client: Client,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Client {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            event = client.next_event() => event,
        };
        match event {
            Some(Event::Message {
                message: ServerMessage::Error { code, .. },
                ..
            }) => counters.error(code),
            Some(Event::Message { .. }) => {}
            Some(Event::Closed { code, .. }) => {
                counters.closed(code);
                break;
            }
            None => break,
        }
    }
    client
}

/// Waits until every measured signal sent has been delivered, or `limit`.
pub(crate) async fn settle(counters: &Counters, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline
        && counters.delivered_all.load(Ordering::Relaxed)
            < counters.sent_all.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes every client normally (1000), a few at a time; returns the sum
/// of their `seq` errors.
pub(crate) async fn close_all(clients: Vec<Client>, concurrency: usize) -> u64 {
    stream::iter(clients)
        .map(|mut c| async move {
            let errors = c.seq_errors() + c.protocol_errors();
            let _ = c.close().await;
            errors
        })
        .buffer_unordered(concurrency.max(1))
        .fold(0, |sum, e| async move { sum + e })
        .await
}

/// p50/p99/p99.9/max in microseconds.
pub(crate) fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    serde_json::json!({
        "p50": us(h.value_at_quantile(0.5)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

/// The same as text.
pub(crate) fn latency_line(h: &Histogram<u64>) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    format!(
        "p50 {:.1}us p99 {:.1}us p999 {:.1}us max {:.1}us",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    )
}

/// A sender's handle and target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) handle: Handle,
    pub(crate) room: RoomName,
    pub(crate) to: PeerId,
}

impl Target {
    /// Sends signal number `k`, stamped with its send time and padded with
    /// `pad`, and counts it (in `sent` too when stamped inside `window`).
    /// False when the connection is gone.
    pub(crate) async fn send_stamped(
        &self,
        k: u64,
        pad: &str,
        window: Window,
        counters: &Counters,
    ) -> bool {
        let t = now_ns();
        let data = payload(t, k, pad);
        if self
            .handle
            .signal_no_ack(&self.room, &self.to, data)
            .await
            .is_err()
        {
            return false;
        }
        counters.sent_all.fetch_add(1, Ordering::Relaxed);
        if window.contains(t) {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        assert_eq!(payload(12, 3, "").get(), "[12,3]");
        assert_eq!(parse_payload(payload(12, 3, "").get()), Some((12, 3)));
        assert_eq!(parse_payload(payload(7, 0, "xx").get()), Some((7, 0)));
        assert_eq!(parse_payload("{}"), None);
    }

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:3000/ws"),
            Some(("127.0.0.1".into(), 3000))
        );
        assert_eq!(
            host_port("https://[::1]:4433/wt?v=1"),
            Some(("[::1]".into(), 4433))
        );
        assert_eq!(host_port("ws://localhost/ws"), None);
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            from_ns: 10,
            to_ns: 20,
        };
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
    }
}
