//! Debian's `prometheus` scraping two running gateways (one on
//! `METRICS_ADDR`, one on `PORT`) with the shipped alert rules: the series
//! the dashboard and the alerts use arrive, and `PantheonInstanceDown` fires
//! once an instance is killed. The only change to the shipped rules is a
//! shorter `for:` (2 s instead of minutes) so the test takes seconds.

mod common;
mod scale;

use common::{WAIT, within};
use pantheon_testkit::infra::{self, tool};
use pantheon_testkit::{Proc, Redis, RedisOptions, free_tcp_port, http_request, poll};
use scale::{connect, instance};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A `prometheus` server on a free loopback port.
struct Prometheus {
    addr: SocketAddr,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one scraping `targets` (job `pantheon`) every 500 ms with
    /// `rules`, and waits until it is ready.
    async fn start(targets: &[String], rules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("alerts.yml");
        std::fs::write(&rules_path, rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  evaluation_interval: 500ms\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pantheon\n    static_configs:\n      - targets: {}\n",
            rules_path.display(),
            serde_json::to_string(targets).unwrap()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        let mut cmd = Command::new(tool("prometheus"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn("prometheus", cmd, &dir.path().join("prometheus.log"))
            .expect("spawning prometheus");
        let mut p = Self {
            addr,
            proc,
            _dir: dir,
        };
        let ready = poll(Duration::from_secs(20), || async {
            match http_request(addr, "GET", "/-/ready", &[]).await {
                Ok(r) if r.status == 200 => Some(()),
                _ => None,
            }
        })
        .await;
        if ready.is_none() || p.proc.try_status().is_some() {
            panic!("prometheus did not start:\n{}", p.proc.log_text());
        }
        p
    }

    /// The result vector of an instant query.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let r = http_request(self.addr, "GET", &format!("/api/v1/query?query={q}"), &[])
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        assert_eq!(r.status, 200, "{promql}: {}", r.body);
        r.json()["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `promql` until it returns at least `n` series.
    async fn until_series(&self, promql: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.query(promql).await;
            if r.len() >= n {
                return r;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "`{promql}` did not return {n} series; last: {r:?}; prometheus log:\n{}",
                    self.proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Metric names (`pantheon_*`, `process_*`) used in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["pantheon_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let start = &rest[i..];
            let end = start
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(start.len());
            let preceded_by_word = i > 0
                && rest[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !preceded_by_word {
                names.insert(start[..end].to_owned());
            }
            rest = &start[end..];
        }
    }
    names
}

/// The shipped rules with every `for:` cut to 2 s.
fn rules_with_short_for() -> String {
    let rules = std::fs::read_to_string(infra::dir().join("prometheus/alerts.yml")).unwrap();
    rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 2s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_two_gateways_and_alerts_when_one_dies() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let metrics_addr = format!("127.0.0.1:{}", free_tcp_port());
    let gw1 = instance("gw-1", "eu", &redis.env())
        .env("METRICS_ADDR", &metrics_addr)
        .spawn()
        .await;
    let mut gw2 = instance("gw-2", "us", &redis.env()).spawn().await;

    // One member on each instance, signalling across (cross-region).
    let a = connect(&gw1).await;
    let mut b = connect(&gw2).await;
    a.join("r", None).await.unwrap();
    within(WAIT, "join", b.join("r", None)).await.unwrap();
    for i in 0..5 {
        within(WAIT, "signal", a.signal("r", b.peer(), json!(i)))
            .await
            .unwrap();
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), b.next_event()).await {
    }

    // Every name the alerts and the dashboard use is exported.
    let mut exported = String::new();
    for addr in [metrics_addr.parse().unwrap(), gw2.addr()] {
        let r = http_request(addr, "GET", "/metrics", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        exported.push_str(&r.body);
    }
    let used: BTreeSet<String> = [
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
        "grafana/dashboards/pantheon.json",
    ]
    .iter()
    .flat_map(|f| metric_names(&std::fs::read_to_string(infra::dir().join(f)).unwrap()))
    .collect();
    assert!(used.len() > 15, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(&format!("\n{name}{{"))
                || exported.contains(&format!("# HELP {name} ")),
            "{name} is used in infra/ but not exported"
        );
    }

    let targets = [metrics_addr.clone(), gw2.addr().to_string()];
    let prom = Prometheus::start(&targets, &rules_with_short_for()).await;
    prom.until_series(r#"up{job="pantheon"} == 1"#, 2).await;
    for (promql, n) in [
        (r#"pantheon_connections{transport="websocket"} == 1"#, 2),
        (r#"pantheon_rooms_by_size{size="2"} == 1"#, 2),
        ("pantheon_rooms_spanning_instances == 1", 2),
        ("pantheon_redis_up == 1", 2),
        (r#"pantheon_redis_pool_connections{state="in_use"}"#, 2),
        ("pantheon_redis_pool_max_connections > 0", 2),
        (
            r#"pantheon_cross_instance_latency_seconds_count{server="gw-2",path="cross_region"} >= 5"#,
            1,
        ),
        ("pantheon_ready == 1", 2),
        ("pantheon_draining == 0", 2),
        ("pantheon_connections_limit > 0", 2),
        ("process_cpu_seconds_total > 0", 2),
        ("process_resident_memory_bytes > 1e6", 2),
        ("process_open_fds > 0", 2),
        ("process_max_fds > 0", 2),
    ] {
        let series = prom.until_series(promql, n).await;
        for s in &series {
            let labels = &s["metric"];
            assert!(
                labels["server"].is_string() && labels["region"].is_string(),
                "{promql}: {s}"
            );
        }
    }
    // The same-region path has none (the two are in different regions).
    let latency = prom
        .query(r#"pantheon_cross_instance_latency_seconds_bucket{server="gw-2",le="1.6384"}"#)
        .await;
    assert!(
        latency
            .iter()
            .any(|s| s["value"][1].as_str().is_some_and(|v| v != "0")),
        "cross-instance signals took over 1.6 s on loopback: {latency:?}"
    );
    // Nothing fires while both are healthy.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        prom.query(r#"ALERTS{alertstate="firing"}"#)
            .await
            .is_empty()
    );

    // Kill gw-2: the instance-down alert fires for it alone.
    gw2.kill();
    let firing = prom
        .until_series(
            r#"ALERTS{alertname="PantheonInstanceDown",alertstate="firing"}"#,
            1,
        )
        .await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["metric"]["instance"], gw2.addr().to_string());
    assert_eq!(firing[0]["metric"]["severity"], "critical");
    drop(a);
    drop(gw1);
}
