//! Self-signed development certificates that browsers accept through
//! `serverCertificateHashes`.
//!
//! Chrome and Firefox pin such a certificate only when it is X.509v3, has an
//! ECDSA P-256 key and a validity period of at most 14 days; an RSA or Ed25519
//! key, or a 20-day certificate, is refused. [`DevCert`] keeps a day of margin.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::error::Error;
use crate::hash::{CertHash, sha256};

/// The longest validity [`DevCert::generate`] grants, `notBefore` to
/// `notAfter`: 13 days, a day short of the browsers' limit.
pub const MAX_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// How far before "now" a certificate's `notBefore` is set, so a client whose
/// clock runs a little behind still accepts it.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// A freshly generated self-signed ECDSA P-256 certificate and its key.
///
/// Debug output leaves the key out.
pub struct DevCert {
    hosts: Vec<String>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_der: PrivatePkcs8KeyDer<'static>,
    key_pem: String,
    sha256: [u8; 32],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl DevCert {
    /// The names a local development certificate covers.
    pub const LOCAL_HOSTS: [&'static str; 3] = ["localhost", "127.0.0.1", "::1"];

    /// A certificate for [`Self::LOCAL_HOSTS`], valid from [`BACKDATE`]
    /// before `now` for `validity` in total.
    ///
    /// `validity` must exceed [`BACKDATE`] (else the certificate would already
    /// have expired) and be at most [`MAX_VALIDITY`].
    pub fn generate(now: OffsetDateTime, validity: Duration) -> Result<Self, Error> {
        Self::generate_for(&Self::LOCAL_HOSTS, now, validity)
    }

    /// Like [`Self::generate`] for other names: each host that parses as an
    /// IP address becomes an IP SAN, any other a DNS SAN. The first host is
    /// also the subject's common name.
    pub fn generate_for(
        hosts: &[impl AsRef<str>],
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Self, Error> {
        if validity <= BACKDATE || validity > MAX_VALIDITY {
            return Err(Error::Validity {
                requested: validity,
            });
        }
        let hosts: Vec<String> = hosts.iter().map(|h| h.as_ref().to_owned()).collect();
        let Some(first) = hosts.first() else {
            return Err(Error::NoHosts);
        };

        // X.509 times have whole seconds; truncate so `not_after` is exactly
        // what the certificate says.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let not_before = now - BACKDATE;
        let not_after = not_before + validity;

        let mut params = CertificateParams::new(hosts.clone()).map_err(Error::Generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::Generate)?;
        let cert = params.self_signed(&key).map_err(Error::Generate)?;

        let cert_der = cert.der().clone();
        Ok(Self {
            hosts,
            sha256: sha256(&cert_der),
            cert_pem: pem("CERTIFICATE", &cert_der),
            cert_der,
            key_pem: pem("PRIVATE KEY", key.serialized_der()),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_before,
            not_after,
        })
    }

    /// The names (DNS and IP) the certificate covers.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of [`Self::cert_der`].
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The start of the validity period, [`BACKDATE`] before generation.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The end of the validity period.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// What `GET /webtransport/cert-hash` answers for this certificate.
    pub fn hash(&self) -> CertHash {
        CertHash::from_digest(&self.sha256, self.not_after)
    }

    /// The certificate and its signing key, for a rustls resolver.
    pub(crate) fn certified_key(&self, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
        CertifiedKey::from_der(vec![self.cert_der.clone()], self.key_der(), provider)
            .map_err(Error::Provider)
    }
}

/// RFC 7468 textual encoding: base64 in 64-character lines between labels.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so any byte boundary is a char boundary.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl fmt::Debug for DevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCert")
            .field("hosts", &self.hosts)
            .field("hash", &self.hash().value)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-06-01 12:00:00.75 UTC);

    #[test]
    fn validity_is_backdated_and_truncated_to_seconds() {
        let dev = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        assert_eq!(dev.not_before(), datetime!(2030-06-01 11:00:00 UTC));
        assert_eq!(dev.not_after(), datetime!(2030-06-14 11:00:00 UTC));
        assert_eq!(dev.hash().expires_at, dev.not_after());
    }

    #[test]
    fn validity_outside_bounds_is_refused() {
        for bad in [
            Duration::ZERO,
            BACKDATE,
            MAX_VALIDITY + Duration::from_secs(1),
            Duration::from_secs(20 * 24 * 3600),
        ] {
            let err = DevCert::generate(NOW, bad).unwrap_err();
            assert!(matches!(err, Error::Validity { requested } if requested == bad));
        }
    }

    #[test]
    fn no_hosts_is_refused() {
        let err = DevCert::generate_for(&[] as &[&str], NOW, MAX_VALIDITY).unwrap_err();
        assert!(matches!(err, Error::NoHosts));
    }

    #[test]
    fn each_generation_has_a_new_key() {
        let a = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        let b = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        assert_ne!(a.sha256(), b.sha256());
        assert_ne!(a.key_pem(), b.key_pem());
    }

    #[test]
    fn pem_round_trips_through_the_rustls_parser() {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject as _;

        let dev = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        let cert = CertificateDer::from_pem_slice(dev.cert_pem().as_bytes()).unwrap();
        assert_eq!(&cert, dev.cert_der());
        let key = PrivateKeyDer::from_pem_slice(dev.key_pem().as_bytes()).unwrap();
        assert_eq!(key, dev.key_der());
        assert!(dev.cert_pem().lines().all(|l| l.len() <= 64));
        assert!(dev.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(dev.key_pem().ends_with("-----END PRIVATE KEY-----\n"));
    }

    #[test]
    fn debug_leaves_the_key_out() {
        let dev = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        let debug = format!("{dev:?}");
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(!debug.contains("key_der"));
    }

    #[test]
    fn key_and_certificate_match() {
        let dev = DevCert::generate(NOW, MAX_VALIDITY).unwrap();
        let key = dev
            .certified_key(&rustls::crypto::ring::default_provider())
            .unwrap();
        key.keys_match().unwrap();
    }
}
