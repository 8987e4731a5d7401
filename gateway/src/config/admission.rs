//! Per-client-address admission settings: connection attempts per second
//! and concurrent connections per IP, and the proxies whose word about the
//! client's address is believed.

use clap::Args;
use ipnet::IpNet;
use std::net::IpAddr;

/// Admission flags and variables.
#[derive(Debug, Clone, Args)]
pub struct AdmissionArgs {
    /// Connection attempts (WebSocket upgrades, WebTransport CONNECTs) per
    /// second from one client address; 0: unlimited. A burst of the same
    /// size is allowed.
    #[arg(long, env = "CONN_RATE_PER_IP", default_value = "0")]
    pub conn_rate_per_ip: String,
    /// Concurrent sessions (both transports together) from one client
    /// address; 0: unlimited. Connections that are not sessions yet (plain
    /// HTTP, headers still arriving, QUIC handshakes) are capped at the same
    /// number apart.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value = "0")]
    pub max_connections_per_ip: String,
    /// Comma-separated addresses or CIDR ranges of proxies (load balancers)
    /// allowed to name the client: their PROXY protocol header (v1 or v2)
    /// and `X-Forwarded-For` are honoured; everyone else's are ignored.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
}

impl Default for AdmissionArgs {
    fn default() -> Self {
        Self {
            conn_rate_per_ip: "0".into(),
            max_connections_per_ip: "0".into(),
            trusted_proxies: None,
        }
    }
}

/// Validated admission settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Connection attempts per second per client address; `None`: unlimited.
    pub conn_rate_per_ip: Option<u32>,
    /// Concurrent connections per client address; `None`: unlimited.
    pub max_connections_per_ip: Option<u32>,
    /// Proxies trusted to name the client.
    pub trusted_proxies: Vec<IpNet>,
}

fn per_ip(name: &str, value: &str, problems: &mut Vec<String>) -> Option<u32> {
    match value.trim().parse::<u32>() {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(format!(
                "{name}: {value:?} is not a whole number (0 for unlimited)"
            ));
            None
        }
    }
}

/// Parses `a`, adding a line to `problems` per bad variable.
pub(super) fn parse(a: &AdmissionArgs, problems: &mut Vec<String>) -> Admission {
    let conn_rate_per_ip = per_ip("CONN_RATE_PER_IP", &a.conn_rate_per_ip, problems);
    let max_connections_per_ip = per_ip(
        "MAX_CONNECTIONS_PER_IP",
        &a.max_connections_per_ip,
        problems,
    );
    let mut trusted_proxies = Vec::new();
    for item in a.trusted_proxies.iter().flat_map(|l| l.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // A bare address is a range of one.
        let net = item
            .parse::<IpNet>()
            .ok()
            .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(net) => trusted_proxies.push(net.trunc()),
            None => problems.push(format!(
                "TRUSTED_PROXIES: {item:?} is not an address or CIDR range like 10.0.0.0/8"
            )),
        }
    }
    Admission {
        conn_rate_per_ip,
        max_connections_per_ip,
        trusted_proxies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rate: &str, max: &str, trusted: Option<&str>) -> AdmissionArgs {
        AdmissionArgs {
            conn_rate_per_ip: rate.into(),
            max_connections_per_ip: max.into(),
            trusted_proxies: trusted.map(Into::into),
        }
    }

    #[test]
    fn defaults_are_unlimited_and_trust_nobody() {
        let mut p = Vec::new();
        assert_eq!(
            parse(&AdmissionArgs::default(), &mut p),
            Admission::default()
        );
        assert!(p.is_empty());
    }

    #[test]
    fn ranges_and_bare_addresses() {
        let mut p = Vec::new();
        let a = parse(
            &args(
                "20",
                "100",
                Some(" 10.1.2.3/8, 192.168.0.7 ,::1, fd00::/8,"),
            ),
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(a.conn_rate_per_ip, Some(20));
        assert_eq!(a.max_connections_per_ip, Some(100));
        let nets: Vec<String> = a.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.168.0.7/32", "::1/128", "fd00::/8"]
        );
    }

    #[test]
    fn every_bad_value_is_reported() {
        let mut p = Vec::new();
        parse(&args("-1", "many", Some("10.0.0.0/33,proxy.local")), &mut p);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("CONN_RATE_PER_IP"));
        assert!(p[1].starts_with("MAX_CONNECTIONS_PER_IP"));
        assert!(p[2].starts_with("TRUSTED_PROXIES: \"10.0.0.0/33\""));
        assert!(p[3].starts_with("TRUSTED_PROXIES: \"proxy.local\""));
    }
}
