//! The process's own figures, read from `/proc/self` at each scrape under
//! the names every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), so standard
//! dashboards and alerts work unchanged. Elsewhere than Linux there is no
//! `/proc` and these series are absent.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/*/stat`: `USER_HZ`, which the kernel
/// fixes at 100 in its ABI on every architecture Pantheon builds for
/// (`sysconf(_SC_CLK_TCK)` would need `unsafe`).
const USER_HZ: f64 = 100.0;

/// One reading of the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Start time, in Unix seconds.
    pub start_time_seconds: f64,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
}

/// Reads `/proc/self`; `None` where there is no such thing.
pub fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let mut r = parse(&stat, &status, &boot)?;
    r.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    r.max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    Some(r)
}

/// Parses `/proc/self/stat`, `/proc/self/status` and `/proc/stat` (see
/// proc(5)).
fn parse(stat: &str, status: &str, proc_stat: &str) -> Option<Reading> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field N is at N - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let n = line[key.len()..].split_whitespace().next()?;
        n.parse::<u64>().ok().map(|v| v * 1024)
    };
    let btime: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Reading {
        cpu_seconds: cpu_ticks as f64 / USER_HZ,
        resident_bytes: kb("VmRSS:").unwrap_or(0),
        virtual_bytes: kb("VmSize:").unwrap_or(0),
        threads,
        start_time_seconds: btime as f64 + start_ticks as f64 / USER_HZ,
        open_fds: 0,
        max_fds: 0,
    })
}

/// Encodes a fresh [`Reading`] at each scrape.
#[derive(Debug)]
pub struct Collector;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(r.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds as f64,
            ),
            ("process_threads", "Number of OS threads", r.threads as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                r.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 50 0 0 20 0 9 0 123400 987654321 4096 18446744073709551615";
        let status = "Name:\tpantheon\nVmSize:\t  964504 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 42\n";
        let r = parse(stat, status, proc_stat).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.threads, 9);
        assert_eq!(r.resident_bytes, 20480 * 1024);
        assert_eq!(r.virtual_bytes, 964504 * 1024);
        assert_eq!(r.start_time_seconds, 1_700_001_234.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let r = read().expect("/proc/self is readable on Linux");
        assert!(r.resident_bytes > 0 && r.threads >= 1 && r.open_fds >= 3);
        assert!(r.max_fds >= r.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 86_400.0,
            "{r:?}"
        );
    }
}
