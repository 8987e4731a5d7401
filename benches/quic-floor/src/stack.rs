//! One connection = one byte stream each way, whatever the stack: the
//! listeners and connectors of the four stacks, and the writer that sends a
//! batch of messages the cheapest way each stack offers.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::Stack;

/// The server's UDP socket buffers, like the gateway's WebTransport listener
/// (gateway/src/webtransport.rs `udp_socket`).
const UDP_BUFFER: usize = 4 * 1024 * 1024;
pub(crate) const ALPN: &[u8] = b"floor";

/// One accepted or opened connection's single stream.
pub(crate) struct Conn {
    pub(crate) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) writer: Writer,
    /// The connection handle, for stacks that close a connection when it is
    /// dropped.
    pub(crate) _keep: Option<Box<dyn Any + Send>>,
}

/// The write half, kept concrete so that each stack writes a batch its own
/// cheapest way.
pub(crate) enum Writer {
    /// TCP or TLS: one `write_all` of the concatenated batch, then flush.
    Io(Box<dyn AsyncWrite + Send + Unpin>, Vec<u8>),
    /// quinn: hand the `Bytes` over without copying.
    Quinn(quinn::SendStream),
    /// s2n-quic: hand the `Bytes` over without copying.
    S2n(s2n_quic::stream::SendStream),
}

impl Writer {
    /// Sends every message of `batch`, in order, and empties it.
    pub(crate) async fn send(&mut self, batch: &mut Vec<Bytes>) -> anyhow::Result<()> {
        match self {
            Writer::Io(w, buf) => {
                if let [one] = batch.as_slice() {
                    w.write_all(one).await?;
                } else {
                    buf.clear();
                    for m in batch.iter() {
                        buf.extend_from_slice(m);
                    }
                    w.write_all(buf).await?;
                }
                w.flush().await?;
            }
            Writer::Quinn(s) => s.write_all_chunks(batch).await?,
            Writer::S2n(s) => s.send_vectored(batch).await?,
        }
        batch.clear();
        Ok(())
    }
}

fn io_conn<S>(stream: S, keep: Option<Box<dyn Any + Send>>) -> Conn
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    Conn {
        reader: Box::new(r),
        writer: Writer::Io(Box::new(w), Vec::new()),
        _keep: keep,
    }
}

fn tcp_conn(stream: TcpStream) -> Conn {
    let (r, w) = stream.into_split();
    Conn {
        reader: Box::new(r),
        writer: Writer::Io(Box::new(w), Vec::new()),
        _keep: None,
    }
}

/// Starts accepting on `port` (127.0.0.1) and sends every new connection's
/// stream to the returned channel.
pub(crate) async fn listen(stack: Stack, port: u16) -> anyhow::Result<mpsc::Receiver<Conn>> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (tx, rx) = mpsc::channel(1024);
    match stack {
        Stack::Quiche => anyhow::bail!("quiche is served by quiche_server"),
        Stack::Tcp => {
            let listener = TcpListener::bind(addr).await?;
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    if tx.send(tcp_conn(s)).await.is_err() {
                        break;
                    }
                }
            });
        }
        Stack::Tls => {
            let listener = TcpListener::bind(addr).await?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(rustls_server()?));
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match acceptor.accept(s).await {
                            Ok(tls) => {
                                let _ = tx.send(io_conn(tls, None)).await;
                            }
                            Err(e) => eprintln!("tls accept: {e}"),
                        }
                    });
                }
            });
        }
        Stack::Quinn => {
            let mut tls = rustls_server()?;
            tls.alpn_protocols = vec![ALPN.to_vec()];
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
            let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(config),
                udp_socket(addr)?,
                Arc::new(quinn::TokioRuntime),
            )?;
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let result = async {
                            let conn = incoming.await?;
                            let (send, recv) = conn.accept_bi().await?;
                            anyhow::Ok(Conn {
                                reader: Box::new(recv),
                                writer: Writer::Quinn(send),
                                _keep: Some(Box::new(conn)),
                            })
                        };
                        match result.await {
                            Ok(c) => {
                                let _ = tx.send(c).await;
                            }
                            Err(e) => eprintln!("quinn accept: {e}"),
                        }
                    });
                }
            });
        }
        Stack::S2n => {
            let (cert, key) = self_signed()?;
            let tls = s2n_quic::provider::tls::default::Server::builder()
                .with_certificate(cert.pem(), key.serialize_pem())?
                .with_application_protocols([ALPN])?
                .build()?;
            let io = s2n_quic::provider::io::Default::builder()
                .with_receive_address(addr)?
                .with_recv_buffer_size(UDP_BUFFER)?
                .with_send_buffer_size(UDP_BUFFER)?
                .build()?;
            let mut server = s2n_quic::Server::builder()
                .with_tls(tls)?
                .with_io(io)?
                .start()
                .map_err(|e| anyhow::anyhow!("s2n server: {e}"))?;
            tokio::spawn(async move {
                while let Some(mut conn) = server.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match conn.accept_bidirectional_stream().await {
                            Ok(Some(stream)) => {
                                let (recv, send) = stream.split();
                                let c = Conn {
                                    reader: Box::new(recv),
                                    writer: Writer::S2n(send),
                                    _keep: Some(Box::new(conn)),
                                };
                                let _ = tx.send(c).await;
                            }
                            Ok(None) => {}
                            Err(e) => eprintln!("s2n accept: {e}"),
                        }
                    });
                }
            });
        }
    }
    Ok(rx)
}

/// Opens connections of one stack to one address; QUIC stacks share one
/// client endpoint.
pub(crate) enum Connector {
    Tcp(SocketAddr),
    Tls(SocketAddr, tokio_rustls::TlsConnector),
    Quinn(SocketAddr, quinn::Endpoint),
    S2n(SocketAddr, s2n_quic::Client),
}

impl Connector {
    pub(crate) fn new(stack: Stack, addr: SocketAddr) -> anyhow::Result<Self> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Ok(match stack {
            Stack::Tcp => Connector::Tcp(addr),
            Stack::Tls => Connector::Tls(
                addr,
                tokio_rustls::TlsConnector::from(Arc::new(rustls_client()?)),
            ),
            // tokio-quiche's client takes one UDP socket per connection;
            // quinn's client (one shared endpoint) loads the quiche server.
            Stack::Quinn | Stack::Quiche => {
                let mut tls = rustls_client()?;
                tls.alpn_protocols = vec![ALPN.to_vec()];
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
                let mut endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    udp_socket(any)?,
                    Arc::new(quinn::TokioRuntime),
                )?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                Connector::Quinn(addr, endpoint)
            }
            Stack::S2n => {
                let mut tls = s2n_quic::provider::tls::default::Client::builder()
                    .with_application_protocols([ALPN])?;
                // SAFETY: a benchmark on loopback against a certificate the
                // server generated at start; nothing to verify it against.
                unsafe {
                    tls.config_mut().disable_x509_verification()?;
                }
                let io = s2n_quic::provider::io::Default::builder()
                    .with_receive_address(any)?
                    .with_recv_buffer_size(UDP_BUFFER)?
                    .with_send_buffer_size(UDP_BUFFER)?
                    .build()?;
                let client = s2n_quic::Client::builder()
                    .with_tls(tls.build()?)?
                    .with_io(io)?
                    .start()
                    .map_err(|e| anyhow::anyhow!("s2n client: {e}"))?;
                Connector::S2n(addr, client)
            }
        })
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match self {
            Connector::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                tcp_conn(s)
            }
            Connector::Tls(addr, connector) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let tls = connector
                    .connect(ServerName::try_from("localhost")?, s)
                    .await?;
                io_conn(tls, None)
            }
            Connector::Quinn(addr, endpoint) => {
                let conn = endpoint.connect(*addr, "localhost")?.await?;
                let (send, recv) = conn.open_bi().await?;
                Conn {
                    reader: Box::new(recv),
                    writer: Writer::Quinn(send),
                    _keep: Some(Box::new(conn)),
                }
            }
            Connector::S2n(addr, client) => {
                let connect = s2n_quic::client::Connect::new(*addr).with_server_name("localhost");
                let mut conn = client.connect(connect).await?;
                let (recv, send) = conn.open_bidirectional_stream().await?.split();
                Conn {
                    reader: Box::new(recv),
                    writer: Writer::S2n(send),
                    _keep: Some(Box::new(conn)),
                }
            }
        })
    }
}

pub(crate) fn udp_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at net.core.rmem_max / wmem_max; not an error.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// An ECDSA P-256 certificate for `localhost`, made at start.
pub(crate) fn self_signed() -> anyhow::Result<(rcgen::Certificate, rcgen::KeyPair)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_server() -> anyhow::Result<rustls::ServerConfig> {
    let (cert, key) = self_signed()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .context("server certificate")
}

fn rustls_client() -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider())))
        .with_no_client_auth())
}

/// Accepts any server certificate (this is a loopback benchmark), but still
/// checks the handshake signatures so that the handshake costs what it would.
#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
