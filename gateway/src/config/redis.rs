//! Redis settings: where it is, how to authenticate, TLS. With none of them
//! the gateway is standalone. The password never appears in `Debug` output,
//! logs or errors.

pub use crate::bus::redis::Sentinel;
use clap::Args;
use deadpool_redis::redis::{
    self, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    RedisConnectionInfo, TlsCertificates,
};
use std::fmt;
use std::time::Duration;

/// Redis flags and variables.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[user:password@]host:port` or `rediss://` for
    /// TLS). Overrides REDIS_HOST/REDIS_PORT.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated `host:port` (selects
    /// cluster mode with sharded pub/sub; credentials and TLS as below).
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// Redis Sentinel nodes, comma-separated `host:port` (selects Sentinel
    /// mode with REDIS_SENTINEL_MASTER: the gateway asks them for the
    /// primary and follows every failover; credentials and TLS as below
    /// apply to the primary, and TLS to the sentinels too).
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// The name the sentinels monitor the primary under (`sentinel monitor
    /// NAME ...`).
    #[arg(long, env = "REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// The sentinels' own password (`requirepass` in sentinel.conf), when
    /// they have one.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,
    /// Redis host; setting it (or REDIS_URL) turns on scale-out.
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(long, env = "REDIS_PORT", default_value = "6379")]
    pub redis_port: String,
    /// Redis ACL user name.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Connect with TLS (`true`/`false`).
    #[arg(long, env = "REDIS_TLS", default_value = "false")]
    pub redis_tls: String,
    /// CA certificate (PEM) that signed the Redis server's certificate.
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<String>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<String>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "pantheon")]
    pub redis_key_prefix: String,
    /// Pooled Redis command connections.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value = "16")]
    pub redis_pool_size: String,
    /// An instance whose liveness key is this old is dead, in milliseconds.
    #[arg(long, env = "INSTANCE_TTL_MS", default_value = "15000")]
    pub instance_ttl_ms: String,
}

impl Default for RedisArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_nodes: None,
            redis_sentinels: None,
            redis_sentinel_master: None,
            redis_sentinel_password: None,
            redis_host: None,
            redis_port: "6379".into(),
            redis_username: None,
            redis_password: None,
            redis_tls: "false".into(),
            redis_ca_cert: None,
            redis_client_cert: None,
            redis_client_key: None,
            redis_key_prefix: "pantheon".into(),
            redis_pool_size: "16".into(),
            instance_ttl_ms: "15000".into(),
        }
    }
}

/// Validated Redis settings.
#[derive(Clone)]
pub struct Redis {
    /// Where and how to connect (for a cluster: credentials and TLS only).
    pub connection: ConnectionInfo,
    /// Redis Cluster seed nodes (`host:port`).
    pub cluster_nodes: Option<Vec<String>>,
    /// Sentinel mode: the sentinels and the primary's name.
    pub sentinel: Option<Sentinel>,
    /// TLS roots and client identity, when TLS is on.
    pub tls: Option<TlsCertificates>,
    /// Key prefix.
    pub prefix: String,
    /// Pool size.
    pub pool_size: usize,
    /// Liveness TTL.
    pub instance_ttl: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.connection.addr().to_string())
            .field("sentinel", &self.sentinel)
            .field("tls", &self.tls.is_some())
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("instance_ttl", &self.instance_ttl)
            .finish_non_exhaustive()
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn read_pem(name: &str, path: &str, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) if b.windows(10).any(|w| w == b"-----BEGIN") => Some(b),
        Ok(_) => {
            problems.push(format!("{name}: {path} is not a PEM file"));
            None
        }
        Err(e) => {
            problems.push(format!("{name}: cannot read {path}: {e}"));
            None
        }
    }
}

/// A comma-separated `host:port` list; `None` when unset or empty.
fn node_list(
    name: &str,
    value: &Option<String>,
    problems: &mut Vec<String>,
) -> Option<Vec<String>> {
    let nodes: Vec<String> = non_empty(value)?
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    for n in &nodes {
        let ok = n
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            problems.push(format!("{name}: {n:?} is not host:port"));
        }
    }
    (!nodes.is_empty()).then_some(nodes)
}

/// Validates the Redis settings; `None` when Redis is not configured.
pub fn parse(a: &RedisArgs, problems: &mut Vec<String>) -> Option<Redis> {
    let instance_ttl = match a.instance_ttl_ms.trim().parse::<u64>() {
        Ok(ms) if (300..=3_600_000).contains(&ms) => Duration::from_millis(ms),
        _ => {
            problems.push(format!(
                "INSTANCE_TTL_MS: {:?} must be a whole number from 300 to 3600000",
                a.instance_ttl_ms
            ));
            Duration::from_secs(15)
        }
    };
    let pool_size = match a.redis_pool_size.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => n,
        _ => {
            problems.push(format!(
                "REDIS_POOL_SIZE: {:?} must be a whole number from 1 to 1024",
                a.redis_pool_size
            ));
            16
        }
    };
    let prefix = a.redis_key_prefix.trim().to_owned();
    if prefix.is_empty() || prefix.len() > 64 || prefix.contains(['{', '}', ' ']) {
        problems.push(format!(
            "REDIS_KEY_PREFIX: {prefix:?} must be 1-64 characters without spaces or braces"
        ));
    }
    let tls_flag = match a.redis_tls.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        other => {
            problems.push(format!("REDIS_TLS: {other:?} must be true or false"));
            false
        }
    };
    let cluster_nodes = node_list("REDIS_CLUSTER_NODES", &a.redis_cluster_nodes, problems);
    let sentinel_nodes = node_list("REDIS_SENTINELS", &a.redis_sentinels, problems);
    let sentinel_master = non_empty(&a.redis_sentinel_master);
    let sentinel = match (sentinel_nodes, sentinel_master) {
        (None, None) => {
            if a.redis_sentinel_password.is_some() {
                problems.push("REDIS_SENTINEL_PASSWORD: set, but REDIS_SENTINELS is not".into());
            }
            None
        }
        (Some(_), None) => {
            problems.push(
                "REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS (the monitored name)".into(),
            );
            None
        }
        (None, Some(_)) => {
            problems.push("REDIS_SENTINELS: required with REDIS_SENTINEL_MASTER".into());
            None
        }
        (Some(nodes), Some(master)) => {
            if master.len() > 128 || master.contains(char::is_whitespace) {
                problems.push(format!(
                    "REDIS_SENTINEL_MASTER: {master:?} must be 1-128 characters without spaces"
                ));
            }
            Some(Sentinel {
                nodes,
                master: master.to_owned(),
                password: a.redis_sentinel_password.clone().filter(|p| !p.is_empty()),
            })
        }
    };
    if sentinel.is_some() && cluster_nodes.is_some() {
        problems.push("REDIS_SENTINELS: cannot be combined with REDIS_CLUSTER_NODES".into());
    }
    if sentinel.is_some()
        && (non_empty(&a.redis_url).is_some() || non_empty(&a.redis_host).is_some())
    {
        problems.push(
            "REDIS_SENTINELS: the sentinels name the primary; leave REDIS_URL and REDIS_HOST unset"
                .into(),
        );
    }
    let seeds = cluster_nodes
        .as_ref()
        .or(sentinel.as_ref().map(|s| &s.nodes));
    let mut connection: ConnectionInfo = if let Some(nodes) = seeds {
        // Credentials and TLS ride on the first node's address.
        let (host, port) = nodes
            .first()
            .and_then(|n| n.rsplit_once(':'))
            .map(|(h, p)| (h.to_owned(), p.parse::<u16>().unwrap_or(6379)))
            .unwrap_or_else(|| ("127.0.0.1".to_owned(), 6379));
        let addr = tcp_addr(host, port, tls_flag);
        match addr.into_connection_info() {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("REDIS_CLUSTER_NODES / REDIS_SENTINELS: {e}"));
                return None;
            }
        }
    } else if let Some(url) = non_empty(&a.redis_url) {
        match url.into_connection_info() {
            Ok(c) => c,
            Err(_) => {
                // The URL may hold the password: never echo it.
                problems.push("REDIS_URL: not a valid redis:// or rediss:// URL".to_owned());
                return None;
            }
        }
    } else if let Some(host) = non_empty(&a.redis_host) {
        let port = match a.redis_port.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                problems.push(format!("REDIS_PORT: {:?} is not a port", a.redis_port));
                return None;
            }
        };
        let addr = tcp_addr(host.to_owned(), port, tls_flag);
        match addr.into_connection_info() {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("REDIS_HOST: {host:?}: {e}"));
                return None;
            }
        }
    } else {
        if tls_flag || a.redis_password.is_some() || a.redis_ca_cert.is_some() {
            problems.push(
                "REDIS_HOST or REDIS_URL: Redis options are set but no Redis address".to_owned(),
            );
        }
        return None;
    };
    let mut redis_info: RedisConnectionInfo = connection.redis_settings().clone();
    if let Some(user) = non_empty(&a.redis_username) {
        redis_info = redis_info.set_username(user);
    }
    if let Some(pass) = a.redis_password.as_deref().filter(|p| !p.is_empty()) {
        redis_info = redis_info.set_password(pass);
    }
    redis_info = redis_info.set_protocol(ProtocolVersion::RESP2);
    connection = connection.set_redis_settings(redis_info);
    let is_tls = matches!(connection.addr(), ConnectionAddr::TcpTls { .. });
    if tls_flag && !is_tls {
        problems.push("REDIS_TLS: true, but REDIS_URL is redis:// (use rediss://)".to_owned());
    }
    let tls = if is_tls {
        let root_cert = a
            .redis_ca_cert
            .as_deref()
            .and_then(|p| read_pem("REDIS_CA_CERT", p, problems));
        let client_tls = match (&a.redis_client_cert, &a.redis_client_key) {
            (Some(c), Some(k)) => Some(ClientTlsConfig {
                client_cert: read_pem("REDIS_CLIENT_CERT", c, problems)?,
                client_key: read_pem("REDIS_CLIENT_KEY", k, problems)?,
            }),
            (None, None) => None,
            _ => {
                problems.push(
                    "REDIS_CLIENT_CERT and REDIS_CLIENT_KEY: give both or neither".to_owned(),
                );
                None
            }
        };
        if a.redis_ca_cert.is_some() && root_cert.is_none() {
            // Verification was asked for and cannot be done: refuse to start
            // rather than fall back to the system roots.
            return None;
        }
        Some(TlsCertificates {
            client_tls,
            root_cert,
        })
    } else {
        if a.redis_ca_cert.is_some() {
            problems
                .push("REDIS_CA_CERT: set, but TLS is off (REDIS_TLS=true or rediss://)".into());
        }
        None
    };
    // Builds the client once to catch bad TLS material at start-up.
    let check = match &tls {
        Some(t) => redis::Client::build_with_tls(connection.clone(), t.clone()).map(|_| ()),
        None => redis::Client::open(connection.clone()).map(|_| ()),
    };
    if let Err(e) = check {
        problems.push(format!(
            "REDIS_CA_CERT / REDIS_CLIENT_*: unusable TLS material: {:?}",
            e.kind()
        ));
    }
    Some(Redis {
        connection,
        cluster_nodes,
        sentinel,
        tls,
        prefix,
        pool_size,
        instance_ttl,
    })
}

/// A Redis (or Sentinel) node's address, over TLS when `tls` (verified:
/// never `insecure`).
pub(crate) fn tcp_addr(host: String, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}
