//! TLS for `wss://`: which server certificates the client trusts, the same
//! choice as for WebTransport ([`crate::Options::cert_hashes`],
//! [`crate::Options::insecure_skip_verify`], else the system's roots).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// Which server certificates a `wss://` connection accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trust<'a> {
    /// SHA-256 digests of accepted certificates; when empty, the system's
    /// roots decide.
    pub(crate) cert_hashes: &'a [[u8; 32]],
    /// Accept any certificate (tests only).
    pub(crate) insecure: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's root certificates, loaded once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "loading a system root certificate");
            }
            let (_added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "unparsable system root certificates");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The client configuration for `trust`.
pub(crate) fn client_config(trust: Trust<'_>) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if trust.insecure || !trust.cert_hashes.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                hashes: if trust.insecure {
                    None
                } else {
                    Some(trust.cert_hashes.to_vec())
                },
                provider,
            }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    };
    Ok(config)
}

/// Accepts the certificates with the given digests (`None`: any), still
/// checking that the server holds the certificate's key.
#[derive(Debug)]
struct Pinned {
    hashes: Option<Vec<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.hashes {
            None => Ok(ServerCertVerified::assertion()),
            Some(hashes) => {
                let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if hashes.contains(&digest) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
