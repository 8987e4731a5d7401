//! `wss://`: the client speaks WebSocket over TLS to a gateway serving
//! `TLS_CERT`/`TLS_KEY` on its TCP port, trusting the server's certificate
//! by its SHA-256 digest, or not at all (insecure), and refusing one it
//! cannot verify.

mod common;

use common::{WAIT, next, within};
use pantheon_certs::{DevCert, Source, Store, write_dev_cert_to_dir};
use pantheon_client::protocol::ServerMessage;
use pantheon_client::{Client, Error, Options};
use pantheon_gateway::config::TlsFiles;
use pantheon_gateway::{Config, Gateway, webtransport};
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A gateway serving TLS on its TCP port with a certificate written to
/// files, and that certificate's digest.
async fn tls_gateway(
    dir: &std::path::Path,
) -> (String, [u8; 32], tokio::sync::oneshot::Sender<()>) {
    let dev = DevCert::generate(
        time::OffsetDateTime::now_utc(),
        std::time::Duration::from_secs(7 * 86_400),
    )
    .expect("dev cert");
    let (cert, key) = write_dev_cert_to_dir(&dev, dir).expect("write cert");
    let mut config = Config::for_tests(0);
    config.tls = Some(TlsFiles { cert, key });
    let certs = Arc::new(Store::new(config.cert_source()).expect("load cert"));
    assert!(matches!(certs.source(), Source::Files { .. }));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wt = webtransport::Listener::bind("127.0.0.1:0".parse().unwrap(), &certs, &config).unwrap();
    let url = format!("wss://localhost:{}/ws", tcp.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = Gateway::builder(config).webtransport(certs, wt).build();
    tokio::spawn(gateway.run(tcp, async move {
        let _ = stopped.await;
    }));
    (url, dev.sha256(), stop)
}

#[tokio::test]
async fn wss_with_the_certificate_digest_or_insecure_works_and_an_unverifiable_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (url, hash, _stop) = tls_gateway(dir.path()).await;

    // Trusted by digest: a full session, signals both ways.
    let mut a = within(
        WAIT,
        "wss a",
        Client::connect_with(&url, Options::with_cert_hash(hash)),
    )
    .await
    .expect("wss with the digest");
    let mut b = within(
        WAIT,
        "wss b",
        Client::connect_with(&url, Options::insecure()),
    )
    .await
    .expect("wss insecure");
    a.join("r", None).await.unwrap();
    b.join("r", None).await.unwrap();
    assert!(matches!(
        next(&mut a).await,
        ServerMessage::PeerJoined { .. }
    ));
    a.signal("r", b.peer(), json!({"sdp": "x"})).await.unwrap();
    match next(&mut b).await {
        ServerMessage::Signal { from, .. } => assert_eq!(&from, a.peer()),
        other => panic!("expected a signal, got {other:?}"),
    }
    b.signal("r", a.peer(), json!(1)).await.unwrap();
    assert!(matches!(next(&mut a).await, ServerMessage::Signal { .. }));

    // Self-signed and not pinned: the system's roots do not know it.
    let refused = within(
        WAIT,
        "wss unverified",
        Client::connect_with(&url, Options::default()),
    )
    .await;
    let e = refused.expect_err("an unverifiable certificate must be refused");
    assert!(matches!(e, Error::Io(_) | Error::Transport(_)), "{e:?}");
    assert!(format!("{e}").to_lowercase().contains("certificate"), "{e}");

    // Pinned to another digest.
    let wrong = within(
        WAIT,
        "wss wrong pin",
        Client::connect_with(&url, Options::with_cert_hash([7; 32])),
    )
    .await;
    let e = wrong.expect_err("a certificate with another digest must be refused");
    assert!(format!("{e}").to_lowercase().contains("certificate"), "{e}");

    // Plain ws:// against the TLS port fails rather than hangs.
    let plain = url.replacen("wss://", "ws://", 1);
    let e = within(
        WAIT,
        "ws to a TLS port",
        Client::connect_with(&plain, Options::default()),
    )
    .await
    .expect_err("plain WebSocket against TLS");
    assert!(!matches!(e, Error::Timeout(_)), "{e:?}");

    a.close().await.unwrap();
    b.close().await.unwrap();
}
