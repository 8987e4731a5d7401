//! `setup`: session setup rate — opening the transport (TCP + WebSocket
//! upgrade, or QUIC + TLS 1.3 + HTTP/3 SETTINGS + extended CONNECT + the
//! control stream) and `hello` → `welcome` — and its latency.
//!
//! `--concurrency` setups run at once, `--sessions` in all; each session
//! stays open until the end (so the server holds them all, as it would
//! after a reconnect storm), then every one is closed outside the measured
//! time. With `--server-pid`, the server's CPU time per setup is read from
//! `/proc/PID/stat`.

use crate::Global;
use crate::common::transport_name;
use crate::common::{Report, close_all, histogram, latency_json, latency_line, options};
use anyhow::Context as _;
use futures_util::{StreamExt, stream};
use pantheon_client::{Client, Options};
use std::time::Instant;

/// `loadgen setup`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Sessions to set up.
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Setups in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sessions set up first and not measured (connection caches,
    /// allocator, JIT-free but still cold code paths).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// The gateway's process id: reports its CPU time per setup.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// utime + stime of a process in clock ticks, from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected {path}: {stat}"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3.. follow: utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`): 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// Sets up `n` sessions, `concurrency` at a time; the clients, the setup
/// latencies in ns, and the failures.
async fn set_up(
    url: &str,
    opts: &Options,
    n: usize,
    concurrency: usize,
) -> (Vec<Client>, Vec<u64>, Vec<pantheon_client::Error>) {
    let results: Vec<(Result<Client, pantheon_client::Error>, u64)> = stream::iter(0..n)
        .map(|_| {
            let opts = opts.clone();
            async move {
                let started = Instant::now();
                let client = Client::connect_with(url, opts).await;
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                (client, took)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let (mut clients, mut latencies, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (result, took) in results {
        match result {
            Ok(c) => {
                clients.push(c);
                latencies.push(took);
            }
            Err(e) => errors.push(e),
        }
    }
    (clients, latencies, errors)
}

/// Runs `setup`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    let total = args.sessions + args.warmup;
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    anyhow::ensure!(
        nofile > total as u64 + 64,
        "RLIMIT_NOFILE is {nofile} (the hard limit): too low for {total} sessions"
    );
    // Sessions that only say hello need little buffering on this side.
    let opts = Options {
        read_buffer: 4096,
        event_buffer: 16,
        send_buffer: 16,
        ..options(global)
    };
    let (warm, _, warm_errors) = set_up(&global.url, &opts, args.warmup, args.concurrency).await;
    if let Some(e) = warm_errors.first() {
        anyhow::bail!("warm-up setup failed: {e}");
    }

    let cpu_before = args.server_pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let (clients, latencies, errors) =
        set_up(&global.url, &opts, args.sessions, args.concurrency).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.map(cpu_ticks).transpose()?;

    let opened = clients.len();
    let rate = opened as f64 / secs;
    let mut latency = histogram();
    for ns in latencies {
        latency.saturating_record(ns);
    }
    let server_cpu_us = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some((a.saturating_sub(b)) as f64 / TICKS_PER_SEC * 1e6 / opened as f64)
        }
        _ => None,
    };
    let still_open = clients.iter().filter(|c| c.close_info().is_none()).count();
    let first_error = errors.first().map(ToString::to_string);
    let mut all = warm;
    all.extend(clients);
    let seq_errors = close_all(all, global.connect_concurrency).await;

    let line = format!(
        "setup [{}]: {opened}/{} sessions in {secs:.2}s = {rate:.0} setups/s (concurrency {}), \
         latency {}, server CPU {}, {} failed{}, {still_open} open at the end, seq errors {seq_errors}",
        transport_name(global),
        args.sessions,
        args.concurrency,
        latency_line(&latency),
        server_cpu_us.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.0}us/setup")),
        errors.len(),
        first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
    );
    let json = serde_json::json!({
        "mode": "setup",
        "transport": transport_name(global),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "opened": opened,
        "failed": errors.len(),
        "first_error": first_error,
        "elapsed_s": secs,
        "setups_per_sec": rate,
        "latency_us": latency_json(&latency),
        "server_cpu_us_per_setup": server_cpu_us,
        "still_open": still_open,
        "seq_errors": seq_errors,
    });
    Ok(Report { line, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks() {
        let stat = "1234 (pan theon) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        cpu_ticks(std::process::id()).unwrap();
    }
}
