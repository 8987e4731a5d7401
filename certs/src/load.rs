//! Reading a PEM certificate chain and private key from files.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys};

use crate::error::Error;
use crate::hash::sha256;

/// The largest certificate or key file read: a long chain is a few tens of
/// kilobytes, and the limit keeps a mistaken path (a log, `/dev/zero`) from
/// being read whole.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The raw contents of a certificate file and a key file.
pub(crate) struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    /// Reads both files.
    pub(crate) fn read(cert: &Path, key: &Path) -> Result<Self, Error> {
        Ok(Self {
            cert: read_limited(cert).map_err(|e| e.into_error(cert, Role::Cert))?,
            key: read_limited(key).map_err(|e| e.into_error(key, Role::Key))?,
        })
    }

    /// A digest of both files, to tell whether either changed.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut all = Vec::with_capacity(8 + self.cert.len() + self.key.len());
        all.extend_from_slice(&(self.cert.len() as u64).to_be_bytes());
        all.extend_from_slice(&self.cert);
        all.extend_from_slice(&self.key);
        sha256(&all)
    }

    /// Parses the chain and key and checks that they belong together.
    /// `cert_path` and `key_path` only name the files in errors.
    pub(crate) fn parse(
        &self,
        cert_path: &Path,
        key_path: &Path,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, Error> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::CertPem {
                path: cert_path.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(Error::NoCert {
                path: cert_path.to_owned(),
            });
        }

        let key = match PrivateKeyDer::from_pem_slice(&self.key) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => {
                return Err(Error::NoKey {
                    path: key_path.to_owned(),
                });
            }
            Err(source) => {
                return Err(Error::KeyPem {
                    path: key_path.to_owned(),
                    source,
                });
            }
        };
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| Error::UnsupportedKey {
                path: key_path.to_owned(),
                source,
            })?;

        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            // The provider could not tell the key's public half: let the
            // handshake be the judge rather than refuse a possibly good pair.
            Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
            Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                Err(Error::KeyMismatch {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                })
            }
            Err(source) => Err(Error::BadCert {
                path: cert_path.to_owned(),
                source,
            }),
        }
    }
}

enum Role {
    Cert,
    Key,
}

enum ReadError {
    Io(io::Error),
    TooLarge,
}

impl ReadError {
    fn into_error(self, path: &Path, role: Role) -> Error {
        let path: PathBuf = path.to_owned();
        match (self, role) {
            (Self::TooLarge, _) => Error::TooLarge {
                path,
                limit: MAX_PEM_FILE,
            },
            (Self::Io(source), Role::Cert) => Error::ReadCert { path, source },
            (Self::Io(source), Role::Key) => Error::ReadKey { path, source },
        }
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}
