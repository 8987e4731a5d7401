//! Configuration: every setting, read once at start-up from flags and
//! environment variables, validated together.
//!
//! Values are taken as text by clap (so `--help` lists every variable with its
//! default) and converted here, so that one run reports every bad variable at
//! once instead of stopping at the first.

pub mod admission;
pub mod auth;
pub mod redis;

use clap::Parser;
use pantheon_protocol::Limits;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Exit status for bad configuration (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// Pantheon: a WebRTC signaling gateway (WebSocket and WebTransport, one
/// protocol). Every option can be given as a flag or as the environment
/// variable named beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pantheon",
    version,
    about,
    long_about = None,
    after_help = "Subcommand: `pantheon gen-cert [--out-dir DIR]` writes a development TLS certificate."
)]
pub struct Args {
    /// Address to listen on; `::` is dual-stack (IPv6 and IPv4).
    #[arg(long, env = "HOST", default_value = "::")]
    pub host: String,
    /// TCP port for HTTP and WebSocket.
    #[arg(long, env = "PORT", default_value = "3000")]
    pub port: String,
    /// UDP port for WebTransport (HTTP/3 over QUIC); default: the same number
    /// as PORT.
    #[arg(long, env = "WT_PORT")]
    pub wt_port: Option<String>,
    /// PEM certificate chain for WebTransport (with TLS_KEY). Without both, a
    /// self-signed development certificate is generated and rotated, and its
    /// hash is served at /webtransport/cert-hash.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key for TLS_CERT.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<String>,
    /// This instance's id (default: the host name).
    #[arg(long, env = "SERVER_ID")]
    pub server_id: Option<String>,
    /// This instance's region.
    #[arg(long, env = "SERVER_REGION", default_value = "local")]
    pub server_region: String,
    /// The WebSocket URL clients reach this instance's region at
    /// (`wss://eu.example.org/ws`), announced in GET /regions and
    /// `welcome.regions`.
    #[arg(long, env = "PUBLIC_WS_URL")]
    pub public_ws_url: Option<String>,
    /// The WebTransport URL clients reach this region at
    /// (`https://eu.example.org:4433/wt`).
    #[arg(long, env = "PUBLIC_WT_URL")]
    pub public_wt_url: Option<String>,
    /// Largest message a client may send, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value = "65536")]
    pub max_message_bytes: String,
    /// Most rooms one session may be in.
    #[arg(long, env = "MAX_ROOMS", default_value = "32")]
    pub max_rooms: String,
    /// Most members one room may have.
    #[arg(long, env = "MAX_ROOM_PEERS", default_value = "64")]
    pub max_room_peers: String,
    /// Sustained messages per second per connection.
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value = "50")]
    pub rate_limit_per_sec: String,
    /// Burst of messages per connection.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "100")]
    pub rate_limit_burst: String,
    /// Most concurrent client connections on this instance.
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: String,
    /// Messages queued for one connection before it is closed as a slow
    /// consumer (4009).
    #[arg(long, env = "OUTBOUND_QUEUE", default_value = "1024")]
    pub outbound_queue: String,
    /// How long a dropped session may be resumed, in milliseconds.
    #[arg(long, env = "RESUME_GRACE_MS", default_value = "30000")]
    pub resume_grace_ms: String,
    /// Messages kept per session for replay on resume.
    #[arg(long, env = "RESUME_BUFFER", default_value = "1000")]
    pub resume_buffer: String,
    /// Time allowed for `hello` after the transport opens, in milliseconds.
    #[arg(long, env = "HELLO_TIMEOUT_MS", default_value = "10000")]
    pub hello_timeout_ms: String,
    /// Interval between server WebSocket pings, in milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value = "25000")]
    pub ping_interval_ms: String,
    /// Close a connection silent this long, in milliseconds.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value = "60000")]
    pub ping_timeout_ms: String,
    /// Longest a graceful shutdown waits for clients to move, in milliseconds.
    #[arg(long, env = "DRAIN_TIMEOUT_MS", default_value = "30000")]
    pub drain_timeout_ms: String,
    /// Close HTTP requests whose headers have not arrived whole in this time.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value = "10000")]
    pub http_header_timeout_ms: String,
    /// Comma-separated origins allowed to connect (default: any).
    #[arg(long, env = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Serve `/metrics` on this separate address (e.g. `0.0.0.0:9100`)
    /// instead of on PORT, so it need not be public. Plain HTTP.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Log format: `text` or `json`. Levels come from `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Redis (scale-out); absent: standalone.
    #[command(flatten)]
    pub redis: redis::RedisArgs,
    /// Authentication and ICE servers.
    #[command(flatten)]
    pub auth: auth::AuthArgs,
    /// Per-client-address limits and trusted proxies.
    #[command(flatten)]
    pub admission: admission::AdmissionArgs,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub host: IpAddr,
    /// TCP port (0 picks a free one).
    pub port: u16,
    /// UDP port for WebTransport (0 picks a free one).
    pub wt_port: u16,
    /// Certificate and key files; `None`: a self-signed development
    /// certificate.
    pub tls: Option<TlsFiles>,
    /// Instance id.
    pub server_id: String,
    /// Region.
    pub region: String,
    /// Public WebSocket URL of this region.
    pub public_ws_url: Option<String>,
    /// Public WebTransport URL of this region.
    pub public_wt_url: Option<String>,
    /// Per-session limits, as announced in `welcome`.
    pub limits: Limits,
    /// Connection cap.
    pub max_connections: usize,
    /// Outbound queue length per connection.
    pub outbound_queue: usize,
    /// Resume grace window.
    pub resume_grace: Duration,
    /// Messages kept for replay.
    pub resume_buffer: usize,
    /// `hello` deadline.
    pub hello_timeout: Duration,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed.
    pub ping_timeout: Duration,
    /// Graceful shutdown bound.
    pub drain_timeout: Duration,
    /// HTTP header read bound.
    pub http_header_timeout: Duration,
    /// Allowed origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Where `/metrics` is served instead of on `port` (`None`: on `port`).
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Redis, when several instances form one system.
    pub redis: Option<redis::Redis>,
    /// Authentication (off when nothing is configured).
    pub auth: auth::Auth,
    /// STUN/TURN servers for `welcome.ice_servers` and `/turn-token`.
    pub ice: auth::Ice,
    /// Per-client-address limits and trusted proxies.
    pub admission: admission::Admission,
}

/// PEM files for TLS (`TLS_CERT`, `TLS_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Config {
    /// Where the TLS certificate comes from: the files, or a self-signed
    /// development certificate for localhost, 127.0.0.1 and ::1.
    pub fn cert_source(&self) -> pantheon_certs::Source {
        match &self.tls {
            Some(files) => pantheon_certs::Source::Files {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            None => pantheon_certs::Source::self_signed_local(),
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per bad variable: `NAME: why`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &mut self,
        name: &str,
        value: &str,
        min: T,
        max: T,
    ) -> T {
        match value.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => v,
            Ok(_) => {
                self.problems
                    .push(format!("{name}: {value:?} is out of range ({min}..={max})"));
                min
            }
            Err(_) => {
                self.problems
                    .push(format!("{name}: {value:?} is not a whole number"));
                min
            }
        }
    }

    fn millis(&mut self, name: &str, value: &str, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(name, value, min, max))
    }

    /// An absolute URL with one of `schemes` and a host; empty is unset.
    fn public_url(
        &mut self,
        name: &str,
        value: &str,
        schemes: &[&str],
        example: &str,
    ) -> Option<String> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        match url::Url::parse(value) {
            Ok(u)
                if schemes.contains(&u.scheme())
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(value.to_owned())
            }
            _ => {
                self.problems.push(format!(
                    "{name}: {value:?} is not a {} URL like {example}",
                    schemes.join(" or ")
                ));
                None
            }
        }
    }

    fn problem(&mut self, msg: String) {
        self.problems.push(msg);
    }
}

const HOUR_MS: u64 = 3_600_000;

fn non_empty(value: Option<String>) -> Option<PathBuf> {
    value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Config {
    /// Parses the process's flags and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        match Args::try_parse() {
            Ok(args) => Self::from_args(args),
            Err(e) if !e.use_stderr() => {
                // --help / --version
                let _ = e.print();
                std::process::exit(0);
            }
            Err(e) => Err(ConfigError {
                problems: vec![e.to_string().trim().to_owned()],
            }),
        }
    }

    /// Validates parsed arguments, collecting every problem.
    pub fn from_args(a: Args) -> Result<Self, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        let host = a.host.trim().parse::<IpAddr>().unwrap_or_else(|_| {
            c.problem(format!("HOST: {:?} is not an IP address", a.host));
            IpAddr::from([0, 0, 0, 0])
        });
        let port = c.number::<u16>("PORT", &a.port, 0, u16::MAX);
        let wt_port = match &a.wt_port {
            Some(p) => c.number::<u16>("WT_PORT", p, 0, u16::MAX),
            None => port,
        };
        let tls = match (non_empty(a.tls_cert), non_empty(a.tls_key)) {
            (None, None) => None,
            (Some(_), None) => {
                c.problem("TLS_KEY: must be set with TLS_CERT".into());
                None
            }
            (None, Some(_)) => {
                c.problem("TLS_CERT: must be set with TLS_KEY".into());
                None
            }
            (Some(cert), Some(key)) => {
                for (name, path) in [("TLS_CERT", &cert), ("TLS_KEY", &key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        c.problem(format!("{name}: {}: {e}", path.display()));
                    }
                }
                Some(TlsFiles { cert, key })
            }
        };
        let server_id = a
            .server_id
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        if server_id.is_empty() || server_id.len() > 128 || server_id.chars().any(char::is_control)
        {
            c.problem(format!(
                "SERVER_ID: {server_id:?} must be 1-128 characters without control characters"
            ));
        }
        let region = a.server_region;
        if region.is_empty() || region.len() > 64 || region.chars().any(char::is_control) {
            c.problem(format!(
                "SERVER_REGION: {region:?} must be 1-64 characters without control characters"
            ));
        }
        let public_ws_url = a.public_ws_url.as_deref().and_then(|u| {
            c.public_url(
                "PUBLIC_WS_URL",
                u,
                &["ws", "wss"],
                "wss://eu.example.org/ws",
            )
        });
        let public_wt_url = a.public_wt_url.as_deref().and_then(|u| {
            c.public_url("PUBLIC_WT_URL", u, &["https"], "https://eu.example.org/wt")
        });
        let limits = Limits {
            max_message_bytes: c.number("MAX_MESSAGE_BYTES", &a.max_message_bytes, 1024, 16 << 20),
            max_rooms: c.number("MAX_ROOMS", &a.max_rooms, 1, 100_000),
            max_room_peers: c.number("MAX_ROOM_PEERS", &a.max_room_peers, 2, 1_000_000),
            rate_per_sec: c.number("RATE_LIMIT_PER_SEC", &a.rate_limit_per_sec, 1, u32::MAX),
            rate_burst: c.number("RATE_LIMIT_BURST", &a.rate_limit_burst, 1, u32::MAX),
        };
        let max_connections = c.number("MAX_CONNECTIONS", &a.max_connections, 1, 10_000_000);
        let outbound_queue = c.number("OUTBOUND_QUEUE", &a.outbound_queue, 16, 1_000_000);
        let resume_grace = c.millis("RESUME_GRACE_MS", &a.resume_grace_ms, 0, 24 * HOUR_MS);
        let resume_buffer = c.number("RESUME_BUFFER", &a.resume_buffer, 0, 1_000_000);
        let hello_timeout = c.millis("HELLO_TIMEOUT_MS", &a.hello_timeout_ms, 1, HOUR_MS);
        let ping_interval = c.millis("PING_INTERVAL_MS", &a.ping_interval_ms, 10, HOUR_MS);
        let ping_timeout = c.millis("PING_TIMEOUT_MS", &a.ping_timeout_ms, 10, HOUR_MS);
        if ping_timeout <= ping_interval && c.problems.is_empty() {
            c.problem(format!(
                "PING_TIMEOUT_MS: must be greater than PING_INTERVAL_MS ({} <= {})",
                ping_timeout.as_millis(),
                ping_interval.as_millis()
            ));
        }
        let drain_timeout = c.millis("DRAIN_TIMEOUT_MS", &a.drain_timeout_ms, 0, HOUR_MS);
        let http_header_timeout = c.millis(
            "HTTP_HEADER_TIMEOUT_MS",
            &a.http_header_timeout_ms,
            1,
            HOUR_MS,
        );
        let allowed_origins = a.allowed_origins.and_then(|list| {
            let origins: Vec<String> = list
                .split(',')
                .map(|s| s.trim().trim_end_matches('/').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            for o in &origins {
                if !(o.starts_with("http://") || o.starts_with("https://")) || o.contains(' ') {
                    c.problem(format!(
                        "ALLOWED_ORIGINS: {o:?} is not an origin like https://app.example.com"
                    ));
                }
            }
            (!origins.is_empty()).then_some(origins)
        });
        let metrics_addr = a
            .metrics_addr
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .and_then(|v| match v.parse::<SocketAddr>() {
                Ok(addr) if addr.port() != 0 && addr.port() == port => {
                    c.problem(format!(
                        "METRICS_ADDR: {v:?} uses PORT ({port}); give it a port of its own"
                    ));
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    c.problem(format!(
                        "METRICS_ADDR: {v:?} is not an address like 0.0.0.0:9100 or [::1]:9100"
                    ));
                    None
                }
            });
        let log_format = match a.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.problem(format!("LOG_FORMAT: {other:?} must be `text` or `json`"));
                LogFormat::Text
            }
        };
        let redis = redis::parse(&a.redis, &mut c.problems);
        let auth = auth::parse_auth(&a.auth, &mut c.problems);
        let ice = auth::parse_ice(&a.auth, &mut c.problems);
        let admission = admission::parse(&a.admission, &mut c.problems);
        if !c.problems.is_empty() {
            return Err(ConfigError {
                problems: c.problems,
            });
        }
        Ok(Self {
            host,
            port,
            wt_port,
            tls,
            server_id,
            region,
            public_ws_url,
            public_wt_url,
            limits,
            max_connections,
            outbound_queue,
            resume_grace,
            resume_buffer,
            hello_timeout,
            ping_interval,
            ping_timeout,
            drain_timeout,
            http_header_timeout,
            allowed_origins,
            metrics_addr,
            log_format,
            redis,
            auth,
            ice,
            admission,
        })
    }

    /// Defaults, with a given port: for tests and embedding.
    pub fn for_tests(port: u16) -> Self {
        let mut args = Args::parse_from(["pantheon"]);
        // Tests must not depend on the environment they run in.
        args = Args {
            port: port.to_string(),
            host: "127.0.0.1".into(),
            server_id: Some("test".into()),
            allowed_origins: None,
            ..args
        };
        Self::from_args(defaults_only(args)).expect("defaults are valid")
    }
}

/// Replaces every value that may have come from the environment by its
/// default, keeping the fields set by the caller above.
fn defaults_only(a: Args) -> Args {
    let d = |s: &str| s.to_owned();
    Args {
        host: a.host,
        port: a.port,
        wt_port: None,
        tls_cert: None,
        tls_key: None,
        server_id: a.server_id,
        server_region: d("local"),
        public_ws_url: None,
        public_wt_url: None,
        max_message_bytes: d("65536"),
        max_rooms: d("32"),
        max_room_peers: d("64"),
        rate_limit_per_sec: d("50"),
        rate_limit_burst: d("100"),
        max_connections: d("10000"),
        outbound_queue: d("1024"),
        resume_grace_ms: d("30000"),
        resume_buffer: d("1000"),
        hello_timeout_ms: d("10000"),
        ping_interval_ms: d("25000"),
        ping_timeout_ms: d("60000"),
        drain_timeout_ms: d("30000"),
        http_header_timeout_ms: d("10000"),
        allowed_origins: a.allowed_origins,
        metrics_addr: None,
        log_format: d("text"),
        redis: redis::RedisArgs::default(),
        auth: auth::AuthArgs::defaults(),
        admission: admission::AdmissionArgs::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["pantheon"];
        argv.extend_from_slice(args);
        Config::from_args(defaults_only_keep(Args::try_parse_from(argv).unwrap()))
    }

    // Flags given on the command line win over the environment, so passing
    // every flag under test is enough to be independent of it.
    fn defaults_only_keep(a: Args) -> Args {
        a
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::for_tests(0);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.resume_grace, Duration::from_secs(30));
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.ping_timeout, Duration::from_secs(60));
    }

    #[test]
    fn every_bad_variable_is_reported() {
        let err = parse(&[
            "--port",
            "99999",
            "--max-rooms",
            "many",
            "--log-format",
            "xml",
            "--host",
            "nowhere",
            "--allowed-origins",
            "example.com",
        ])
        .unwrap_err();
        let text = err.to_string();
        for name in ["PORT", "MAX_ROOMS", "LOG_FORMAT", "HOST", "ALLOWED_ORIGINS"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert_eq!(err.problems.len(), 5, "{text}");
    }

    #[test]
    fn ping_timeout_must_exceed_interval() {
        let err = parse(&["--ping-interval-ms", "5000", "--ping-timeout-ms", "5000"]).unwrap_err();
        assert!(err.to_string().contains("PING_TIMEOUT_MS"));
    }

    #[test]
    fn sentinel_mode_needs_nodes_and_a_name_and_nothing_else() {
        let c = parse(&[
            "--redis-sentinels",
            "10.0.0.1:26379, 10.0.0.2:26379",
            "--redis-sentinel-master",
            "mymaster",
            "--redis-password",
            "pw",
        ])
        .unwrap();
        let r = c.redis.expect("sentinel mode is Redis");
        let s = r.sentinel.expect("sentinel settings");
        assert_eq!(s.nodes, ["10.0.0.1:26379", "10.0.0.2:26379"]);
        assert_eq!(s.master, "mymaster");
        assert_eq!(r.connection.redis_settings().password(), Some("pw"));
        for bad in [
            &["--redis-sentinels", "10.0.0.1:26379"][..],
            &["--redis-sentinel-master", "m"][..],
            &["--redis-sentinels", "nope", "--redis-sentinel-master", "m"][..],
            &[
                "--redis-sentinels",
                "h:1",
                "--redis-sentinel-master",
                "m",
                "--redis-host",
                "h",
            ][..],
            &[
                "--redis-sentinels",
                "h:1",
                "--redis-sentinel-master",
                "m",
                "--redis-cluster-nodes",
                "h:2",
            ][..],
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("REDIS_SENTINEL"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn public_urls_are_checked() {
        let c = parse(&[
            "--public-ws-url",
            "wss://eu.example.org/ws",
            "--public-wt-url",
            "https://eu.example.org:4433/wt",
        ])
        .unwrap();
        assert_eq!(c.public_ws_url.as_deref(), Some("wss://eu.example.org/ws"));
        assert_eq!(
            c.public_wt_url.as_deref(),
            Some("https://eu.example.org:4433/wt")
        );
        let err = parse(&[
            "--public-ws-url",
            "https://eu.example.org/ws",
            "--public-wt-url",
            "eu.example.org/wt",
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("PUBLIC_WS_URL"), "{err}");
        assert!(err.problems[1].starts_with("PUBLIC_WT_URL"), "{err}");
        assert!(parse(&["--public-ws-url", "ws://"]).is_err());
        assert!(parse(&["--public-wt-url", "http://x/wt"]).is_err());
    }

    #[test]
    fn wt_port_defaults_to_port() {
        let c = parse(&["--port", "4000"]).unwrap();
        assert_eq!(c.wt_port, 4000);
        let c = parse(&["--port", "4000", "--wt-port", "4443"]).unwrap();
        assert_eq!(c.wt_port, 4443);
    }

    #[test]
    fn tls_files_must_come_in_pairs_and_be_readable() {
        let err = parse(&["--tls-cert", "/nonexistent/cert.pem"]).unwrap_err();
        assert!(err.to_string().contains("TLS_KEY: must be set"), "{err}");
        let err = parse(&[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems[0].starts_with("TLS_CERT: /nonexistent/cert.pem"),
            "{err}"
        );
        assert!(
            err.problems[1].starts_with("TLS_KEY: /nonexistent/key.pem"),
            "{err}"
        );
    }

    #[test]
    fn metrics_addr_is_a_socket_address_apart_from_port() {
        assert_eq!(parse(&[]).unwrap().metrics_addr, None);
        let c = parse(&["--metrics-addr", "127.0.0.1:9100"]).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        let c = parse(&["--metrics-addr", "[::]:9100"]).unwrap();
        assert_eq!(c.metrics_addr, Some("[::]:9100".parse().unwrap()));
        for bad in ["9100", "localhost:9100", "0.0.0.0"] {
            let err = parse(&["--metrics-addr", bad]).unwrap_err();
            assert!(err.problems[0].starts_with("METRICS_ADDR:"), "{err}");
        }
        let err = parse(&["--port", "3000", "--metrics-addr", "0.0.0.0:3000"]).unwrap_err();
        assert!(err.to_string().contains("uses PORT"), "{err}");
    }

    #[test]
    fn origins_are_split_and_trimmed() {
        let c = parse(&[
            "--allowed-origins",
            " https://a.example/, http://b.example:8080 ",
        ])
        .unwrap();
        assert_eq!(
            c.allowed_origins.unwrap(),
            vec!["https://a.example", "http://b.example:8080"]
        );
    }
}
