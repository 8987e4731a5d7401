//! A Redis Sentinel topology: one primary, its replicas, and sentinels
//! watching them, each a real process on a free loopback port.

use crate::port::free_tcp_port;
use crate::process::{Proc, tail};
use crate::redis::{Redis, RedisOptions, RedisTls};
use crate::resp::{Conn, Value};
use crate::tls::Pki;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The name the sentinels monitor the primary under.
pub const SENTINEL_MASTER: &str = "pantheon";

/// How long the topology may take to form (replicas in sync, sentinels
/// aware of each other and of the replicas).
const FORM_LIMIT: Duration = Duration::from_secs(30);

/// How quickly the sentinels act.
#[derive(Debug, Clone, Copy)]
pub struct SentinelTiming {
    /// `down-after-milliseconds`: silence before a sentinel thinks the
    /// primary is down.
    pub down_after: Duration,
    /// `failover-timeout`.
    pub failover_timeout: Duration,
}

impl Default for SentinelTiming {
    fn default() -> Self {
        Self {
            down_after: Duration::from_millis(1000),
            failover_timeout: Duration::from_millis(3000),
        }
    }
}

/// One `redis-server --sentinel` process (Debian's `redis-sentinel` is the
/// same binary under another name).
#[derive(Debug)]
struct SentinelProc {
    port: u16,
    proc: Proc,
}

/// A primary, `replicas` replicas and `sentinels` sentinels (quorum: a
/// majority). Every process is SIGKILLed on drop.
#[derive(Debug)]
pub struct Sentinels {
    /// Data nodes; index 0 was the first primary.
    nodes: Vec<Redis>,
    sentinels: Vec<SentinelProc>,
    password: Option<String>,
    /// The sentinels' own `requirepass`.
    sentinel_password: Option<String>,
    /// One CA for every node and sentinel, when TLS is on.
    pki: Option<Arc<Pki>>,
    _dir: TempDir,
}

/// How the sentinels are reached.
#[derive(Debug, Clone)]
struct Access {
    pki: Option<Arc<Pki>>,
    password: Option<String>,
}

impl Access {
    /// A connection to a sentinel, over TLS when it is on, authenticated
    /// when the sentinels have a password.
    async fn conn(&self, addr: SocketAddr) -> Result<Conn, crate::resp::Error> {
        let mut c = match &self.pki {
            Some(pki) => Conn::connect_tls(addr, pki.client_config(false)).await?,
            None => Conn::connect(addr).await?,
        };
        if let Some(pw) = &self.password {
            c.cmd(&["AUTH", pw]).await?;
        }
        Ok(c)
    }
}

impl Sentinels {
    /// Starts the topology and waits until it can fail over: replicas in
    /// sync, every sentinel knowing the others and every replica.
    pub async fn start(
        opts: RedisOptions,
        replicas: usize,
        sentinels: usize,
        timing: SentinelTiming,
    ) -> Self {
        Self::start_with_sentinel_password(opts, replicas, sentinels, timing, None).await
    }

    /// [`Sentinels::start`], the sentinels requiring `sentinel_password`
    /// (`requirepass` in sentinel.conf; they use it with each other too).
    /// With `opts.tls` (server-only TLS) every node and sentinel speaks
    /// only TLS, with certificates from one CA: replication
    /// (`tls-replication yes`), the sentinels' links to the nodes and to
    /// each other, and clients.
    pub async fn start_with_sentinel_password(
        mut opts: RedisOptions,
        replicas: usize,
        sentinels: usize,
        timing: SentinelTiming,
        sentinel_password: Option<&str>,
    ) -> Self {
        assert!(
            opts.tls != Some(RedisTls::Mutual),
            "the Sentinel helper runs server-only TLS"
        );
        let pki = opts.tls.map(|_| {
            opts.pki
                .clone()
                .unwrap_or_else(|| Arc::new(Pki::generate()))
        });
        opts.pki = pki.clone();
        let password = opts.password.clone();
        let tls = pki.is_some();
        let common = |pw: &Option<String>| -> Vec<String> {
            let mut a: Vec<String> = pw
                .iter()
                .flat_map(|p| ["--masterauth".to_owned(), p.clone()])
                .collect();
            if tls {
                a.extend(["--tls-replication".to_owned(), "yes".to_owned()]);
            }
            a
        };
        let primary = Redis::start_with_args(opts.clone(), |_| common(&password)).await;
        let primary_port = primary.port();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let mut args = vec![
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                primary_port.to_string(),
            ];
            args.extend(common(&password));
            nodes.push(Redis::start_with_args(opts.clone(), |_| args.clone()).await);
        }
        let dir = tempfile::Builder::new()
            .prefix("pantheon-sentinel-")
            .tempdir()
            .expect("temp dir");
        let quorum = sentinels / 2 + 1;
        let access = Access {
            pki: pki.clone(),
            password: sentinel_password.map(str::to_owned),
        };
        let mut procs = Vec::with_capacity(sentinels);
        for i in 0..sentinels {
            let conf = SentinelConf {
                primary_port,
                quorum,
                timing,
                password: &password,
                access: &access,
            };
            procs.push(spawn_sentinel(&dir, i, &conf).await);
        }
        let set = Self {
            nodes,
            sentinels: procs,
            password,
            sentinel_password: access.password,
            pki,
            _dir: dir,
        };
        set.wait_formed(replicas, sentinels).await;
        set
    }

    fn access(&self) -> Access {
        Access {
            pki: self.pki.clone(),
            password: self.sentinel_password.clone(),
        }
    }

    /// A connection to sentinel `s` (TLS and password as configured).
    async fn sentinel_conn(&self, s: &SentinelProc) -> Result<Conn, crate::resp::Error> {
        self.access().conn(s.addr()).await
    }

    /// The CA every node and sentinel's certificate is signed by, when
    /// TLS is on.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_deref()
    }

    async fn wait_formed(&self, replicas: usize, sentinels: usize) {
        let deadline = Instant::now() + FORM_LIMIT;
        for node in &self.nodes[1..] {
            loop {
                let info = node.cmd(&["INFO", "replication"]).await.text();
                if info.is_some_and(|i| i.contains("master_link_status:up")) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {} never synced",
                    node.port()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for s in &self.sentinels {
            loop {
                let mut c = self.sentinel_conn(s).await.expect("sentinel");
                let others = c
                    .cmd(&["SENTINEL", "SENTINELS", SENTINEL_MASTER])
                    .await
                    .map(|v| v.items().len())
                    .unwrap_or(0);
                let known = c
                    .cmd(&["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                    .await
                    .map(|v| v.items().len())
                    .unwrap_or(0);
                if others + 1 >= sentinels && known >= replicas {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "sentinel {} knows {others} other sentinels and {known} replicas; its log:\n{}",
                        s.port,
                        tail(&s.proc.log_text(), 30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The variables that point a gateway at the sentinels:
    /// `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`, and as configured
    /// `REDIS_PASSWORD`, `REDIS_SENTINEL_PASSWORD`, `REDIS_TLS` and
    /// `REDIS_CA_CERT`.
    pub fn env(&self) -> Vec<(String, String)> {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let mut env = vec![
            ("REDIS_SENTINELS".to_owned(), list.join(",")),
            (
                "REDIS_SENTINEL_MASTER".to_owned(),
                SENTINEL_MASTER.to_owned(),
            ),
        ];
        if let Some(pw) = &self.password {
            env.push(("REDIS_PASSWORD".into(), pw.clone()));
        }
        if let Some(pw) = &self.sentinel_password {
            env.push(("REDIS_SENTINEL_PASSWORD".into(), pw.clone()));
        }
        if let Some(pki) = &self.pki {
            env.push(("REDIS_TLS".into(), "true".into()));
            env.push(("REDIS_CA_CERT".into(), pki.ca_cert().display().to_string()));
        }
        env
    }

    /// The port of the primary as the first sentinel that answers names it.
    pub async fn primary_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let Ok(mut c) = self.sentinel_conn(s).await else {
                continue;
            };
            if let Ok(v) = c
                .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                .await
                && let Some(port) = v.items().get(1).and_then(Value::text)
            {
                return port.parse().ok();
            }
        }
        None
    }

    /// The data node the sentinels call the primary.
    pub async fn primary(&mut self) -> &mut Redis {
        let port = self
            .primary_port()
            .await
            .expect("no sentinel names a primary");
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("the primary is one of the nodes")
    }

    /// Every data node (index 0 was the first primary).
    pub fn nodes(&mut self) -> &mut [Redis] {
        &mut self.nodes
    }

    /// SIGKILLs the current primary; answers its port.
    pub async fn kill_primary(&mut self) -> u16 {
        let primary = self.primary().await;
        primary.kill();
        primary.port()
    }

    /// Asks a sentinel for a failover with the primary left running (it
    /// becomes a replica: the connections clients hold to it stay open,
    /// and writes on them fail with `READONLY`).
    pub async fn manual_failover(&self) {
        let mut c = self
            .sentinel_conn(&self.sentinels[0])
            .await
            .expect("sentinel");
        c.must(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]).await;
    }

    /// Moves the primary role to a replica behind the clients' backs: the
    /// replica is promoted and the old primary made its replica with
    /// `REPLICAOF` sent to the nodes directly, and every sentinel is
    /// re-pointed at the new primary. Unlike a Sentinel failover, nobody
    /// kills the clients' connections to the old primary: they stay open,
    /// to a replica now, and writes on them fail with `READONLY`.
    pub async fn demote_behind_clients_backs(&mut self) -> u16 {
        let old = self.primary_port().await.expect("a primary");
        let new = self
            .nodes
            .iter()
            .map(Redis::port)
            .find(|p| *p != old)
            .expect("a replica");
        let node = |port: u16| self.nodes.iter().find(|n| n.port() == port).unwrap();
        node(new).cmd(&["REPLICAOF", "NO", "ONE"]).await;
        node(old)
            .cmd(&["REPLICAOF", "127.0.0.1", &new.to_string()])
            .await;
        let quorum = (self.sentinels.len() / 2 + 1).to_string();
        for s in &self.sentinels {
            let mut c = self.sentinel_conn(s).await.expect("sentinel");
            let m = SENTINEL_MASTER;
            let down = c
                .cmd(&["SENTINEL", "MASTER", m])
                .await
                .ok()
                .and_then(|v| {
                    let items = v.items();
                    items
                        .iter()
                        .position(|x| x.text().as_deref() == Some("down-after-milliseconds"))
                        .and_then(|i| items.get(i + 1).and_then(Value::text))
                })
                .unwrap_or_else(|| "1000".into());
            c.must(&["SENTINEL", "REMOVE", m]).await;
            c.must(&[
                "SENTINEL",
                "MONITOR",
                m,
                "127.0.0.1",
                &new.to_string(),
                &quorum,
            ])
            .await;
            c.must(&["SENTINEL", "SET", m, "down-after-milliseconds", &down])
                .await;
            if let Some(pw) = &self.password {
                c.must(&["SENTINEL", "SET", m, "auth-pass", pw]).await;
            }
        }
        new
    }

    /// Waits until every sentinel names a primary other than `old` that
    /// says it is one (`ROLE`); answers its port.
    pub async fn wait_promoted(&mut self, old: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let mut named = Vec::new();
            for s in &self.sentinels {
                let port = match self.sentinel_conn(s).await {
                    Ok(mut c) => c
                        .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                        .await
                        .ok()
                        .and_then(|v| v.items().get(1).and_then(Value::text))
                        .and_then(|p| p.parse::<u16>().ok()),
                    Err(_) => None,
                };
                named.push(port);
            }
            if let Some(Some(port)) = named.first()
                && *port != old
                && named.iter().all(|p| *p == Some(*port))
                && let Some(node) = self.nodes.iter().find(|n| n.port() == *port)
                && node
                    .cmd(&["ROLE"])
                    .await
                    .items()
                    .first()
                    .and_then(Value::text)
                    .as_deref()
                    == Some("master")
            {
                return *port;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .sentinels
                    .iter()
                    .map(|s| tail(&s.proc.log_text(), 15))
                    .collect();
                panic!(
                    "no promotion within {limit:?} (sentinels name {named:?}); their logs:\n{}",
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every sentinel's log so far.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel :{}\n{}", s.port, s.proc.log_text()))
            .collect()
    }
}

impl SentinelProc {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// What every sentinel.conf says.
struct SentinelConf<'a> {
    primary_port: u16,
    quorum: usize,
    timing: SentinelTiming,
    /// The data nodes' password (`auth-pass`).
    password: &'a Option<String>,
    /// The sentinels' own password and TLS.
    access: &'a Access,
}

async fn spawn_sentinel(dir: &TempDir, i: usize, c: &SentinelConf<'_>) -> SentinelProc {
    let mut last = String::new();
    // A port found free can be taken before the sentinel binds it.
    for attempt in 0..5 {
        let port = free_tcp_port();
        let conf = dir.path().join(format!("sentinel-{i}-{attempt}.conf"));
        let m = SENTINEL_MASTER;
        let listen = match &c.access.pki {
            // TLS only: to clients, and (`tls-replication`) to the nodes
            // and the other sentinels.
            Some(pki) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                pki.server_cert().display(),
                pki.server_key().display(),
                pki.ca_cert().display(),
            ),
            None => format!("port {port}\n"),
        };
        let mut text = format!(
            "{listen}bind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
             sentinel monitor {m} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {m} {down}\n\
             sentinel failover-timeout {m} {failover}\n\
             sentinel parallel-syncs {m} 1\n",
            dir = dir.path().display(),
            primary_port = c.primary_port,
            quorum = c.quorum,
            down = c.timing.down_after.as_millis(),
            failover = c.timing.failover_timeout.as_millis(),
        );
        if let Some(pw) = c.password {
            text.push_str(&format!("sentinel auth-pass {m} {pw}\n"));
        }
        if let Some(pw) = &c.access.password {
            text.push_str(&format!("requirepass {pw}\n"));
        }
        std::fs::write(&conf, text).expect("writing sentinel.conf");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let log = dir.path().join(format!("sentinel-{i}-{attempt}.log"));
        let mut proc = Proc::spawn(&format!("redis-sentinel :{port}"), cmd, &log)
            .unwrap_or_else(|e| panic!("spawning redis-server --sentinel: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if proc.try_status().is_some() {
                last = tail(&proc.log_text(), 20);
                break;
            }
            if let Ok(mut conn) = c.access.conn(addr).await
                && conn.cmd(&["PING"]).await.is_ok()
            {
                return SentinelProc { port, proc };
            }
            if Instant::now() >= deadline {
                last = tail(&proc.log_text(), 20);
                proc.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("redis sentinel did not start; its log ends with:\n{last}");
}
