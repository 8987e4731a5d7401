//! The one error type of this crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::pem;

/// Why TLS material could not be loaded, generated or written.
///
/// Messages name the file and what is wrong with it, so a caller can prefix
/// the setting it came from (`TLS_CERT: certificate file /x.pem: …`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The certificate file could not be opened or read.
    #[error("certificate file {path}: {source}")]
    ReadCert {
        /// The certificate file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },

    /// The private key file could not be opened or read.
    #[error("private key file {path}: {source}")]
    ReadKey {
        /// The private key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },

    /// A file is larger than any sane PEM bundle ([`crate::MAX_PEM_FILE`]).
    #[error("{path}: larger than {limit} bytes, not a PEM file")]
    TooLarge {
        /// The offending file.
        path: PathBuf,
        /// The limit it exceeds.
        limit: u64,
    },

    /// The certificate file is not well-formed PEM.
    #[error("certificate file {path}: malformed PEM: {source}")]
    CertPem {
        /// The certificate file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: pem::Error,
    },

    /// The certificate file holds no `CERTIFICATE` section.
    #[error("certificate file {path}: no certificate found")]
    NoCert {
        /// The certificate file.
        path: PathBuf,
    },

    /// The leaf certificate is not a valid X.509 certificate.
    #[error("certificate file {path}: invalid certificate: {source}")]
    BadCert {
        /// The certificate file.
        path: PathBuf,
        /// What rustls found wrong.
        source: rustls::Error,
    },

    /// The key file is not well-formed PEM.
    #[error("private key file {path}: malformed PEM: {source}")]
    KeyPem {
        /// The private key file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: pem::Error,
    },

    /// The key file holds no unencrypted PKCS#8, SEC1 or PKCS#1 key.
    #[error(
        "private key file {path}: no private key found \
         (expected an unencrypted PKCS#8, SEC1 or PKCS#1 PEM key)"
    )]
    NoKey {
        /// The private key file.
        path: PathBuf,
    },

    /// The key parses but the crypto provider cannot sign with it.
    #[error("private key file {path}: unsupported key: {source}")]
    UnsupportedKey {
        /// The private key file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },

    /// The key is not the one the leaf certificate was issued for.
    #[error("private key file {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },

    /// A self-signed certificate was asked for with no host name.
    #[error("self-signed certificate: no host names given")]
    NoHosts,

    /// A self-signed certificate's requested validity is outside what
    /// browsers accept for `serverCertificateHashes`.
    #[error(
        "self-signed certificate: validity of {requested:?} is outside \
         ({backdate:?}, {max:?}]",
        backdate = crate::BACKDATE,
        max = crate::MAX_VALIDITY
    )]
    Validity {
        /// The validity asked for.
        requested: Duration,
    },

    /// rcgen could not build or sign the certificate.
    #[error("self-signed certificate: {0}")]
    Generate(#[source] rcgen::Error),

    /// The generated key was refused by the crypto provider (a bug if seen).
    #[error("self-signed certificate: key refused by the crypto provider: {0}")]
    Provider(#[source] rustls::Error),

    /// A certificate or key file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}
