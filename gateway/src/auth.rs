//! Who gets in (PROTOCOL.md §7): verifies `hello.token` (and the Bearer
//! token of `POST /turn-token`, and the legacy Socket.IO handshake's
//! `authKey`/`token`) into a [`Grant`]: the user, the rooms it may join.
//!
//! One entry point for every transport: [`Auth::verify`]. Tokens are JWTs
//! (HS256 with `AUTH_JWT_SECRET`, ES256/RS256 with `AUTH_JWT_PUBLIC_KEY`),
//! or the legacy shared key `AUTH_KEY`, compared in constant time. A token
//! is checked once, when presented: one that expires during a session does
//! not end it, but every `hello` (a resume included) needs a valid one.
//!
//! Nothing here logs; callers log the [`AuthError`], which never contains
//! the token.

use crate::config::auth::Auth as Settings;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use pantheon_protocol::{FieldError, Meta};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Longest token looked at; longer ones are invalid without parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub` accepted (it is copied into every `meta` of the peer).
pub const MAX_SUBJECT_BYTES: usize = 256;

/// A public key that verifies ES256 (EC P-256) or RS256 (RSA) tokens.
#[derive(Clone)]
pub struct PublicKey {
    key: DecodingKey,
    alg: Algorithm,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// DER of the P-256 curve's OID (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

impl PublicKey {
    /// Reads a PEM public key (`PUBLIC KEY`, `RSA PUBLIC KEY`, or a
    /// `CERTIFICATE` holding one): EC P-256 → ES256, RSA → RS256.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
        if !text.contains("-----BEGIN") {
            return Err("not a PEM file".into());
        }
        if text.contains("PRIVATE KEY-----") {
            return Err("holds a private key; give the public key (openssl pkey -pubout)".into());
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            if !pem_body(text).is_some_and(|der| contains(&der, P256_OID)) {
                return Err("an EC key on a curve other than P-256 (ES256 needs P-256)".into());
            }
            return Ok(Self {
                key,
                alg: Algorithm::ES256,
            });
        }
        match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self {
                key,
                alg: Algorithm::RS256,
            }),
            Err(_) => Err("not an EC P-256 or RSA public key in PEM".into()),
        }
    }

    /// The algorithm tokens must be signed with: `ES256` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        match self.alg {
            Algorithm::ES256 => "ES256",
            _ => "RS256",
        }
    }
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or an empty one, while authentication is on.
    #[error("a token is required")]
    Missing,
    /// A JWT whose `exp` (plus the leeway) has passed.
    #[error("the token has expired")]
    Expired,
    /// Anything else: not a JWT, a bad signature, an algorithm that is not
    /// configured, no `exp`, a wrong `aud`/`iss`, `nbf` in the future,
    /// malformed claims, or (with only `AUTH_KEY`) not the key. The detail
    /// says which, and never contains the token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The metrics label (`pantheon_auth_failures_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Which rooms a grant admits to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rooms {
    /// Every room (authentication off, or `AUTH_KEY`).
    All,
    /// Room names, and prefixes written with a trailing `*`.
    Listed(Vec<String>),
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    subject: Option<String>,
    rooms: Rooms,
    expires_at: Option<u64>,
    /// Whether `meta.user` belongs to the server (authentication on).
    owns_user: bool,
}

impl Grant {
    /// Authentication off: every room, no user, `meta` left as sent.
    pub fn open() -> Self {
        Self {
            subject: None,
            rooms: Rooms::All,
            expires_at: None,
            owns_user: false,
        }
    }

    fn shared_key() -> Self {
        Self {
            owns_user: true,
            ..Self::open()
        }
    }

    /// The token's `sub`, when it had one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The token's `exp` (Unix seconds), for JWTs.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// Whether `join` of `room` is allowed: the `rooms` claim lists it, or
    /// a prefix of it written with a trailing `*` (`*` alone: every room).
    /// A token without `rooms` joins nothing.
    pub fn allows(&self, room: &str) -> bool {
        match &self.rooms {
            Rooms::All => true,
            Rooms::Listed(list) => list.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => p == room,
            }),
        }
    }

    /// The `meta` to store for a `join`/`update`: with authentication on,
    /// `user` is the token's `sub` whatever the client sent (removed when
    /// the token has no `sub`); with it off, `meta` as sent.
    pub fn stamp(&self, meta: Meta) -> Result<Meta, FieldError> {
        if !self.owns_user {
            return Ok(meta);
        }
        let mut map = meta.to_map();
        let before = map.get("user").cloned();
        match &self.subject {
            Some(sub) => map.insert("user".into(), sub.clone().into()),
            None => map.remove("user"),
        };
        if map.get("user") == before.as_ref() {
            return Ok(meta);
        }
        Meta::from_map(&map)
    }

    /// The suffix of session secrets opened with this grant: it binds a
    /// session to its subject so that only the same subject can resume it
    /// (on any instance: the secret travels with the session). Empty
    /// without a subject.
    pub fn owner_tag(&self) -> String {
        match &self.subject {
            None => String::new(),
            Some(sub) => {
                let digest = Sha256::digest(sub.as_bytes());
                let mut tag = String::with_capacity(33);
                tag.push('-');
                for b in &digest[..16] {
                    tag.push_str(&format!("{b:02x}"));
                }
                tag
            }
        }
    }

    /// Whether a resume token (`welcome.session`) names a session of this
    /// grant's subject. The tag is not secret; the session secret around it
    /// is checked by the hub as before, so a forged tag fails there.
    pub fn owns(&self, session: &str) -> bool {
        let secret = session.rsplit_once('.').map_or("", |(_, s)| s);
        let tag = secret.find('-').map_or("", |i| &secret[i..]);
        tag == self.owner_tag()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    /// Required; optional here so that its absence is reported as such by
    /// the validation rather than as malformed claims.
    #[serde(default)]
    exp: Option<u64>,
}

/// Verifies tokens with the configured keys.
#[derive(Debug)]
pub struct Auth {
    settings: Settings,
    hs256: Option<Secret>,
    validation: Option<Validation>,
}

/// The HS256 decoding key, kept out of `Debug`.
struct Secret(DecodingKey);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Auth {
    /// Verification with these settings (authentication is off when none
    /// of the keys is set).
    pub fn new(settings: &Settings) -> Self {
        let hs256 = settings
            .jwt_secret
            .as_ref()
            .map(|s| Secret(DecodingKey::from_secret(s.expose().as_bytes())));
        let jwt = hs256.is_some() || settings.jwt_public_key.is_some();
        let validation = jwt.then(|| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_required_spec_claims(&["exp"]);
            v.leeway = settings.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            match &settings.audience {
                Some(aud) => {
                    v.set_audience(aud);
                    v.required_spec_claims.insert("aud".into());
                }
                // Unset: `aud` is not looked at (documented).
                None => v.validate_aud = false,
            }
            if let Some(iss) = &settings.issuer {
                v.set_issuer(iss);
                v.required_spec_claims.insert("iss".into());
            }
            v
        });
        Self {
            settings: settings.clone(),
            hs256,
            validation,
        }
    }

    /// Whether clients must present a token.
    pub fn is_enabled(&self) -> bool {
        self.settings.is_enabled()
    }

    /// Checks a token: `AUTH_KEY` admits to every room without a user; a
    /// JWT admits as its claims say. With authentication off every client
    /// is admitted ([`Grant::open`]) whatever it sends.
    pub fn verify(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        if !self.is_enabled() {
            return Ok(Grant::open());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("too long"));
        }
        // Digests first: equal lengths, so the comparison's time says
        // nothing about the key's length either.
        if let Some(key) = &self.settings.key
            && bool::from(
                Sha256::digest(token.as_bytes()).ct_eq(&Sha256::digest(key.expose().as_bytes())),
            )
        {
            return Ok(Grant::shared_key());
        }
        let Some(validation) = &self.validation else {
            return Err(AuthError::Invalid("not the shared key"));
        };
        let header = decode_header(token).map_err(|_| AuthError::Invalid("not a JWT"))?;
        let (key, alg) = match (header.alg, &self.hs256, &self.settings.jwt_public_key) {
            (Algorithm::HS256, Some(secret), _) => (&secret.0, Algorithm::HS256),
            (alg, _, Some(pk)) if alg == pk.alg => (&pk.key, pk.alg),
            _ => return Err(AuthError::Invalid("signing algorithm not accepted")),
        };
        let mut validation = validation.clone();
        validation.algorithms = vec![alg];
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if let Some(sub) = &claims.sub
            && (sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES || sub.contains(char::is_control))
        {
            return Err(AuthError::Invalid(
                "sub must be 1-256 bytes without control characters",
            ));
        }
        Ok(Grant {
            subject: claims.sub,
            rooms: Rooms::Listed(claims.rooms.unwrap_or_default()),
            expires_at: claims.exp,
            owns_user: true,
        })
    }
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => AuthError::Expired,
        K::InvalidSignature => AuthError::Invalid("bad signature"),
        K::MissingRequiredClaim(c) if c == "exp" => AuthError::Invalid("no exp claim"),
        K::MissingRequiredClaim(c) if c == "aud" => AuthError::Invalid("no aud claim"),
        K::MissingRequiredClaim(c) if c == "iss" => AuthError::Invalid("no iss claim"),
        K::InvalidAudience => AuthError::Invalid("wrong audience"),
        K::InvalidIssuer => AuthError::Invalid("wrong issuer"),
        K::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)"),
        K::InvalidAlgorithm => AuthError::Invalid("signing algorithm not accepted"),
        K::Json(_) => AuthError::Invalid("malformed claims"),
        _ => AuthError::Invalid("malformed token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::Secret as ConfigSecret;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const SECRET: &str = "an HS256 secret of at least thirty-two bytes";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn auth(f: impl FnOnce(&mut Settings)) -> Auth {
        let mut s = Settings {
            jwt_secret: Some(ConfigSecret::new(SECRET)),
            leeway: Duration::from_secs(5),
            ..Settings::default()
        };
        f(&mut s);
        Auth::new(&s)
    }

    #[test]
    fn off_admits_everyone_and_leaves_meta_alone() {
        let a = Auth::new(&Settings::default());
        let g = a.verify(None).unwrap();
        assert!(g.allows("any"));
        let meta: Meta = serde_json::from_str(r#"{"user":"me"}"#).unwrap();
        assert_eq!(g.stamp(meta.clone()).unwrap(), meta);
    }

    #[test]
    fn room_patterns() {
        let a = auth(|_| {});
        let t = hs256(json!({"exp": now() + 60, "rooms": ["lobby", "team-*"]}));
        let g = a.verify(Some(&t)).unwrap();
        assert!(g.allows("lobby"));
        assert!(!g.allows("lobby2"));
        assert!(g.allows("team-"));
        assert!(g.allows("team-a"));
        assert!(!g.allows("team"));
        let t = hs256(json!({"exp": now() + 60, "rooms": ["*"]}));
        assert!(a.verify(Some(&t)).unwrap().allows("anything"));
        let t = hs256(json!({"exp": now() + 60}));
        assert!(!a.verify(Some(&t)).unwrap().allows("lobby"));
    }

    #[test]
    fn refusals_by_reason() {
        let a = auth(|s| s.key = Some(ConfigSecret::new("legacy")));
        assert_eq!(a.verify(None), Err(AuthError::Missing));
        assert_eq!(a.verify(Some("")), Err(AuthError::Missing));
        assert_eq!(a.verify(Some("legacy")).map(|g| g.allows("x")), Ok(true));
        assert_eq!(
            a.verify(Some("legacy2")),
            Err(AuthError::Invalid("not a JWT"))
        );
        let t = hs256(json!({"exp": now() - 60}));
        assert_eq!(a.verify(Some(&t)), Err(AuthError::Expired));
        let t = hs256(json!({"sub": "x"}));
        assert_eq!(a.verify(Some(&t)), Err(AuthError::Invalid("no exp claim")));
        let t = hs256(json!({"exp": now() + 60, "rooms": "lobby"}));
        assert_eq!(
            a.verify(Some(&t)),
            Err(AuthError::Invalid("malformed claims"))
        );
        let t = hs256(json!({"exp": now() + 60, "sub": ""}));
        assert!(matches!(a.verify(Some(&t)), Err(AuthError::Invalid(_))));
        // Within the leeway, an expired token still passes.
        let t = hs256(json!({"exp": now() - 2}));
        assert!(a.verify(Some(&t)).is_ok());
    }

    #[test]
    fn shared_key_only() {
        let a = Auth::new(&Settings {
            key: Some(ConfigSecret::new("legacy")),
            ..Settings::default()
        });
        assert!(a.verify(Some("legacy")).is_ok());
        assert_eq!(
            a.verify(Some(&hs256(json!({"exp": now() + 60})))),
            Err(AuthError::Invalid("not the shared key"))
        );
    }

    #[test]
    fn user_is_stamped_from_sub() {
        let a = auth(|_| {});
        let g = a
            .verify(Some(&hs256(json!({"exp": now() + 60, "sub": "alice"}))))
            .unwrap();
        let meta: Meta = serde_json::from_str(r#"{"user":"mallory","x":1}"#).unwrap();
        assert_eq!(g.stamp(meta).unwrap().as_str(), r#"{"user":"alice","x":1}"#);
        let g = a.verify(Some(&hs256(json!({"exp": now() + 60})))).unwrap();
        let meta: Meta = serde_json::from_str(r#"{"user":"mallory","x":1}"#).unwrap();
        assert_eq!(g.stamp(meta).unwrap().as_str(), r#"{"x":1}"#);
    }

    #[test]
    fn sessions_are_bound_to_their_subject() {
        let a = auth(|_| {});
        let alice = a
            .verify(Some(&hs256(json!({"exp": now() + 60, "sub": "alice"}))))
            .unwrap();
        let bob = a
            .verify(Some(&hs256(json!({"exp": now() + 60, "sub": "bob"}))))
            .unwrap();
        let anon = a.verify(Some(&hs256(json!({"exp": now() + 60})))).unwrap();
        let session = format!("p_0123.abcdef{}", alice.owner_tag());
        assert!(alice.owns(&session));
        assert!(!bob.owns(&session));
        assert!(!anon.owns(&session));
        assert!(anon.owns("p_0123.abcdef"));
        assert!(!alice.owns("p_0123.abcdef"));
    }
}
