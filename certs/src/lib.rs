//! TLS material for the Pantheon gateway, which this crate knows nothing of.
//!
//! One certificate serves both listeners: quinn (WebTransport over HTTP/3)
//! and HTTPS/WSS on the TCP port (tokio-rustls). All cryptography is rustls
//! 0.23 with the ring provider.
//!
//! - [`dev_cert`]: [`DevCert`], a self-signed ECDSA P-256 certificate for
//!   `localhost`, `127.0.0.1` and `::1`, valid at most [`MAX_VALIDITY`] — the
//!   kind browsers accept through `serverCertificateHashes`.
//! - [`hash`]: [`CertHash`], the JSON body of `GET /webtransport/cert-hash`.
//! - [`store`]: [`Store`], built from a [`Source`] (PEM files or
//!   self-signed), is the rustls certificate resolver, builds
//!   [`rustls::ServerConfig`]s ([`Store::server_config`]) and swaps in a new
//!   certificate on [`Store::reload_now`] or [`Store::poll`] without
//!   disturbing established sessions.
//! - `maintenance` (feature `tokio`, on by default):
//!   [`Store::spawn_maintenance`] polls on a timer, reloading changed files
//!   and rotating a self-signed certificate [`ROTATE_BEFORE`] it expires.
//! - [`write`](mod@write): [`write_dev_cert`] writes a [`DevCert`] as PEM files (key
//!   mode 0600) for `pantheon gen-cert`.
//! - [`error`]: [`Error`], every way the above can fail, naming the file.
//!
//! ```
//! use std::sync::Arc;
//! use pantheon_certs::{Source, Store};
//!
//! let store = Arc::new(Store::new(Source::self_signed_local())?);
//! let h3 = store.server_config(&[b"h3"]);
//! let https = store.server_config(&[b"http/1.1"]);
//! let hash = store.current_hash().expect("self-signed");
//! assert_eq!(hash.algorithm, "sha-256");
//! # let _ = (h3, https);
//! # Ok::<(), pantheon_certs::Error>(())
//! ```

pub mod dev_cert;
pub mod error;
pub mod hash;
mod load;
#[cfg(feature = "tokio")]
mod maintenance;
pub mod store;
pub mod write;

pub use dev_cert::{BACKDATE, DevCert, MAX_VALIDITY};
pub use error::Error;
pub use hash::CertHash;
pub use load::MAX_PEM_FILE;
pub use store::{ROTATE_BEFORE, Source, Store};
pub use write::{write_dev_cert, write_dev_cert_to_dir};
