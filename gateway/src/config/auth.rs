//! Authentication and ICE server settings (PROTOCOL.md §3, §7, §8). Secrets
//! (`AUTH_JWT_SECRET`, `AUTH_KEY`, `TURN_SECRET`) never appear in `Debug`
//! output, logs or errors.

use crate::auth::PublicKey;
use clap::Args;
use std::fmt;
use std::time::Duration;

/// Authentication and ICE flags and variables.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// HS256 secret for `hello.token` JWTs (at least 32 bytes). Setting it,
    /// AUTH_JWT_PUBLIC_KEY or AUTH_KEY turns authentication on.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// PEM file with the public key (EC P-256 for ES256, RSA for RS256) that
    /// verifies `hello.token` JWTs.
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<String>,
    /// Accepted JWT `aud` values, comma-separated; when set, `aud` is
    /// required (default: not checked).
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
    /// Accepted JWT `iss` values, comma-separated; when set, `iss` is
    /// required (default: not checked).
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// Clock skew allowed when checking JWT `exp` and `nbf`, in seconds.
    #[arg(long, env = "AUTH_JWT_LEEWAY", default_value = "30")]
    pub auth_jwt_leeway: String,
    /// The legacy shared key: a `hello.token` (or Bearer token) equal to it
    /// admits the client to every room.
    #[arg(long, env = "AUTH_KEY", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// STUN server URLs for `welcome.ice_servers`, comma-separated
    /// (`stun:host:port`).
    #[arg(long, env = "STUN_URLS")]
    pub stun_urls: Option<String>,
    /// TURN server URLs, comma-separated (`turn:host:port?transport=udp`,
    /// `turns:...`); needs TURN_SECRET.
    #[arg(long, env = "TURN_URLS")]
    pub turn_urls: Option<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`), for
    /// time-limited TURN REST API credentials.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Lifetime of issued TURN credentials, in seconds.
    #[arg(long, env = "TURN_TTL", default_value = "86400")]
    pub turn_ttl: String,
}

impl AuthArgs {
    /// Defaults: authentication off, no ICE servers.
    pub fn defaults() -> Self {
        Self {
            auth_jwt_leeway: "30".into(),
            turn_ttl: "86400".into(),
            ..Self::default()
        }
    }
}

/// A secret value: its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Validated authentication settings. With none of `jwt_secret`,
/// `jwt_public_key` and `key` set, authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// HS256 secret.
    pub jwt_secret: Option<Secret>,
    /// ES256/RS256 public key.
    pub jwt_public_key: Option<PublicKey>,
    /// Accepted `aud` values (`None`: not checked).
    pub audience: Option<Vec<String>>,
    /// Accepted `iss` values (`None`: not checked).
    pub issuer: Option<Vec<String>>,
    /// Clock skew allowed on `exp`/`nbf`.
    pub leeway: Duration,
    /// The legacy shared key.
    pub key: Option<Secret>,
}

impl Auth {
    /// Whether clients must present a token.
    pub fn is_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.key.is_some()
    }
}

/// Validated STUN/TURN settings.
#[derive(Debug, Clone, Default)]
pub struct Ice {
    /// `stun:`/`stuns:` URLs.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs.
    pub turn_urls: Vec<String>,
    /// The TURN REST API shared secret (set whenever `turn_urls` is not
    /// empty).
    pub turn_secret: Option<Secret>,
    /// Lifetime of issued TURN credentials.
    pub turn_ttl: Duration,
}

/// The shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at
/// least as long as the hash (256 bits).
const MIN_HS256_SECRET: usize = 32;

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn list(s: &Option<String>) -> Vec<String> {
    non_empty(s)
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn seconds(name: &str, value: &str, min: u64, max: u64, problems: &mut Vec<String>) -> Duration {
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Duration::from_secs(v),
        Ok(_) => {
            problems.push(format!("{name}: {value:?} is out of range ({min}..={max})"));
            Duration::from_secs(min)
        }
        Err(_) => {
            problems.push(format!("{name}: {value:?} is not a whole number"));
            Duration::from_secs(min)
        }
    }
}

/// Validates the authentication variables, adding a line per problem.
pub fn parse_auth(a: &AuthArgs, problems: &mut Vec<String>) -> Auth {
    let jwt_secret = non_empty(&a.auth_jwt_secret).map(|s| {
        if s.len() < MIN_HS256_SECRET {
            problems.push(format!(
                "AUTH_JWT_SECRET: must be at least {MIN_HS256_SECRET} bytes (it is {})",
                s.len()
            ));
        }
        Secret::new(s)
    });
    let jwt_public_key =
        non_empty(&a.auth_jwt_public_key).and_then(|path| match std::fs::read(path) {
            Ok(pem) => match PublicKey::from_pem(&pem) {
                Ok(key) => Some(key),
                Err(why) => {
                    problems.push(format!("AUTH_JWT_PUBLIC_KEY: {path}: {why}"));
                    None
                }
            },
            Err(e) => {
                problems.push(format!("AUTH_JWT_PUBLIC_KEY: cannot read {path}: {e}"));
                None
            }
        });
    let audience = Some(list(&a.auth_jwt_audience)).filter(|l| !l.is_empty());
    let issuer = Some(list(&a.auth_jwt_issuer)).filter(|l| !l.is_empty());
    let leeway = seconds("AUTH_JWT_LEEWAY", &a.auth_jwt_leeway, 0, 600, problems);
    let key = non_empty(&a.auth_key).map(Secret::new);
    let jwt = jwt_secret.is_some() || non_empty(&a.auth_jwt_public_key).is_some();
    if !jwt {
        for (name, set) in [
            ("AUTH_JWT_AUDIENCE", audience.is_some()),
            ("AUTH_JWT_ISSUER", issuer.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "{name}: needs AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY (there are no JWTs to check)"
                ));
            }
        }
    }
    Auth {
        jwt_secret,
        jwt_public_key,
        audience,
        issuer,
        leeway,
        key,
    }
}

/// Validates the STUN/TURN variables, adding a line per problem.
pub fn parse_ice(a: &AuthArgs, problems: &mut Vec<String>) -> Ice {
    let stun_urls = list(&a.stun_urls);
    for u in &stun_urls {
        if !(u.starts_with("stun:") || u.starts_with("stuns:")) || u.contains(char::is_whitespace) {
            problems.push(format!(
                "STUN_URLS: {u:?} is not a STUN URL like stun:stun.example.org:3478"
            ));
        }
    }
    let turn_urls = list(&a.turn_urls);
    for u in &turn_urls {
        if !(u.starts_with("turn:") || u.starts_with("turns:")) || u.contains(char::is_whitespace) {
            problems.push(format!(
                "TURN_URLS: {u:?} is not a TURN URL like turn:turn.example.org:3478"
            ));
        }
    }
    let turn_secret = non_empty(&a.turn_secret).map(Secret::new);
    match (turn_urls.is_empty(), turn_secret.is_some()) {
        (false, false) => problems.push(
            "TURN_URLS: needs TURN_SECRET (browsers refuse TURN servers without credentials)"
                .into(),
        ),
        (true, true) => problems.push("TURN_SECRET: set without TURN_URLS".into()),
        _ => {}
    }
    let turn_ttl = seconds("TURN_TTL", &a.turn_ttl, 1, 7 * 86_400, problems);
    Ice {
        stun_urls,
        turn_urls,
        turn_secret,
        turn_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut AuthArgs)) -> AuthArgs {
        let mut a = AuthArgs::defaults();
        f(&mut a);
        a
    }

    #[test]
    fn secrets_are_redacted() {
        let mut problems = Vec::new();
        let auth = parse_auth(
            &args(|a| {
                a.auth_jwt_secret = Some("0123456789abcdef0123456789abcdef-s3cr3t".into());
                a.auth_key = Some("legacy-k3y".into());
            }),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(auth.is_enabled());
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("legacy-k3y"),
            "{shown}"
        );
    }

    #[test]
    fn every_bad_variable_is_reported() {
        let mut problems = Vec::new();
        let _ = parse_auth(
            &args(|a| {
                a.auth_jwt_secret = Some("short".into());
                a.auth_jwt_public_key = Some("/nonexistent/key.pem".into());
                a.auth_jwt_leeway = "soon".into();
            }),
            &mut problems,
        );
        let _ = parse_ice(
            &args(|a| {
                a.stun_urls = Some("stun:ok.example:3478, http://nope".into());
                a.turn_urls = Some("turn:t.example:3478".into());
                a.turn_ttl = "0".into();
            }),
            &mut problems,
        );
        let text = problems.join("\n");
        for name in [
            "AUTH_JWT_SECRET",
            "AUTH_JWT_PUBLIC_KEY",
            "AUTH_JWT_LEEWAY",
            "STUN_URLS",
            "TURN_URLS: needs TURN_SECRET",
            "TURN_TTL",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert_eq!(problems.len(), 6, "{text}");
    }

    #[test]
    fn audience_without_jwt_is_a_mistake() {
        let mut problems = Vec::new();
        let _ = parse_auth(
            &args(|a| {
                a.auth_key = Some("k".into());
                a.auth_jwt_audience = Some("app".into());
            }),
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("AUTH_JWT_AUDIENCE"));
    }

    #[test]
    fn lists_are_split_and_trimmed() {
        let mut problems = Vec::new();
        let ice = parse_ice(
            &args(|a| {
                a.stun_urls = Some(" stun:a.example:3478 ,stun:b.example:3478,".into());
                a.turn_urls = Some("turn:t.example:3478?transport=udp".into());
                a.turn_secret = Some("x".into());
            }),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            ice.stun_urls,
            ["stun:a.example:3478", "stun:b.example:3478"]
        );
        assert_eq!(ice.turn_ttl, Duration::from_secs(86_400));
    }
}
