//! Loading PEM files, the errors for bad ones, and reloading replacements.

use std::fs;
use std::path::{Path, PathBuf};

use pantheon_certs::{
    DevCert, Error, MAX_PEM_FILE, MAX_VALIDITY, Source, Store, write_dev_cert,
    write_dev_cert_to_dir,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use time::OffsetDateTime;

fn dev() -> DevCert {
    DevCert::generate(OffsetDateTime::now_utc(), MAX_VALIDITY).unwrap()
}

fn files(cert: &Path, key: &Path) -> Source {
    Source::Files {
        cert: cert.to_owned(),
        key: key.to_owned(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn written_files_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev();
    let (cert, key) = write_dev_cert_to_dir(&dev, &dir.path().join("tls")).unwrap();
    assert_eq!(cert, dir.path().join("tls/cert.pem"));
    assert_eq!(fs::read_to_string(&cert).unwrap(), dev.cert_pem());
    assert_eq!(fs::read_to_string(&key).unwrap(), dev.key_pem());

    let store = Store::new(files(&cert, &key)).unwrap();
    assert_eq!(&store.current_der(), dev.cert_der());
    assert_eq!(
        store.current_hash(),
        None,
        "no hash for certificates from files"
    );
}

#[cfg(unix)]
#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    // An existing world-readable key file is replaced, not reused.
    fs::write(&key, "old").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    write_dev_cert(&dev(), &cert, &key).unwrap();
    let mode = fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left behind");
}

#[test]
fn sec1_and_pkcs1_keys_load() {
    for (cert, key) in [
        ("ec.cert.pem", "ec-sec1.key.pem"),
        ("rsa.cert.pem", "rsa-pkcs1.key.pem"),
    ] {
        let store = Store::new(files(&fixture(cert), &fixture(key)))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let expected = CertificateDer::from_pem_file(fixture(cert)).unwrap();
        assert_eq!(store.current_der(), expected);
    }
}

/// Writes `cert` and `key` contents and returns the error loading them.
fn load_error(cert: &[u8], key: &[u8]) -> (Error, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    fs::write(&cert_path, cert).unwrap();
    fs::write(&key_path, key).unwrap();
    let error = Store::new(files(&cert_path, &key_path)).unwrap_err();
    (error, cert_path, key_path)
}

#[test]
fn missing_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev();
    let (cert, key) = write_dev_cert_to_dir(&dev, dir.path()).unwrap();
    let nowhere = dir.path().join("nowhere.pem");

    let error = Store::new(files(&nowhere, &key)).unwrap_err();
    assert!(matches!(&error, Error::ReadCert { path, .. } if *path == nowhere));
    assert!(
        error
            .to_string()
            .starts_with(&format!("certificate file {}: ", nowhere.display()))
    );

    let error = Store::new(files(&cert, &nowhere)).unwrap_err();
    assert!(matches!(&error, Error::ReadKey { path, .. } if *path == nowhere));
    assert!(
        error
            .to_string()
            .starts_with(&format!("private key file {}: ", nowhere.display()))
    );
}

#[test]
fn empty_or_keyless_certificate_file_has_no_certificate() {
    let dev = dev();
    for cert in [&b""[..], dev.key_pem().as_bytes(), b"just some text\n"] {
        let (error, cert_path, _) = load_error(cert, dev.key_pem().as_bytes());
        assert!(matches!(&error, Error::NoCert { path } if *path == cert_path));
        assert_eq!(
            error.to_string(),
            format!(
                "certificate file {}: no certificate found",
                cert_path.display()
            )
        );
    }
}

#[test]
fn truncated_pem_is_malformed() {
    let dev = dev();
    let half = &dev.cert_pem()[..dev.cert_pem().len() / 2];
    let (error, cert_path, _) = load_error(half.as_bytes(), dev.key_pem().as_bytes());
    assert!(matches!(&error, Error::CertPem { path, .. } if *path == cert_path));
    assert!(error.to_string().contains("malformed PEM"));

    let half = &dev.key_pem()[..dev.key_pem().len() / 2];
    let (error, _, key_path) = load_error(dev.cert_pem().as_bytes(), half.as_bytes());
    assert!(matches!(&error, Error::KeyPem { path, .. } if *path == key_path));
}

#[test]
fn key_file_without_key_is_refused() {
    let dev = dev();
    let (error, _, key_path) = load_error(dev.cert_pem().as_bytes(), dev.cert_pem().as_bytes());
    assert!(matches!(&error, Error::NoKey { path } if *path == key_path));
    assert!(error.to_string().contains("no private key found"));

    // Encrypted keys are not read.
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let (error, _, _) = load_error(dev.cert_pem().as_bytes(), encrypted.as_bytes());
    assert!(matches!(error, Error::NoKey { .. }));
}

#[test]
fn garbage_key_is_unsupported() {
    let dev = dev();
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
    let (error, _, key_path) = load_error(dev.cert_pem().as_bytes(), garbage.as_bytes());
    assert!(matches!(&error, Error::UnsupportedKey { path, .. } if *path == key_path));
}

#[test]
fn garbage_certificate_is_invalid() {
    let dev = dev();
    let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let (error, cert_path, _) = load_error(garbage.as_bytes(), dev.key_pem().as_bytes());
    assert!(matches!(&error, Error::BadCert { path, .. } if *path == cert_path));
}

#[test]
fn key_of_another_certificate_is_a_mismatch() {
    let (a, b) = (dev(), dev());
    let (error, cert_path, key_path) = load_error(a.cert_pem().as_bytes(), b.key_pem().as_bytes());
    assert!(
        matches!(&error, Error::KeyMismatch { cert, key } if *cert == cert_path && *key == key_path)
    );
    assert_eq!(
        error.to_string(),
        format!(
            "private key file {} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        )
    );
}

#[test]
fn oversized_file_is_not_read_whole() {
    let dev = dev();
    let mut big = dev.cert_pem().as_bytes().to_vec();
    big.resize(MAX_PEM_FILE as usize + 1, b'\n');
    let (error, cert_path, _) = load_error(&big, dev.key_pem().as_bytes());
    assert!(matches!(&error, Error::TooLarge { path, .. } if *path == cert_path));
}

#[test]
fn reload_picks_up_replaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dev(), dev());
    let (cert, key) = write_dev_cert_to_dir(&first, dir.path()).unwrap();
    let store = Store::new(files(&cert, &key)).unwrap();
    assert_eq!(&store.current_der(), first.cert_der());

    assert!(
        !store.reload_now().unwrap(),
        "unchanged files are not reloaded"
    );

    write_dev_cert(&second, &cert, &key).unwrap();
    assert!(store.reload_now().unwrap());
    assert_eq!(&store.current_der(), second.cert_der());
}

#[test]
fn broken_replacement_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dev(), dev());
    let (cert, key) = write_dev_cert_to_dir(&first, dir.path()).unwrap();
    let store = Store::new(files(&cert, &key)).unwrap();

    // Half-way through a replacement: the new key beside the old certificate.
    fs::write(&key, second.key_pem()).unwrap();
    assert!(matches!(store.reload_now(), Err(Error::KeyMismatch { .. })));
    assert_eq!(&store.current_der(), first.cert_der());
    // A poll reports the same broken contents once, then waits for a change.
    let now = OffsetDateTime::now_utc();
    assert!(store.poll(now).is_ok_and(|swapped| !swapped));
    assert_eq!(&store.current_der(), first.cert_der());

    fs::write(&cert, "not a certificate").unwrap();
    assert!(matches!(store.poll(now), Err(Error::NoCert { .. })));
    fs::remove_file(&cert).unwrap();
    assert!(matches!(store.poll(now), Err(Error::ReadCert { .. })));
    assert_eq!(&store.current_der(), first.cert_der());

    // Once the replacement is complete, the next poll serves it.
    fs::write(&cert, second.cert_pem()).unwrap();
    assert!(store.poll(now).unwrap());
    assert_eq!(&store.current_der(), second.cert_der());
}
