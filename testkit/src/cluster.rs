//! A local Redis Cluster of masters only.

use crate::port::free_tcp_port;
use crate::process::tail;
use crate::redis::{Redis, RedisOptions};
use std::process::Command;
use std::time::Duration;

/// A cluster of `n` masters (no replicas) on free loopback ports, each node
/// with its cluster bus on an explicitly chosen free port (the default,
/// port + 10000, overflows for high ports).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts `n` (≥ 3) nodes, joins them with `redis-cli --cluster create
    /// --cluster-replicas 0`, and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start(n: usize) -> Self {
        assert!(
            n >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let node = Redis::start_with_args(RedisOptions::plain(), |port| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-port".into(),
                    free_tcp_port().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ]
            })
            .await;
            nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = tokio::task::spawn_blocking(move || create.output())
            .await
            .expect("redis-cli task")
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            let ok = crate::poll(Duration::from_secs(20), || async {
                let info = node.cmd(&["CLUSTER", "INFO"]).await.text()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
            assert!(
                ok.is_some(),
                "node {} never reached cluster_state:ok; log:\n{}",
                node.port(),
                tail(&node.log(), 20)
            );
        }
        cluster
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`: the value of `REDIS_CLUSTER_NODES`.
    pub fn nodes_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `REDIS_CLUSTER_NODES` for a gateway.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("REDIS_CLUSTER_NODES".to_owned(), self.nodes_list())]
    }

    /// The keys under `prefix` without an expiry, on every node.
    pub async fn keys_without_ttl(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.extend(node.keys_without_ttl(prefix).await);
        }
        out
    }

    /// Every key under `prefix`, on every node.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.extend(node.keys(prefix).await);
        }
        out
    }
}
