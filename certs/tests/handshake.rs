//! Real TLS handshakes against `Store::server_config`: tokio-rustls over
//! loopback TCP, and rustls' QUIC mode in memory as quinn drives it.

use std::fs;
use std::io;
use std::sync::Arc;

use pantheon_certs::{DevCert, MAX_VALIDITY, Source, Store, write_dev_cert, write_dev_cert_to_dir};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// An echo server on loopback presenting `store`'s certificate.
struct Server {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(store: &Arc<Store>) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(store.server_config(&[b"http/1.1"])));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0; 64];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    trusted: &[&CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[u8],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

async fn connect_with(
    server: &Server,
    config: ClientConfig,
    name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

async fn connect(
    server: &Server,
    trusted: &CertificateDer<'static>,
) -> io::Result<TlsStream<TcpStream>> {
    let config = client_config(&[trusted], rustls::DEFAULT_VERSIONS, b"http/1.1");
    connect_with(server, config, "localhost").await
}

fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn echo(tls: &mut TlsStream<TcpStream>, message: &[u8]) {
    tls.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
}

fn dev() -> DevCert {
    DevCert::generate(OffsetDateTime::now_utc(), MAX_VALIDITY).unwrap()
}

#[tokio::test]
async fn client_trusting_the_dev_cert_completes_a_tls13_handshake() {
    let store = Arc::new(Store::new(Source::self_signed_local()).unwrap());
    let server = Server::start(&store).await;

    let mut tls = connect(&server, &store.current_der()).await.unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_leaf(&tls), store.current_der());
    echo(&mut tls, b"hello").await;

    // The certificate names the loopback addresses as well as localhost.
    for ip in ["127.0.0.1", "::1"] {
        let config = client_config(
            &[&store.current_der()],
            rustls::DEFAULT_VERSIONS,
            b"http/1.1",
        );
        connect_with(&server, config, ip).await.unwrap();
    }
    // And nothing else.
    let config = client_config(
        &[&store.current_der()],
        rustls::DEFAULT_VERSIONS,
        b"http/1.1",
    );
    assert!(connect_with(&server, config, "example.com").await.is_err());
}

#[tokio::test]
async fn tls12_clients_are_served_on_tcp() {
    let store = Arc::new(Store::new(Source::self_signed_local()).unwrap());
    let server = Server::start(&store).await;
    let config = client_config(
        &[&store.current_der()],
        &[&rustls::version::TLS12],
        b"http/1.1",
    );
    let mut tls = connect_with(&server, config, "localhost").await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    echo(&mut tls, b"old client").await;
}

#[tokio::test]
async fn after_a_file_reload_the_next_handshake_sees_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dev(), dev());
    let (cert, key) = write_dev_cert_to_dir(&first, dir.path()).unwrap();
    let store = Arc::new(
        Store::new(Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap(),
    );
    let server = Server::start(&store).await;

    let mut before = connect(&server, first.cert_der()).await.unwrap();
    assert_eq!(&peer_leaf(&before), first.cert_der());

    write_dev_cert(&second, &cert, &key).unwrap();
    assert!(store.reload_now().unwrap());

    let mut after = connect(&server, second.cert_der()).await.unwrap();
    assert_eq!(&peer_leaf(&after), second.cert_der());
    echo(&mut after, b"new").await;
    // A client that trusts only the old certificate is now refused.
    assert!(connect(&server, first.cert_der()).await.is_err());
    // The session established before the reload carries on.
    echo(&mut before, b"still here").await;

    // A broken replacement changes nothing for new handshakes.
    fs::write(&cert, "garbage").unwrap();
    assert!(store.reload_now().is_err());
    let tls = connect(&server, second.cert_der()).await.unwrap();
    assert_eq!(&peer_leaf(&tls), second.cert_der());
}

#[tokio::test]
async fn after_a_rotation_the_next_handshake_sees_the_new_certificate() {
    // Generated eleven days ago, so under two days of validity remain now.
    let now = OffsetDateTime::now_utc();
    let then = now - std::time::Duration::from_secs(11 * 24 * 3600);
    let store = Arc::new(Store::new_at(Source::self_signed_local(), then).unwrap());
    let server = Server::start(&store).await;
    let old = store.current_der();
    let mut before = connect(&server, &old).await.unwrap();

    assert!(store.poll(now).unwrap());
    let new = store.current_der();
    assert_ne!(new, old);

    // Both the old and the new certificate trusted, as a browser that
    // fetched the new hash does; the server presents the new one.
    let config = client_config(&[&old, &new], rustls::DEFAULT_VERSIONS, b"http/1.1");
    let tls = connect_with(&server, config, "localhost").await.unwrap();
    assert_eq!(peer_leaf(&tls), new);
    echo(&mut before, b"unaffected").await;
}

#[tokio::test]
async fn the_whole_chain_is_presented() {
    let dir = tempfile::tempdir().unwrap();
    let (leaf, extra) = (dev(), dev());
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    fs::write(&cert, format!("{}{}", leaf.cert_pem(), extra.cert_pem())).unwrap();
    fs::write(&key, leaf.key_pem()).unwrap();
    let store = Arc::new(Store::new(Source::Files { cert, key }).unwrap());
    let server = Server::start(&store).await;

    let tls = connect(&server, leaf.cert_der()).await.unwrap();
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(chain, [leaf.cert_der().clone(), extra.cert_der().clone()]);
}

/// The handshake quinn runs: rustls in QUIC mode, TLS 1.3 only, with `h3`.
#[test]
fn server_config_completes_a_quic_handshake() {
    use rustls::quic::{ClientConnection, Connection, ServerConnection, Version};

    let store = Arc::new(Store::new(Source::self_signed_local()).unwrap());
    let server_config = Arc::new(store.server_config(&[b"h3"]));
    let client_config = client_config(&[&store.current_der()], rustls::ALL_VERSIONS, b"h3");

    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Connection::Client(
        ClientConnection::new(Arc::new(client_config), Version::V1, name, b"c".to_vec()).unwrap(),
    );
    let mut server = Connection::Server(
        ServerConnection::new(server_config, Version::V1, b"s".to_vec()).unwrap(),
    );

    // Hand each side's handshake bytes to the other until both are done.
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        step(&mut client, &mut server);
        step(&mut server, &mut client);
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());

    let Connection::Client(client) = client else {
        unreachable!()
    };
    assert_eq!(client.alpn_protocol(), Some(&b"h3"[..]));
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(client.peer_certificates().unwrap()[0], store.current_der());
    assert_eq!(server.quic_transport_parameters(), Some(&b"c"[..]));
}

/// Moves `from`'s pending handshake bytes to `to`, one key epoch at a time
/// as QUIC carries them in packets of different levels.
fn step(from: &mut rustls::quic::Connection, to: &mut rustls::quic::Connection) {
    loop {
        let mut bytes = Vec::new();
        let key_change = from.write_hs(&mut bytes);
        if !bytes.is_empty() {
            to.read_hs(&bytes).unwrap();
        }
        if key_change.is_none() && bytes.is_empty() {
            break;
        }
    }
}
