//! Load generator for the Pantheon gateway, built on `pantheon-client`.
//!
//! - `pairs`: N pairs, each in its own room; one side signals the other at
//!   an aggregate paced rate; reports delivery and one-way relay latency.
//! - `throughput`: senders push as fast as the gateway relays, each pair
//!   bounded by an in-flight window; reports delivered signals per second.
//! - `idle`: N idle sessions (hello + join); reports the server's resident
//!   memory per session from `/proc/PID/status`.
//! - `setup`: session setup rate (transport open + hello → welcome per
//!   second) and setup latency.
//!
//! - `attack`: one hostile client address (floods, oversized frames,
//!   slowloris, connection floods) for benches/hostile.py to measure a calm
//!   pair beside.
//!
//! `--transport ws|wt` picks WebSocket or WebTransport for every
//! subcommand; WebTransport trusts the gateway's self-signed certificate by
//! the hash it serves at `/webtransport/cert-hash` (or `--insecure`). A
//! `wss://` URL is WebSocket over TLS (a gateway with `TLS_CERT`/`TLS_KEY`),
//! verified against the system's roots (or `--insecure`).
//!
//! Every subcommand prints a one-line summary, or with `--json` one JSON
//! object. The gateway rate-limits each connection (50/s by default): run it
//! with `RATE_LIMIT_PER_SEC` and `RATE_LIMIT_BURST` raised (benches/README.md).

// A binary's root looks for modules beside itself: keep them in loadgen/.
#[path = "loadgen/attack.rs"]
mod attack;
#[path = "loadgen/common.rs"]
mod common;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/pairs.rs"]
mod pairs;
#[path = "loadgen/setup.rs"]
mod setup;
#[path = "loadgen/throughput.rs"]
mod throughput;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "Load generator for the Pantheon gateway")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
struct Global {
    /// The gateway's WebSocket URL (`ws://HOST:PORT/ws`), or its
    /// WebTransport URL (`https://HOST:WT_PORT/wt`, implies `--transport
    /// wt`).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:3000/ws")]
    url: String,
    /// Where the receiving side of each pair connects (default: `--url`):
    /// another instance of the same system measures cross-instance relay
    /// (WebSocket only).
    #[arg(long, global = true)]
    peer_url: Option<String>,
    /// `ws` (WebSocket) or `wt` (WebTransport). With `wt` and a `ws://`
    /// `--url`, the WebTransport URL is `https://HOST:WT_PORT/wt` with the
    /// same host, and WT_PORT from `--wt-port` or else PORT.
    #[arg(long, global = true, value_enum, default_value_t = TransportArg::Ws)]
    transport: TransportArg,
    /// The gateway's WT_PORT (default: the port of `--url`).
    #[arg(long, global = true)]
    wt_port: Option<u16>,
    /// WebTransport: where to GET `/webtransport/cert-hash` (default:
    /// `http://HOST:PORT` of `--url`).
    #[arg(long, global = true)]
    http: Option<String>,
    /// Accept any server certificate: over WebTransport instead of fetching
    /// its hash, over `wss://` instead of verifying it against the system's
    /// roots.
    #[arg(long, global = true)]
    insecure: bool,
    /// WebTransport: open every connection from one shared client endpoint
    /// (one UDP socket) instead of one endpoint each. Cheaper for the
    /// loader; the gateway sees the same sessions.
    #[arg(long, global = true)]
    wt_shared_endpoint: bool,
    /// The fetched certificate hash (set at start-up).
    #[arg(skip)]
    cert_hash: Option<[u8; 32]>,
    /// The shared endpoint (set at start-up).
    #[arg(skip)]
    wt_endpoint: Option<pantheon_client::WtEndpoint>,
    /// `hello.token` (JWT or shared key) when the gateway has auth on.
    #[arg(long, global = true, env = "PANTHEON_TOKEN")]
    token: Option<String>,
    /// Print one JSON object instead of the one-line summary.
    #[arg(long, global = true)]
    json: bool,
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Connections opened at once during set-up.
    #[arg(long, global = true, default_value_t = 128)]
    connect_concurrency: usize,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    /// WebSocket.
    Ws,
    /// WebTransport.
    Wt,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Paced signals between pairs: delivery ratio and one-way latency.
    Pairs(pairs::Args),
    /// Maximum sustained relay throughput with a bounded in-flight window.
    Throughput(throughput::Args),
    /// Server memory per idle session.
    Idle(idle::Args),
    /// Session setup rate and latency.
    Setup(setup::Args),
    /// A hostile client address, beside which a calm pair is measured.
    Attack(attack::Args),
}

/// Parses seconds given as a decimal number ("0.5", "10").
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    common::init_clock();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.global.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    let report = runtime.block_on(async {
        if !matches!(cli.command, Command::Attack(_)) {
            common::resolve(&mut cli.global).await?;
        }
        match cli.command {
            Command::Pairs(args) => pairs::run(&cli.global, args).await,
            Command::Throughput(args) => throughput::run(&cli.global, args).await,
            Command::Idle(args) => idle::run(&cli.global, args).await,
            Command::Setup(args) => setup::run(&cli.global, args).await,
            Command::Attack(args) => attack::run(&cli.global, args).await,
        }
    })?;
    if cli.global.json {
        println!("{}", report.json);
    } else {
        println!("{}", report.line);
    }
    Ok(())
}
