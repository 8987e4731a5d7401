//! `idle`: opens N sessions that each say hello and join a room, and reads
//! the server's resident memory before and after from `/proc/PID/status`.

use crate::common::{Report, close_all, options, transport_name};
use crate::{Global, seconds};
use anyhow::Context as _;
use futures_util::{StreamExt, stream};
use pantheon_client::{Client, Options};
use std::time::{Duration, Instant};

/// `loadgen idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Sessions to open.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// The gateway's process id, whose VmRSS is read.
    #[arg(long)]
    server_pid: u32,
    /// Sessions opened at once.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Sessions per room (1: a room each).
    #[arg(long, default_value_t = 1)]
    room_size: usize,
    /// Seconds to wait after the last session opened before reading VmRSS.
    #[arg(long, value_parser = seconds, default_value = "2")]
    settle: Duration,
    /// Seconds to keep the sessions open after measuring.
    #[arg(long, value_parser = seconds, default_value = "3")]
    hold: Duration,
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs `idle`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    anyhow::ensure!(
        nofile > args.sessions as u64 + 64,
        "RLIMIT_NOFILE is {nofile} (the hard limit): too low for {} sessions; raise it (ulimit -Hn)",
        args.sessions
    );
    let before = rss_kib(args.server_pid)?;
    // Idle sessions need little buffering on this side.
    let opts = Options {
        read_buffer: 4096,
        event_buffer: 16,
        send_buffer: 16,
        ..options(global)
    };
    let prefix = format!("idle.{}", std::process::id());
    let room_size = args.room_size.max(1);
    let started = Instant::now();
    let results: Vec<Result<Client, pantheon_client::Error>> = stream::iter(0..args.sessions)
        .map(|i| {
            let opts = opts.clone();
            let room = format!("{prefix}.{}", i / room_size);
            async move {
                let client = Client::connect_with(&global.url, opts).await?;
                client.join(room.as_str(), None).await?;
                Ok(client)
            }
        })
        .buffer_unordered(args.batch.max(1))
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    let mut clients = Vec::with_capacity(results.len());
    let mut failed = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    tokio::time::sleep(args.settle).await;
    let after = rss_kib(args.server_pid)?;
    let opened = clients.len();
    let per_session = if opened == 0 {
        0.0
    } else {
        after.saturating_sub(before) as f64 / opened as f64
    };
    tokio::time::sleep(args.hold).await;
    let still_open = clients.iter().filter(|c| c.close_info().is_none()).count();
    let seq_errors = close_all(clients, args.batch).await;

    let line = format!(
        "idle [{}]: {opened}/{} sessions open in {open_secs:.1}s, server VmRSS {before} -> {after} KiB, \
         {per_session:.1} KiB per session, {still_open} still open after hold, {failed} failed{}, \
         seq errors {seq_errors}",
        transport_name(global),
        args.sessions,
        first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
    );
    let json = serde_json::json!({
        "mode": "idle",
        "transport": transport_name(global),
        "sessions": args.sessions,
        "opened": opened,
        "failed": failed,
        "first_error": first_error,
        "open_s": open_secs,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_per_session_kib": per_session,
        "still_open_after_hold": still_open,
        "room_size": room_size,
        "nofile_limit": nofile,
        "seq_errors": seq_errors,
    });
    Ok(Report { line, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tpantheon\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
