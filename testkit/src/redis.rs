//! One `redis-server` process on a free loopback port.

use crate::port::free_tcp_port;
use crate::process::{Proc, tail};
use crate::resp::{Conn, Value};
use crate::tls::Pki;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// TLS on the Redis port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTls {
    /// The server proves itself; clients need no certificate
    /// (`--tls-auth-clients no`).
    ServerOnly,
    /// Clients must present a certificate signed by the same CA.
    Mutual,
}

/// How to start a [`Redis`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// TLS only (`--port 0 --tls-port P`), with certificates made for
    /// this server.
    pub tls: Option<RedisTls>,
    /// A configuration file read first (the test's own settings, given as
    /// arguments, override it).
    pub conf: Option<std::path::PathBuf>,
    /// The certificates to serve TLS with (several servers sharing one CA,
    /// as the nodes of a replicated set do); fresh ones when `None`.
    pub pki: Option<Arc<Pki>>,
}

impl RedisOptions {
    /// No password, no TLS.
    pub fn plain() -> Self {
        Self::default()
    }

    /// With `requirepass password`.
    pub fn password(password: &str) -> Self {
        Self {
            password: Some(password.to_owned()),
            ..Self::default()
        }
    }

    /// TLS only, in the given mode.
    pub fn tls(mode: RedisTls) -> Self {
        Self {
            tls: Some(mode),
            ..Self::default()
        }
    }
}

/// A `redis-server` with no persistence (`--save '' --appendonly no`),
/// SIGKILLed on drop.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    opts: RedisOptions,
    extra_args: Vec<String>,
    pki: Option<Arc<Pki>>,
    dir: TempDir,
    proc: Option<Proc>,
    starts: u32,
}

/// How long a server may take to answer its first `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

impl Redis {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start(opts: RedisOptions) -> Self {
        Self::start_with_args(opts, |_| Vec::new()).await
    }

    /// Starts a server whose extra arguments depend on its port (cluster
    /// nodes name files and bus ports after it).
    pub(crate) async fn start_with_args(
        opts: RedisOptions,
        extra: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        let mut pki = opts.tls.map(|_| {
            opts.pki
                .clone()
                .unwrap_or_else(|| Arc::new(Pki::generate()))
        });
        let mut dir = tempfile::Builder::new()
            .prefix("pantheon-redis-")
            .tempdir()
            .expect("temp dir");
        let mut last_log = String::new();
        // A port found free can be taken before redis binds it: try others.
        for _ in 0..5 {
            let port = free_tcp_port();
            let mut redis = Self {
                port,
                extra_args: extra(port),
                opts: opts.clone(),
                pki,
                dir,
                proc: None,
                starts: 0,
            };
            match redis.launch().await {
                Ok(()) => return redis,
                Err(log) => {
                    last_log = log;
                    pki = redis.pki.take();
                    dir = redis.take_dir();
                }
            }
        }
        panic!("redis-server did not start; its log ends with:\n{last_log}");
    }

    fn take_dir(&mut self) -> TempDir {
        std::mem::replace(&mut self.dir, TempDir::new().expect("temp dir"))
    }

    fn args(&self) -> Vec<String> {
        let s = |v: &str| v.to_owned();
        let path = |p: std::path::PathBuf| p.display().to_string();
        let mut a = vec![
            s("--bind"),
            s("127.0.0.1"),
            s("--save"),
            s(""),
            s("--appendonly"),
            s("no"),
            s("--protected-mode"),
            s("no"),
            s("--daemonize"),
            s("no"),
            s("--dir"),
            path(self.dir.path().to_owned()),
            s("--dbfilename"),
            format!("dump-{}.rdb", self.port),
        ];
        match (&self.opts.tls, &self.pki) {
            (Some(mode), Some(pki)) => a.extend([
                s("--port"),
                s("0"),
                s("--tls-port"),
                self.port.to_string(),
                s("--tls-cert-file"),
                path(pki.server_cert()),
                s("--tls-key-file"),
                path(pki.server_key()),
                s("--tls-ca-cert-file"),
                path(pki.ca_cert()),
                s("--tls-auth-clients"),
                s(if *mode == RedisTls::Mutual {
                    "yes"
                } else {
                    "no"
                }),
            ]),
            _ => a.extend([s("--port"), self.port.to_string()]),
        }
        if let Some(pw) = &self.opts.password {
            a.extend([s("--requirepass"), pw.clone()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Spawns the process on `self.port`; on failure, the log.
    async fn launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("redis-{}-{}.log", self.port, self.starts));
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.opts.conf {
            cmd.arg(conf);
        }
        cmd.args(self.args());
        let name = format!("redis-server :{}", self.port);
        let mut proc = Proc::spawn(&name, cmd, &log)
            .unwrap_or_else(|e| panic!("spawning redis-server (is it installed?): {e}"));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if proc.try_status().is_some() {
                return Err(tail(&proc.log_text(), 20));
            }
            // Any reply (NOAUTH included) means it is serving.
            if let Ok(mut c) = self.raw_conn().await
                && c.cmd(&["PING"]).await.is_ok()
            {
                self.proc = Some(proc);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = tail(&proc.log_text(), 20);
                proc.kill();
                return Err(log);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The port (TLS-only when TLS is on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The password, if any.
    pub fn password(&self) -> Option<&str> {
        self.opts.password.as_deref()
    }

    /// The certificates, when TLS is on.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_deref()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.try_status().is_none())
    }

    /// SIGKILL: everything it held is lost and the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGSTOP: the port still accepts connections but nothing is answered,
    /// as with a hung server or a black-holed network.
    pub fn pause(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.signal("STOP");
        }
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn unpause(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.signal("CONT");
        }
    }

    /// Starts again, empty, on the same port (after [`Redis::kill`], or
    /// killing it first).
    pub async fn restart_empty(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(log) if Instant::now() >= deadline => {
                    panic!("redis-server did not restart on {}:\n{log}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The variables that point a gateway at this server the way the old
    /// server's operators configure it: `REDIS_HOST`, `REDIS_PORT`,
    /// `REDIS_PASSWORD`, `REDIS_TLS`, `REDIS_CA_CERT`, and for mutual TLS
    /// `REDIS_CLIENT_CERT`/`REDIS_CLIENT_KEY`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("REDIS_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("REDIS_PORT".to_owned(), self.port.to_string()),
        ];
        if let Some(pw) = &self.opts.password {
            env.push(("REDIS_PASSWORD".into(), pw.clone()));
        }
        if self.opts.tls.is_some() {
            env.push(("REDIS_TLS".into(), "true".into()));
        }
        env.extend(self.tls_env());
        env
    }

    /// The same as one `REDIS_URL` (`redis://` or `rediss://`, with the
    /// password in it) plus the certificate variables.
    pub fn url_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("REDIS_URL".to_owned(), self.url())];
        env.extend(self.tls_env());
        env
    }

    fn tls_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(pki) = &self.pki {
            env.push(("REDIS_CA_CERT".into(), pki.ca_cert().display().to_string()));
            if self.opts.tls == Some(RedisTls::Mutual) {
                env.push((
                    "REDIS_CLIENT_CERT".into(),
                    pki.client_cert().display().to_string(),
                ));
                env.push((
                    "REDIS_CLIENT_KEY".into(),
                    pki.client_key().display().to_string(),
                ));
            }
        }
        env
    }

    /// `redis://[:password@]127.0.0.1:port` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.opts.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    async fn raw_conn(&self) -> Result<Conn, crate::resp::Error> {
        match (&self.opts.tls, &self.pki) {
            (Some(mode), Some(pki)) => {
                Conn::connect_tls(self.addr(), pki.client_config(*mode == RedisTls::Mutual)).await
            }
            _ => Conn::connect(self.addr()).await,
        }
    }

    /// A connection, over TLS when it is on, authenticated when there is a
    /// password.
    pub async fn conn(&self) -> Conn {
        let mut c = self
            .raw_conn()
            .await
            .unwrap_or_else(|e| panic!("connecting to redis on {}: {e}", self.port));
        if let Some(pw) = &self.opts.password {
            c.must(&["AUTH", pw]).await;
        }
        c
    }

    /// One command on a fresh connection.
    pub async fn cmd(&self, args: &[&str]) -> Value {
        self.conn().await.must(args).await
    }

    /// The keys under `prefix` without an expiry; a test that ends with
    /// this empty proves the gateway leaves nothing behind forever.
    pub async fn keys_without_ttl(&self, prefix: &str) -> Vec<String> {
        self.conn()
            .await
            .keys_without_ttl(&format!("{prefix}*"))
            .await
            .expect("SCAN/PTTL")
    }

    /// Every key under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.conn()
            .await
            .scan(&format!("{prefix}*"))
            .await
            .expect("SCAN")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}
