//! A loopback TCP proxy that delays each direction by a fixed time,
//! standing for a link to a remote region (this kernel has no netem).
//!
//! Each direction is a queue of chunks stamped with the time they were read:
//! the reader never waits, the writer sends each chunk once its time plus
//! the delay has come. So the delay is added once per chunk, in order,
//! whatever the chunk sizes, and throughput is not limited by it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The proxy; it stops (closing every connection) on drop.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    target: SocketAddr,
    delay: Duration,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    bytes: AtomicU64,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `target`, `delay` late in each direction. It runs on a thread of its
    /// own, so it keeps going whatever the test's runtime does.
    pub async fn start(target: SocketAddr, delay: Duration) -> Self {
        let std_listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy addr");
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = oneshot::channel();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!("delay-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("proxy listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, target, delay, thread_stats) => {}
                    }
                });
                // Dropping the runtime drops every connection task.
            })
            .expect("spawning the proxy thread");
        Self {
            addr,
            target,
            delay,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port of [`DelayProxy::addr`].
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The delay in each direction.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Duration,
    stats: Arc<Stats>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            // The connection to the target is made at once, as a SYN would
            // be; only data is delayed.
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(
                direction(cr, sw, delay, Arc::clone(&stats)),
                direction(sr, cw, delay, stats),
            );
        });
    }
}

/// A chunk, or the end of the stream (`None`), with the time it was read.
type Stamped = (Instant, Option<Vec<u8>>);

async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    stats: Arc<Stats>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Stamped>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now(), None));
                    return;
                }
                Ok(n) => {
                    if tx.send((Instant::now(), Some(buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(read_at + delay).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
