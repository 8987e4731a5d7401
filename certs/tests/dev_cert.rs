//! The generated certificate is one browsers pin with `serverCertificateHashes`.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pantheon_certs::{BACKDATE, DevCert, MAX_VALIDITY};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::X509Version;

const FOURTEEN_DAYS: i64 = 14 * 24 * 3600;

#[test]
fn is_ecdsa_p256_with_local_sans_valid_at_most_14_days() {
    let now = OffsetDateTime::now_utc();
    let dev = DevCert::generate(now, MAX_VALIDITY).unwrap();
    let (rest, cert) = X509Certificate::from_der(dev.cert_der()).unwrap();
    assert!(rest.is_empty());

    assert_eq!(cert.version(), X509Version::V3);
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);
    assert_eq!(
        cert.signature_algorithm.algorithm,
        OID_SIG_ECDSA_WITH_SHA256
    );
    assert_eq!(cert.subject(), cert.issuer(), "self-signed");

    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                n => panic!("IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(dns, ["localhost"]);
    assert_eq!(
        ips,
        [
            "127.0.0.1".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );

    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(not_after - not_before <= FOURTEEN_DAYS);
    assert_eq!(not_after - not_before, MAX_VALIDITY.as_secs() as i64);
    assert!(
        not_before < now.unix_timestamp(),
        "valid from slightly in the past"
    );
    assert!(not_before >= (now - BACKDATE).unix_timestamp() - 1);
    assert_eq!(not_after, dev.not_after().unix_timestamp());
    assert!(cert.validity().is_valid());

    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    let ca = cert.basic_constraints().unwrap();
    assert!(ca.is_none_or(|bc| !bc.value.ca), "not a CA");
}

#[test]
fn other_hosts_become_dns_and_ip_sans() {
    let now = OffsetDateTime::now_utc();
    let dev = DevCert::generate_for(&["gw.test", "10.0.0.7"], now, MAX_VALIDITY).unwrap();
    let (_, cert) = X509Certificate::from_der(dev.cert_der()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [
            GeneralName::DNSName("gw.test"),
            GeneralName::IPAddress(&[10, 0, 0, 7])
        ]
    );
    assert_eq!(dev.hosts(), ["gw.test", "10.0.0.7"]);
}

#[test]
fn hash_is_base64_sha256_of_the_der() {
    let dev = DevCert::generate(OffsetDateTime::now_utc(), MAX_VALIDITY).unwrap();
    let digest: [u8; 32] = Sha256::digest(dev.cert_der()).into();
    assert_eq!(dev.sha256(), digest);

    let hash = dev.hash();
    assert_eq!(hash.algorithm, "sha-256");
    assert_eq!(hash.value.len(), 44);
    assert_eq!(STANDARD.decode(&hash.value).unwrap(), digest);

    let json: serde_json::Value = serde_json::to_value(&hash).unwrap();
    let expires_at = json["expires_at"].as_str().unwrap();
    assert_eq!(
        OffsetDateTime::parse(expires_at, &Rfc3339).unwrap(),
        dev.not_after()
    );
    assert!(expires_at.ends_with('Z'));
    assert_eq!(json.as_object().unwrap().len(), 3);
}
