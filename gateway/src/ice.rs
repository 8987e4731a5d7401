//! ICE servers for clients (PROTOCOL.md §3, §8): the configured STUN URLs,
//! and TURN URLs with time-limited credentials in the TURN REST API form
//! that coturn's `use-auth-secret` checks
//! (draft-uberti-behave-turn-rest-00 §2.2):
//! `username = "<expiry unix time>:<user>"`,
//! `credential = base64(HMAC-SHA1(secret, username))`.

use crate::config::auth::{Ice as Settings, Secret};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use pantheon_protocol::IceServer;
use sha1::Sha1;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Issues ICE server lists.
#[derive(Debug, Clone)]
pub struct Ice {
    stun_urls: Vec<String>,
    turn_urls: Vec<String>,
    turn_secret: Option<Secret>,
    ttl: Duration,
}

impl Ice {
    /// From the validated settings.
    pub fn new(settings: &Settings) -> Self {
        Self {
            stun_urls: settings.stun_urls.clone(),
            turn_urls: settings.turn_urls.clone(),
            turn_secret: settings.turn_secret.clone(),
            ttl: settings.turn_ttl,
        }
    }

    /// Whether any STUN or TURN server is configured.
    pub fn is_configured(&self) -> bool {
        !self.stun_urls.is_empty() || !self.turn_urls.is_empty()
    }

    /// How long issued TURN credentials are valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The servers for `user` (a peer id, or the user part of a
    /// `/turn-token` answer): one entry per URL, STUN first; the TURN
    /// entries share one credential valid until `now + TURN_TTL`. Empty
    /// when nothing is configured.
    pub fn servers(&self, user: &str, now: SystemTime) -> Vec<IceServer> {
        let mut out: Vec<IceServer> = self
            .stun_urls
            .iter()
            .map(|u| IceServer {
                urls: u.clone(),
                username: None,
                credential: None,
            })
            .collect();
        if let Some(secret) = &self.turn_secret {
            let expiry = (now + self.ttl)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let username = format!("{expiry}:{user}");
            let credential = credential(secret.expose().as_bytes(), &username);
            out.extend(self.turn_urls.iter().map(|u| IceServer {
                urls: u.clone(),
                username: Some(username.clone()),
                credential: Some(credential.clone()),
            }));
        }
        out
    }
}

/// The TURN REST API password for `username`:
/// base64(HMAC-SHA1(secret, username)).
pub fn credential(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2202 §3 (HMAC-SHA1 test cases 1, 2 and 6), base64-encoded as
    /// the TURN REST API transmits them: the credential function is
    /// HMAC-SHA1 keyed with the shared secret over the username.
    #[test]
    fn rfc2202_vectors() {
        // Case 1: key = 0x0b × 20, data = "Hi There",
        // digest = 0xb617318655057264e28bc0b6fb378c8ef146be00.
        assert_eq!(
            credential(&[0x0b; 20], "Hi There"),
            "thcxhlUFcmTii8C2+zeMjvFGvgA="
        );
        // Case 2: key = "Jefe", data = "what do ya want for nothing?",
        // digest = 0xeffcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            credential(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        // Case 6: key = 0xaa × 80 (longer than the block), data =
        // "Test Using Larger Than Block-Size Key - Hash Key First",
        // digest = 0xaa4ae5e15272d00e95705637ce8a3b55ed402112.
        assert_eq!(
            credential(
                &[0xaa; 80],
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "qkrl4VJy0A6VcFY3zoo7Ve1AIRI="
        );
    }

    /// The TURN REST API form (draft-uberti-behave-turn-rest-00 §2.2,
    /// coturn README.turnserver `--use-auth-secret`): username
    /// `<expiry>:<user>`, password base64(HMAC-SHA1(secret, username)).
    /// The expected password was computed independently with
    /// `printf %s '1767225600:p_6f1c2e' | openssl dgst -sha1 -hmac north -binary | base64`.
    #[test]
    fn turn_rest_api_form() {
        let ice = Ice::new(&Settings {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec![
                "turn:turn.example.org:3478".into(),
                "turns:turn.example.org:5349".into(),
            ],
            turn_secret: Some(Secret::new("north")),
            turn_ttl: Duration::from_secs(86_400),
        });
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600 - 86_400);
        let servers = ice.servers("p_6f1c2e", now);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[0].urls, "stun:stun.example.org:3478");
        assert_eq!(servers[0].username, None);
        for s in &servers[1..] {
            assert_eq!(s.username.as_deref(), Some("1767225600:p_6f1c2e"));
            assert_eq!(
                s.credential.as_deref(),
                Some("ZKYdcMvtxfA8ixzyJd9jXcweqFI=")
            );
        }
    }
}
