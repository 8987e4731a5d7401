//! [`Store`]: the certificate the server presents, swappable while it runs.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use time::OffsetDateTime;

use crate::dev_cert::{DevCert, MAX_VALIDITY};
use crate::error::Error;
use crate::hash::CertHash;
use crate::load::Contents;

/// A self-signed certificate is replaced once at most this much of its
/// validity remains, which leaves browsers time to fetch the new hash.
pub const ROTATE_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// PEM files: `cert` holds the chain, leaf first; `key` an unencrypted
    /// PKCS#8, SEC1 or PKCS#1 key. Re-read when their contents change.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// A [`DevCert`] generated in memory for these hosts, replaced before it
    /// expires; its hash is published for `serverCertificateHashes`.
    SelfSigned {
        /// DNS names and IP addresses the certificate covers.
        hosts: Vec<String>,
    },
}

impl Source {
    /// A self-signed certificate for [`DevCert::LOCAL_HOSTS`].
    pub fn self_signed_local() -> Self {
        Self::SelfSigned {
            hosts: DevCert::LOCAL_HOSTS.map(str::to_owned).to_vec(),
        }
    }
}

/// The certificate served now.
struct Current {
    key: Arc<CertifiedKey>,
    origin: Origin,
}

enum Origin {
    /// Digest of the file contents this certificate was loaded from.
    Files {
        digest: [u8; 32],
    },
    SelfSigned {
        hash: CertHash,
    },
}

/// Holds the server's certificate and key, and hands them to rustls.
///
/// Every handshake asks the store ([`ResolvesServerCert`]), so a reload or a
/// rotation applies to the next handshake while established sessions keep
/// the certificate they started with. A failed reload keeps the old one.
pub struct Store {
    source: Source,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Current>>,
    /// Serializes reloads; for files, the digest of contents last refused,
    /// so a broken file is reported once rather than at every poll.
    reload: Mutex<Option<[u8; 32]>>,
}

impl Store {
    /// Loads or generates the certificate. Uses the ring provider whatever
    /// the process default is.
    pub fn new(source: Source) -> Result<Self, Error> {
        Self::new_at(source, OffsetDateTime::now_utc())
    }

    /// Like [`Self::new`], with "now" given for a self-signed certificate.
    pub fn new_at(source: Source, now: OffsetDateTime) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load(&source, &provider, now)?;
        Ok(Self {
            source,
            provider,
            current: RwLock::new(Arc::new(current)),
            reload: Mutex::new(None),
        })
    }

    /// Where the certificate comes from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A server configuration presenting this store's certificate, with TLS
    /// 1.3 and 1.2 and the given ALPN protocols (`h3` for WebTransport,
    /// `http/1.1` for HTTPS and WSS).
    ///
    /// For quinn, wrap it in `QuicServerConfig::try_from(Arc::new(..))`: QUIC
    /// negotiates TLS 1.3 only, whatever else the configuration allows.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&TLS13, &TLS12])
            .expect("the ring provider supports TLS 1.3 and 1.2")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// The hash browsers pin, while the certificate is self-signed; `None`
    /// for certificates loaded from files.
    pub fn current_hash(&self) -> Option<CertHash> {
        match &self.current().origin {
            Origin::SelfSigned { hash } => Some(hash.clone()),
            Origin::Files { .. } => None,
        }
    }

    /// The leaf certificate served now, DER.
    pub fn current_der(&self) -> CertificateDer<'static> {
        self.current().key.cert[0].clone()
    }

    /// Reloads now: re-reads the files (swapping only if they changed), or
    /// generates a new self-signed certificate. `Ok(true)` when a new
    /// certificate is now served; on error the old one stays.
    pub fn reload_now(&self) -> Result<bool, Error> {
        self.refresh(OffsetDateTime::now_utc(), true)
    }

    /// One maintenance pass as of `now`: reload files that changed, or
    /// rotate a self-signed certificate with at most [`ROTATE_BEFORE`] left.
    /// `Ok(true)` when a new certificate is now served; on error the old one
    /// stays. File contents already refused are not retried (`Ok(false)`)
    /// until they change again.
    pub fn poll(&self, now: OffsetDateTime) -> Result<bool, Error> {
        self.refresh(now, false)
    }

    fn refresh(&self, now: OffsetDateTime, forced: bool) -> Result<bool, Error> {
        let mut refused = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current();
        let next = match (&self.source, &current.origin) {
            (Source::Files { cert, key }, Origin::Files { digest }) => {
                let contents = Contents::read(cert, key)?;
                let new_digest = contents.digest();
                if new_digest == *digest || (!forced && *refused == Some(new_digest)) {
                    return Ok(false);
                }
                match contents.parse(cert, key, &self.provider) {
                    Ok(key) => Current {
                        key: Arc::new(key),
                        origin: Origin::Files { digest: new_digest },
                    },
                    Err(error) => {
                        *refused = Some(new_digest);
                        return Err(error);
                    }
                }
            }
            (Source::SelfSigned { .. }, Origin::SelfSigned { hash }) => {
                if !forced && hash.expires_at - now > ROTATE_BEFORE {
                    return Ok(false);
                }
                load(&self.source, &self.provider, now)?
            }
            _ => unreachable!("the origin always matches the source"),
        };
        *refused = None;
        match &next.origin {
            Origin::Files { .. } => {
                tracing::info!(source = ?self.source, "TLS certificate reloaded")
            }
            Origin::SelfSigned { hash } => tracing::info!(
                hash = %hash.value,
                expires_at = %hash.expires_at,
                "self-signed TLS certificate rotated"
            ),
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(true)
    }

    fn current(&self) -> Arc<Current> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

fn load(source: &Source, provider: &CryptoProvider, now: OffsetDateTime) -> Result<Current, Error> {
    match source {
        Source::Files { cert, key } => {
            let contents = Contents::read(cert, key)?;
            let certified = contents.parse(cert, key, provider)?;
            Ok(Current {
                key: Arc::new(certified),
                origin: Origin::Files {
                    digest: contents.digest(),
                },
            })
        }
        Source::SelfSigned { hosts } => {
            let dev = DevCert::generate_for(hosts, now, MAX_VALIDITY)?;
            Ok(Current {
                key: Arc::new(dev.certified_key(provider)?),
                origin: Origin::SelfSigned { hash: dev.hash() },
            })
        }
    }
}

impl ResolvesServerCert for Store {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current().key))
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("source", &self.source)
            .field("hash", &self.current_hash().map(|h| h.value))
            .finish_non_exhaustive()
    }
}
