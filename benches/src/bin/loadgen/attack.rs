//! `attack`: one hostile client address, for measuring what it costs the
//! others (benches/hostile.py runs a calm `pairs` beside it). Speaks raw
//! WebSocket over TCP from `--from` (e.g. 127.0.0.2, so that the gateway's
//! per-address limits apply to the attacker and not to the calm pair), as
//! fast as the gateway lets it, until `--duration` has passed.
//!
//! Kinds:
//! - `signal-flood`: pairs of sessions in a room; one of each signals the
//!   other as fast as TCP takes it, far beyond `RATE_LIMIT_PER_SEC`.
//! - `join-flood`: sessions alternating `join` and `leave` of a room of
//!   their own as fast as TCP takes them.
//! - `oversized`: sessions sending 100 kB frames (over `MAX_MESSAGE_BYTES`:
//!   `too_large`), every tenth 300 kB (over 4x: closed 1009, reconnects).
//! - `slowloris`: connections sending request headers a byte every 500 ms,
//!   connections sending nothing, and WebSocket sessions that never send
//!   `hello`; each reconnects when closed.
//! - `conn-flood`: WebSocket upgrades as fast as they are answered (most
//!   get 429 over `CONN_RATE_PER_IP`), each closed at once.

use crate::common::Report;
use crate::{Global, seconds};
use pantheon_client::raw::ws_frame as frame;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};

/// `loadgen attack`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to do.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Seconds to attack for.
    #[arg(long, value_parser = seconds, default_value = "10")]
    duration: Duration,
    /// Source address of every connection.
    #[arg(long, default_value = "127.0.0.2")]
    from: IpAddr,
    /// Connections (sessions, or slow connections of each sort).
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    SignalFlood,
    JoinFlood,
    Oversized,
    Slowloris,
    ConnFlood,
}

/// What the attacker saw.
#[derive(Debug, Default)]
struct Stats {
    /// Messages (frames) sent after `hello`.
    sent: AtomicU64,
    /// Bytes of slow requests sent.
    dribbled: AtomicU64,
    /// Connections opened (TCP).
    connects: AtomicU64,
    /// Upgrades answered 101.
    upgraded: AtomicU64,
    /// Answers other than 101, by status line; closes by code.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// `error` messages received, by code.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

struct Target {
    addr: SocketAddr,
    from: IpAddr,
    stats: Arc<Stats>,
    end: Instant,
}

impl Target {
    async fn tcp(&self) -> std::io::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(self.from, 0))?;
        let s = socket.connect(self.addr).await?;
        s.set_nodelay(true)?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// TCP + `GET /ws`; the stream once answered 101, else `None` (the
    /// status counted).
    async fn upgrade(&self) -> Option<TcpStream> {
        let mut s = self.tcp().await.ok()?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => {
                    Stats::count(&self.stats.outcomes, "closed before answering".into());
                    return None;
                }
            }
        }
        let status = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if status.contains(" 101 ") {
            self.stats.upgraded.fetch_add(1, Ordering::Relaxed);
            Some(s)
        } else {
            Stats::count(&self.stats.outcomes, status);
            None
        }
    }

    /// An upgraded session after `hello`: the write half, and the peer id.
    async fn session(&self) -> Option<(tokio::net::tcp::OwnedWriteHalf, String, Reader)> {
        let s = self.upgrade().await?;
        let (r, mut w) = s.into_split();
        w.write_all(&frame(0x1, br#"{"type":"hello","v":1}"#))
            .await
            .ok()?;
        let mut reader = Reader { r, buf: Vec::new() };
        let welcome = reader.text().await?;
        let v: serde_json::Value = serde_json::from_str(&welcome).ok()?;
        let peer = v["peer"].as_str()?.to_owned();
        Some((w, peer, reader))
    }

    fn over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Reads server frames.
struct Reader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    /// The next frame: opcode and payload; `None` once closed.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (op, len7) = (self.buf[0] & 0x0f, usize::from(self.buf[1] & 0x7f));
                let (hdr, len) = match len7 {
                    126 if self.buf.len() >= 4 => (
                        4,
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    ),
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().ok()?) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.r.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn text(&mut self) -> Option<String> {
        loop {
            let (op, p) = self.frame().await?;
            match op {
                0x1 => return String::from_utf8(p).ok(),
                0x8 => return None,
                _ => {}
            }
        }
    }

    /// Reads everything until closed, counting errors and the close code.
    async fn drain(mut self, stats: Arc<Stats>) {
        while let Some((op, p)) = self.frame().await {
            match op {
                0x1 => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p)
                        && v["type"] == "error"
                    {
                        let code = v["code"].as_str().unwrap_or("?").to_owned();
                        Stats::count(&stats.errors, code);
                    }
                }
                0x8 => {
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    Stats::count(&stats.outcomes, format!("close {code:?}"));
                    return;
                }
                _ => {}
            }
        }
        Stats::count(&stats.outcomes, "close without frame".into());
    }
}

/// Sends `frames` over and over as fast as TCP takes them on one session
/// (after `setup`, if any), until the end or the server closes; then
/// reconnects.
async fn flood(t: Arc<Target>, setup: Option<Vec<u8>>, frames: Vec<Vec<u8>>) {
    // Small frames go in batches of 16 per write, so that the loader's CPU
    // goes to sending.
    let batch: Vec<u8> = frames.iter().cycle().take(16).flatten().copied().collect();
    let small = frames.iter().all(|f| f.len() < 4096);
    while !t.over() {
        let Some((mut w, _, reader)) = t.session().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let reading = tokio::spawn(reader.drain(t.stats.clone()));
        let ready = match &setup {
            Some(f) => w.write_all(f).await.is_ok(),
            None => true,
        };
        if ready {
            let mut i = 0usize;
            while !t.over() && !reading.is_finished() {
                let (bytes, n) = if small {
                    (&batch, 16)
                } else {
                    i += 1;
                    (&frames[i % frames.len()], 1)
                };
                if w.write_all(bytes).await.is_err() {
                    break;
                }
                t.stats.sent.fetch_add(n, Ordering::Relaxed);
            }
        }
        drop(w);
        reading.abort();
    }
}

async fn signal_flood(t: Arc<Target>) {
    // The target: a session in the same room that reads everything.
    while !t.over() {
        let Some((mut w, to, reader)) = t.session().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let room = format!("flood-{to}");
        let join = frame(
            0x1,
            format!(r#"{{"type":"join","room":"{room}"}}"#).as_bytes(),
        );
        if w.write_all(&join).await.is_err() {
            continue;
        }
        let reading = tokio::spawn(reader.drain(t.stats.clone()));
        let signal = format!(
            r#"{{"type":"signal","room":"{room}","to":"{to}","data":{{"sdp":"v=0 o=- 1 2 IN IP4 127.0.0.1"}}}}"#
        );
        flood(t.clone(), Some(join), vec![frame(0x1, signal.as_bytes())]).await;
        drop(w);
        reading.abort();
    }
}

async fn join_flood(t: Arc<Target>) {
    // A room per connection: the cost measured is the flood's, not that of
    // telling a roomful of members about every join.
    static ROOMS: AtomicU64 = AtomicU64::new(0);
    let room = format!("churn-{}", ROOMS.fetch_add(1, Ordering::Relaxed));
    let join = frame(
        0x1,
        format!(r#"{{"type":"join","room":"{room}"}}"#).as_bytes(),
    );
    let leave = frame(
        0x1,
        format!(r#"{{"type":"leave","room":"{room}"}}"#).as_bytes(),
    );
    flood(t, None, vec![join, leave]).await;
}

async fn oversized(t: Arc<Target>) {
    let body = |n: usize| format!(r#"{{"type":"ping","x":"{}"}}"#, "a".repeat(n));
    let big = frame(0x1, body(100_000).as_bytes());
    let huge = frame(0x1, body(300_000).as_bytes());
    let mut frames = vec![big; 9];
    frames.push(huge);
    flood(t, None, frames).await;
}

/// One slow connection of each sort, each reconnecting when closed.
async fn slowloris(t: Arc<Target>, sort: usize) {
    while !t.over() {
        let opened = match sort {
            // Headers a byte at a time, never finished.
            0 => match t.tcp().await {
                Ok(mut s) => {
                    let head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: ";
                    for b in head.iter().chain(std::iter::repeat(&b'a')) {
                        if t.over() || s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        t.stats.dribbled.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    true
                }
                Err(_) => false,
            },
            // Nothing at all.
            1 => match t.tcp().await {
                Ok(mut s) => {
                    let mut buf = [0u8; 512];
                    let end = tokio::time::sleep_until(t.end.into());
                    tokio::pin!(end);
                    loop {
                        tokio::select! {
                            () = &mut end => break,
                            r = s.read(&mut buf) => match r {
                                Ok(0) | Err(_) => break,
                                Ok(n) => Stats::count(
                                    &t.stats.outcomes,
                                    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned(),
                                ),
                            }
                        }
                    }
                    true
                }
                Err(_) => false,
            },
            // A session that never says hello.
            _ => match t.upgrade().await {
                Some(s) => {
                    let (r, _w) = s.into_split();
                    let reader = Reader { r, buf: Vec::new() };
                    let _ =
                        tokio::time::timeout_at(t.end.into(), reader.drain(t.stats.clone())).await;
                    true
                }
                None => false,
            },
        };
        if !opened {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn conn_flood(t: Arc<Target>) {
    while !t.over() {
        if let Some(s) = t.upgrade().await {
            drop(s);
        }
    }
}

/// Runs `attack`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<Report> {
    let (host, port) = crate::common::host_port(&global.url)
        .ok_or_else(|| anyhow::anyhow!("--url {}: expected ws://HOST:PORT/ws", global.url))?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?;
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let t = Arc::new(Target {
        addr,
        from: args.from,
        stats: stats.clone(),
        end: started + args.duration,
    });
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let t = t.clone();
        tasks.push(match args.kind {
            Kind::SignalFlood => tokio::spawn(signal_flood(t)),
            Kind::JoinFlood => tokio::spawn(join_flood(t)),
            Kind::Oversized => tokio::spawn(oversized(t)),
            Kind::Slowloris => tokio::spawn(async move {
                let sorts: Vec<_> = (0..3)
                    .map(|s| tokio::spawn(slowloris(t.clone(), s)))
                    .collect();
                for s in sorts {
                    let _ = s.await;
                }
            }),
            Kind::ConnFlood => tokio::spawn(conn_flood(t)),
        });
    }
    for task in tasks {
        // A task still blocked in a write past the end is left behind.
        let _ = tokio::time::timeout_at((t.end + Duration::from_secs(2)).into(), task).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let lock =
        |m: &Mutex<BTreeMap<String, u64>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (outcomes, errors) = (lock(&stats.outcomes), lock(&stats.errors));
    let sent = stats.sent.load(Ordering::Relaxed);
    let connects = stats.connects.load(Ordering::Relaxed);
    let upgraded = stats.upgraded.load(Ordering::Relaxed);
    let line = format!(
        "attack {:?} from {} for {secs:.1} s: sent {sent} ({:.0}/s), connects {connects}, upgraded {upgraded}, \
         dribbled {} bytes, outcomes {outcomes:?}, errors {errors:?}",
        args.kind,
        args.from,
        sent as f64 / secs,
        stats.dribbled.load(Ordering::Relaxed),
    );
    let json = serde_json::json!({
        "mode": "attack",
        "kind": format!("{:?}", args.kind),
        "seconds": secs,
        "sent": sent,
        "sent_per_sec": sent as f64 / secs,
        "connects": connects,
        "upgraded": upgraded,
        "dribbled": stats.dribbled.load(Ordering::Relaxed),
        "outcomes": outcomes,
        "errors": errors,
    });
    Ok(Report { line, json })
}
