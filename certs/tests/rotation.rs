//! Rotation of self-signed certificates, with "now" injected.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pantheon_certs::{
    BACKDATE, DevCert, Error, MAX_VALIDITY, ROTATE_BEFORE, Source, Store, write_dev_cert_to_dir,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);
const DAY: Duration = Duration::from_secs(24 * 3600);

#[test]
fn self_signed_rotates_when_at_most_two_days_remain() {
    let store = Store::new_at(Source::self_signed_local(), T0).unwrap();
    let first = store.current_hash().unwrap();
    assert_eq!(first.expires_at, T0 - BACKDATE + MAX_VALIDITY);
    let first_der = store.current_der();

    // Just over two days left: kept.
    let early = first.expires_at - ROTATE_BEFORE - Duration::from_secs(1);
    assert!(!store.poll(early).unwrap());
    assert_eq!(store.current_hash().as_ref(), Some(&first));
    assert_eq!(store.current_der(), first_der);

    // Two days left: replaced by a certificate generated as of that time.
    let due = first.expires_at - ROTATE_BEFORE;
    assert!(store.poll(due).unwrap());
    let second = store.current_hash().unwrap();
    assert_ne!(second.value, first.value);
    assert_eq!(second.expires_at, due - BACKDATE + MAX_VALIDITY);
    assert_ne!(store.current_der(), first_der);
    let digest = Sha256::digest(store.current_der());
    assert_eq!(STANDARD.decode(&second.value).unwrap(), digest.as_slice());

    // The new certificate is not due again.
    assert!(!store.poll(due).unwrap());
    assert!(!store.poll(due + 9 * DAY).unwrap());
    assert_eq!(store.current_hash().as_ref(), Some(&second));

    // Even one found expired (a suspended laptop) is replaced.
    assert!(store.poll(second.expires_at + 30 * DAY).unwrap());
}

#[test]
fn reload_now_regenerates_a_self_signed_certificate() {
    let store = Store::new(Source::self_signed_local()).unwrap();
    let first = store.current_hash().unwrap();
    assert!(store.reload_now().unwrap());
    assert_ne!(store.current_hash().unwrap().value, first.value);
}

#[test]
fn self_signed_needs_a_host() {
    let error = Store::new(Source::SelfSigned { hosts: vec![] }).unwrap_err();
    assert!(matches!(error, Error::NoHosts));
}

#[test]
fn files_are_never_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevCert::generate(T0, MAX_VALIDITY).unwrap();
    let (cert, key) = write_dev_cert_to_dir(&dev, dir.path()).unwrap();
    let store = Store::new(Source::Files { cert, key }).unwrap();
    // Long past expiry: replacing the files is the operator's job.
    assert!(!store.poll(T0 + 365 * DAY).unwrap());
    assert_eq!(&store.current_der(), dev.cert_der());
}
