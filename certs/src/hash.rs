//! The certificate hash a browser pins with `serverCertificateHashes`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The body of `GET /webtransport/cert-hash` (PROTOCOL.md §8):
/// `{"algorithm":"sha-256","value":"<base64>","expires_at":"<RFC 3339>"}`.
///
/// A page passes `{algorithm, value}` (the value decoded to bytes) to
/// `new WebTransport(url, {serverCertificateHashes: [...]})`, and fetches a
/// fresh hash once `expires_at` is near.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertHash {
    /// Always `"sha-256"`, the only algorithm browsers accept.
    pub algorithm: &'static str,
    /// Standard (padded) base64 of the SHA-256 of the DER certificate:
    /// 44 characters.
    pub value: String,
    /// The certificate's `notAfter`, serialized as RFC 3339 in UTC.
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl CertHash {
    /// The hash of a DER certificate that expires at `expires_at`.
    pub fn of(cert_der: &[u8], expires_at: OffsetDateTime) -> Self {
        Self::from_digest(&sha256(cert_der), expires_at)
    }

    pub(crate) fn from_digest(digest: &[u8; 32], expires_at: OffsetDateTime) -> Self {
        Self {
            algorithm: "sha-256",
            value: STANDARD.encode(digest),
            expires_at,
        }
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn rfc3339<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    let text = at
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn serializes_as_protocol_section_8() {
        // FIPS 180-2's "abc" vector, ba7816bf…f20015ad, in base64.
        let hash = CertHash::of(b"abc", datetime!(2030-01-02 03:04:05 +02:00));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(
            json,
            r#"{"algorithm":"sha-256","value":"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=","expires_at":"2030-01-02T01:04:05Z"}"#
        );
        assert_eq!(hash.value.len(), 44);
    }
}
