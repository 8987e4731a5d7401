//! Which WebTransport server crate can (a) see a client's
//! CLOSE_WEBTRANSPORT_SESSION capsule (code 0 = goodbye) and tell it from a
//! loss, and (b) close a session with an application code + reason the
//! client can read?
//!
//! Three server crates: h3-webtransport 0.1.2 (on h3 0.0.8 / h3-quinn 0.0.10),
//! web-transport-quinn 0.13.5, wtransport 0.7.2 (server side).
//! Clients: a "browser-like" client written against web-transport-proto that
//! does what Chromium does on `wt.close()` (capsule in a DATA frame on the
//! CONNECT stream, FIN, and keeps the QUIC connection open), the wtransport
//! 0.7.2 client, and the web-transport-quinn client.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use web_transport_proto as proto;

fn cert() -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    (
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

fn transport(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle.try_into().unwrap()));
    Arc::new(t)
}

fn quinn_server(idle: Duration) -> quinn::Endpoint {
    let (chain, key) = cert();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    cfg.transport_config(transport(idle));
    quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn quinn_client() -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    cfg.transport_config(transport(Duration::from_secs(30)));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

/// What Chromium does: SETTINGS, extended CONNECT, then WebTransport streams;
/// `wt.close({closeCode, reason})` = CLOSE_WEBTRANSPORT_SESSION capsule in a
/// DATA frame on the CONNECT stream + FIN, the QUIC connection stays up.
struct BrowserLike {
    conn: quinn::Connection,
    _settings_send: quinn::SendStream,
    _settings_recv: quinn::RecvStream,
    connect_send: quinn::SendStream,
    connect_recv: quinn::RecvStream,
    session_id: u64,
}

impl BrowserLike {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let ep = quinn_client();
        let conn = ep.connect(addr, "localhost")?.await?;
        let mut settings = proto::Settings::default();
        settings.enable_webtransport(1);
        let mut settings_send = conn.open_uni().await?;
        settings.write(&mut settings_send).await?;
        let mut settings_recv = conn.accept_uni().await?;
        let _theirs = proto::Settings::read(&mut settings_recv).await?;
        let (mut connect_send, mut connect_recv) = conn.open_bi().await?;
        let url = format!("https://localhost:{}/wt", addr.port());
        proto::ConnectRequest::new(url::Url::parse(&url)?)
            .with_header(
                http::header::ORIGIN,
                http::HeaderValue::from_static("https://app.example"),
            )
            .write(&mut connect_send)
            .await?;
        let resp = proto::ConnectResponse::read(&mut connect_recv).await?;
        anyhow::ensure!(resp.status == 200, "CONNECT answered {}", resp.status);
        let session_id = quinn::VarInt::from(connect_send.id()).into_inner();
        Ok(Self {
            conn,
            _settings_send: settings_send,
            _settings_recv: settings_recv,
            connect_send,
            connect_recv,
            session_id,
        })
    }

    async fn open_bi(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let (mut s, r) = self.conn.open_bi().await?;
        let mut hdr = Vec::new();
        proto::Frame::WEBTRANSPORT.encode(&mut hdr);
        proto::VarInt::try_from(self.session_id)?.encode(&mut hdr);
        s.write_all(&hdr).await?;
        Ok((s, r))
    }

    async fn close_session(&mut self, code: u32, reason: &str) -> Result<()> {
        let mut capsule = Vec::new();
        proto::Capsule::CloseWebTransportSession {
            code,
            reason: reason.into(),
        }
        .encode(&mut capsule);
        let mut frame = Vec::new();
        proto::Frame::DATA.encode(&mut frame);
        proto::VarInt::try_from(capsule.len() as u64)?.encode(&mut frame);
        frame.extend_from_slice(&capsule);
        self.connect_send.write_all(&frame).await?;
        self.connect_send.finish()?;
        Ok(())
    }

    /// Reads the CONNECT stream until a CLOSE_WEBTRANSPORT_SESSION capsule,
    /// a FIN, or an error.
    async fn read_close(&mut self) -> String {
        let mut reader = proto::Http3CapsuleReader::new(&mut self.connect_recv);
        loop {
            match reader.read().await {
                Ok(Some(proto::Capsule::CloseWebTransportSession { code, reason })) => {
                    return format!("CLOSE_WEBTRANSPORT_SESSION capsule code={code} reason={reason:?}");
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return format!(
                        "CONNECT stream ended without capsule; QUIC close: {:?}",
                        self.conn.close_reason()
                    )
                }
                Err(e) => {
                    return format!(
                        "CONNECT stream error {e:?}; QUIC close: {:?}",
                        self.conn.close_reason()
                    )
                }
            }
        }
    }
}

fn t(start: Instant) -> String {
    format!("{:>5} ms", start.elapsed().as_millis())
}

// ---------------------------------------------------------------- h3-webtransport

type H3Session = h3_webtransport::server::WebTransportSession<h3_quinn::Connection, bytes::Bytes>;

async fn h3wt_accept(ep: &quinn::Endpoint) -> Result<(quinn::Connection, H3Session)> {
    let conn = ep.accept().await.context("no incoming")?.await?;
    let raw = conn.clone();
    let mut h3 = h3::server::builder()
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true)
        .build(h3_quinn::Connection::new(conn))
        .await?;
    let resolver = h3.accept().await?.context("no request")?;
    let (req, stream) = resolver.resolve_request().await?;
    let session = h3_webtransport::server::WebTransportSession::accept(req, stream, h3).await?;
    Ok((raw, session))
}

/// h3-webtransport: a browser-like client closes the session with code 0.
async fn h3wt_sees_client_close() -> Result<()> {
    println!("\n## h3-webtransport 0.1.2 server; browser-like client: wt.close({{closeCode: 0, reason: \"bye\"}}), QUIC connection kept open 3 s");
    let ep = quinn_server(Duration::from_secs(10));
    let addr = ep.local_addr()?;
    let server = tokio::spawn(async move {
        let (raw, session) = h3wt_accept(&ep).await.unwrap();
        let start = Instant::now();
        let mut ctrl = match session.accept_bi().await {
            Ok(Some(h3_webtransport::server::AcceptedBi::BidiStream(_, s))) => s,
            other => panic!("expected a bidi stream: {:?}", other.is_ok()),
        };
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        let mut ctrl_done = false;
        let deadline = tokio::time::sleep(Duration::from_secs(6));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = ctrl.read(&mut buf), if !ctrl_done => match r {
                    Ok(0) => { ctrl_done = true; events.push(format!("{} control stream: FIN", t(start))); }
                    Ok(n) => events.push(format!("{} control stream: {:?}", t(start), String::from_utf8_lossy(&buf[..n]))),
                    Err(e) => { ctrl_done = true; events.push(format!("{} control stream error: {e}", t(start))); }
                },
                r = session.accept_bi() => {
                    events.push(format!("{} accept_bi -> {}", t(start), match r { Ok(None) => "Ok(None)".into(), Ok(Some(_)) => "Ok(Some)".into(), Err(e) => format!("Err({e})") }));
                    break;
                }
                e = raw.closed() => { events.push(format!("{} QUIC connection closed: {e}", t(start))); break; }
                () = &mut deadline => { events.push(format!("{} nothing else after 6 s", t(start))); break; }
            }
        }
        events
    });
    let mut client = BrowserLike::open(addr).await?;
    let (mut s, _r) = client.open_bi().await?;
    s.write_all(b"{\"type\":\"ping\"}\n").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.close_session(0, "bye").await?;
    // The control stream is left open, as when a page calls wt.close()
    // without closing its writer first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.conn.close(0x100u32.into(), b""); // H3_NO_ERROR, later
    for e in server.await? {
        println!("    server saw: {e}");
    }
    println!("    (client sent the capsule at ~200 ms and closed QUIC with H3_NO_ERROR at ~3200 ms)");
    Ok(())
}

/// h3-webtransport: the server wants to close with 4010.
async fn h3wt_server_close() -> Result<()> {
    println!("\n## h3-webtransport 0.1.2 server closes a session (wants code 4010 \"taken over\")");
    println!("    WebTransportSession has no close(); its CONNECT RequestStream is a private field with no accessor.");
    println!("    What is left: drop the session, or close the whole QUIC connection with a raw code.");
    for how in ["drop session", "quic close 4010"] {
        let ep = quinn_server(Duration::from_secs(10));
        let addr = ep.local_addr()?;
        let how2 = how;
        let server = tokio::spawn(async move {
            let (raw, session) = h3wt_accept(&ep).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            match how2 {
                "drop session" => drop(session),
                _ => {
                    raw.close(4010u32.into(), b"taken over");
                    drop(session)
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let mut client = BrowserLike::open(addr).await?;
        let start = Instant::now();
        let seen = tokio::time::timeout(Duration::from_secs(4), client.read_close())
            .await
            .unwrap_or_else(|_| "nothing within 4 s".into());
        println!("    {how}: browser-like client reading the CONNECT stream: {} {seen}", t(start));
        server.await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- web-transport-quinn

async fn wtq_accept(ep: &quinn::Endpoint) -> Result<web_transport_quinn::Session> {
    let conn = ep.accept().await.context("no incoming")?.await?;
    let req = web_transport_quinn::Request::accept(conn).await?;
    println!(
        "    server: CONNECT {} origin={:?}",
        req.url,
        req.headers.get("origin")
    );
    Ok(req.ok().await?)
}

async fn wtq_sees_client_close() -> Result<()> {
    println!("\n## web-transport-quinn 0.13.5 server; browser-like client: wt.close({{closeCode: 0, reason: \"bye\"}}), QUIC connection kept open 3 s");
    for code in [0u32, 1001] {
        let ep = quinn_server(Duration::from_secs(10));
        let addr = ep.local_addr()?;
        let server = tokio::spawn(async move {
            let session = wtq_accept(&ep).await.unwrap();
            let start = Instant::now();
            let (_s, mut r) = session.accept_bi().await.unwrap();
            let mut buf = [0u8; 64];
            let mut events = Vec::new();
            loop {
                tokio::select! {
                    r = r.read(&mut buf) => match r {
                        Ok(Some(n)) => events.push(format!("{} control stream: {:?}", t(start), String::from_utf8_lossy(&buf[..n]))),
                        Ok(None) => { events.push(format!("{} control stream: FIN", t(start))); }
                        Err(e) => { events.push(format!("{} control stream error: {e}", t(start))); break; }
                    },
                    e = session.closed() => { events.push(format!("{} session.closed() -> {e:?}", t(start))); break; }
                }
            }
            events
        });
        let mut client = BrowserLike::open(addr).await?;
        let (mut s, _r) = client.open_bi().await?;
        s.write_all(b"{\"type\":\"ping\"}\n").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.close_session(code, "bye").await?;
        let e = tokio::time::timeout(Duration::from_secs(3), client.conn.closed()).await;
        println!("    code {code}: client's QUIC connection afterwards: {e:?}");
        for e in server.await? {
            println!("    server saw: {e}");
        }
    }
    Ok(())
}

async fn wtq_server_close() -> Result<()> {
    println!("\n## web-transport-quinn 0.13.5 server: session.close(4010, \"taken over\")");
    // Browser-like client reads the capsule from its CONNECT stream.
    let ep = quinn_server(Duration::from_secs(10));
    let addr = ep.local_addr()?;
    let server = tokio::spawn(async move {
        let session = wtq_accept(&ep).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        session.close(4010, b"taken over");
        session.closed().await
    });
    let mut client = BrowserLike::open(addr).await?;
    let start = Instant::now();
    let seen = client.read_close().await;
    println!("    browser-like client: {} {seen}", t(start));
    client.conn.close(0x100u32.into(), b"");
    println!("    server session.closed(): {:?}", server.await?);

    // wtransport 0.7.2 client.
    let ep = quinn_server(Duration::from_secs(10));
    let addr = ep.local_addr()?;
    let server = tokio::spawn(async move {
        let session = wtq_accept(&ep).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        session.close(4010, b"taken over");
        session.closed().await
    });
    let conn = wtransport_client(addr).await?;
    let start = Instant::now();
    let (mut s, mut r) = conn.open_bi().await?.await?;
    s.write_all(b"x").await?;
    let mut buf = [0u8; 8];
    let read = r.read(&mut buf).await;
    println!("    wtransport client: {} control stream read -> {read:?}", t(start));
    let accept = conn.accept_uni().await.err();
    println!("    wtransport client: {} accept_uni() -> {accept:?}", t(start));
    println!("    wtransport client: closed() -> {:?}", conn.closed().await);
    println!("    server session.closed(): {:?}", server.await?);
    Ok(())
}

async fn wtq_sees_wtransport_close() -> Result<()> {
    println!("\n## web-transport-quinn 0.13.5 server; wtransport 0.7.2 client: connection.close(0 / 1001) (wtransport sends no capsule: a raw QUIC CONNECTION_CLOSE)");
    for code in [0u32, 1001] {
        let ep = quinn_server(Duration::from_secs(10));
        let addr = ep.local_addr()?;
        let server = tokio::spawn(async move {
            let session = wtq_accept(&ep).await.unwrap();
            let start = Instant::now();
            let e = session.closed().await;
            format!("{} session.closed() -> {e:?}", t(start))
        });
        let conn = wtransport_client(addr).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(wtransport::VarInt::from_u32(code), b"bye");
        println!("    code {code}: server saw {}", server.await?);
    }
    Ok(())
}

/// A UDP relay that can be cut, to make a client vanish without a close.
async fn relay(to: SocketAddr, cut: tokio::sync::watch::Receiver<bool>) -> SocketAddr {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let up = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    up.connect(to).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Default::default();
    {
        let (sock, up, client, cut) = (sock.clone(), up.clone(), client.clone(), cut.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let is_cut = *cut.borrow();
                if !is_cut {
                    let _ = up.send(&buf[..n]).await;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = up.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            let is_cut = *cut.borrow();
            if let (Some(to), false) = (to, is_cut) {
                let _ = sock.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

async fn wtq_sees_vanished_client() -> Result<()> {
    println!("\n## web-transport-quinn 0.13.5 server, idle timeout 1 s, keep-alive 300 ms; browser-like client vanishes (UDP relay cut)");
    let mut tc = quinn::TransportConfig::default();
    tc.max_idle_timeout(Some(Duration::from_secs(1).try_into().unwrap()));
    tc.keep_alive_interval(Some(Duration::from_millis(300)));
    let ep = quinn_server(Duration::from_secs(1));
    let (chain, key) = cert();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    cfg.transport_config(Arc::new(tc));
    ep.set_server_config(Some(cfg));
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let front = relay(ep.local_addr()?, cut_rx).await;
    let server = tokio::spawn(async move {
        let session = wtq_accept(&ep).await.unwrap();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let alive = session.close_reason().is_none();
        let e = session.closed().await;
        format!("still open after 2.5 s idle with keep-alive: {alive}; then {} session.closed() -> {e:?}", t(start))
    });
    let client = BrowserLike::open(front).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cut_tx.send(true)?;
    println!("    relay cut at ~2500 ms");
    println!("    server: {}", server.await?);
    drop(client);
    Ok(())
}

// ---------------------------------------------------------------- wtransport server

async fn wtransport_client(addr: SocketAddr) -> Result<wtransport::Connection> {
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_no_cert_validation()
        .build();
    let ep = wtransport::Endpoint::client(cfg)?;
    Ok(ep
        .connect(format!("https://127.0.0.1:{}/wt", addr.port()))
        .await?)
}

async fn wtransport_server() -> Result<()> {
    println!("\n## wtransport 0.7.2 server");
    let identity = wtransport::Identity::self_signed(["localhost"])?;
    let cfg = wtransport::ServerConfig::builder()
        .with_bind_address("127.0.0.1:0".parse()?)
        .with_identity(identity)
        .build();
    let server = wtransport::Endpoint::server(cfg)?;
    let addr = server.local_addr()?;
    let task = tokio::spawn(async move {
        let mut out = Vec::new();
        // 1: client capsule with code 0.
        let req = server.accept().await.await.unwrap();
        out.push(format!("CONNECT path={} origin={:?}", req.path(), req.origin()));
        let conn = req.accept().await.unwrap();
        let start = Instant::now();
        let (_s, mut r) = conn.accept_bi().await.unwrap();
        let mut buf = [0u8; 64];
        let n = r.read(&mut buf).await;
        out.push(format!("control stream read {n:?}"));
        let e = conn.accept_bi().await.err();
        out.push(format!("{} after client capsule(0, bye): accept_bi() -> {e:?}", t(start)));
        // 2: server close with 4010.
        let req = server.accept().await.await.unwrap();
        let conn = req.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(wtransport::VarInt::from_u32(4010), b"taken over");
        tokio::time::sleep(Duration::from_millis(500)).await;
        out
    });
    let mut client = BrowserLike::open(addr).await?;
    let (mut s, _r) = client.open_bi().await?;
    s.write_all(b"{\"type\":\"ping\"}\n").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.close_session(0, "bye").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = BrowserLike::open(addr).await?;
    let seen = client.read_close().await;
    println!("    connection.close(4010, \"taken over\"): browser-like client: {seen}");
    for e in task.await? {
        println!("    server: {e}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let which = std::env::args().nth(1).unwrap_or_default();
    let all = which.is_empty();
    if all || which == "h3wt" {
        h3wt_sees_client_close().await?;
        h3wt_server_close().await?;
    }
    if all || which == "wtq" {
        wtq_sees_client_close().await?;
        wtq_server_close().await?;
        wtq_sees_wtransport_close().await?;
        wtq_sees_vanished_client().await?;
    }
    if all || which == "wtransport" {
        wtransport_server().await?;
    }
    Ok(())
}
