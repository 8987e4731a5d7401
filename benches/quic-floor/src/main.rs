//! `quic-floor`: the cheapest possible signal relay on each transport stack,
//! with no Pantheon code, to tell what latency floor each stack sets.
//! See README.md.

mod client;
mod quiche_server;
mod server;
mod stack;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(about = "Relay latency floor of TCP, TLS, quinn and s2n-quic")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Accept pairs of connections; ack each sender message and relay it.
    Server(ServerArgs),
    /// Open `--pairs` sender/receiver pairs, send at `--rate`, print one JSON line.
    Client(ClientArgs),
}

/// Which transport stack carries the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Stack {
    /// tokio TcpStream with TCP_NODELAY (the `ws://` floor).
    Tcp,
    /// tokio-rustls (ring) over TCP (the `wss://` floor).
    Tls,
    /// quinn 0.11, one bidirectional stream per connection.
    Quinn,
    /// s2n-quic, one bidirectional stream per connection.
    S2n,
    /// Cloudflare quiche through tokio-quiche (server only; the client
    /// side uses quinn).
    Quiche,
}

impl Stack {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stack::Tcp => "tcp",
            Stack::Tls => "tls",
            Stack::Quinn => "quinn",
            Stack::S2n => "s2n",
            Stack::Quiche => "quiche",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pacing {
    /// Each sender sleeps on tokio's (1 ms) timer; pairs staggered.
    Tick,
    /// One std thread ticks the senders round-robin every 1/rate s.
    Even,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    #[arg(long, value_enum)]
    stack: Stack,
    #[arg(long, default_value_t = 4433)]
    port: u16,
    /// Message size in bytes (must match the client's).
    #[arg(long, default_value_t = 200)]
    size: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    #[arg(long, value_enum)]
    stack: Stack,
    /// Load a QUIC server with another stack's client (e.g. `quinn`
    /// against an s2n server); default: the server's own stack (quinn for
    /// quiche).
    #[arg(long, value_enum)]
    client_stack: Option<Stack>,
    #[arg(long, default_value = "127.0.0.1:4433")]
    addr: std::net::SocketAddr,
    #[arg(long, default_value_t = 100)]
    pairs: u32,
    /// Messages per second, all pairs together.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Unmeasured sending before the window, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, value_enum, default_value = "tick")]
    pacing: Pacing,
    /// Message size in bytes (at least 8: the send stamp).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// How long to wait for the last messages and acks after sending ends.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
}

impl ClientArgs {
    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Server(args) => server::run(args).await,
        Mode::Client(args) => {
            anyhow::ensure!(args.size >= 8, "--size must be at least 8");
            anyhow::ensure!(
                args.pairs > 0 && args.rate > 0.0,
                "--pairs and --rate must be > 0"
            );
            let report = client::run(&args).await?;
            println!("{report}");
            Ok(())
        }
    }
}
