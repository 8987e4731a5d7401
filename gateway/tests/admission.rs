//! Per-client-address admission over real sockets: `CONN_RATE_PER_IP` and
//! `MAX_CONNECTIONS_PER_IP` on both transports, `X-Forwarded-For` and the
//! PROXY protocol believed only from `TRUSTED_PROXIES`, and every refusal
//! counted by transport and reason.

mod common;

use common::{TestGateway, WAIT, within};
use pantheon_client::raw::RawSession;
use pantheon_client::{Error, Options};
use pantheon_gateway::metrics::Transport::{websocket, webtransport};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upgrade attempt's answer; the connection stays open (a 101 holds a
/// WebSocket until dropped).
struct Answer {
    status: Option<u16>,
    head: String,
    _conn: TcpStream,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `prefix` (a PROXY header, or nothing), then a WebSocket upgrade
/// with `headers`, and reads the response head.
async fn upgrade(addr: SocketAddr, prefix: &[u8], headers: &[(&str, &str)]) -> Answer {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut req = prefix.to_vec();
    req.extend_from_slice(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    conn.write_all(&req).await.expect("write");
    let mut buf = Vec::new();
    let head = within(WAIT, "the upgrade answer", async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break String::from_utf8_lossy(&buf[..i]).into_owned();
            }
            let mut chunk = [0u8; 1024];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break String::from_utf8_lossy(&buf).into_owned(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .filter(|_| head.starts_with("HTTP/1.1"));
    Answer {
        status,
        head,
        _conn: conn,
    }
}

async fn wt_session(gw: &TestGateway) -> Result<RawSession, Error> {
    RawSession::connect_with(&gw.wt_url(), &Options::insecure()).await
}

#[tokio::test]
async fn upgrades_over_the_rate_get_429_with_retry_after() {
    let gw = TestGateway::with(|c| c.admission.conn_rate_per_ip = Some(3)).await;
    // Plain HTTP requests (health checks) are not connection attempts.
    for _ in 0..10 {
        assert_eq!(gw.http_get("/health").await.0, 200);
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        let a = upgrade(gw.addr, b"", &[]).await;
        assert_eq!(a.status, Some(101), "{}", a.head);
        held.push(a);
    }
    let refused = upgrade(gw.addr, b"", &[]).await;
    assert_eq!(refused.status, Some(429), "{}", refused.head);
    let retry: u64 = refused
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After in {}", refused.head))
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(gw.refused(websocket, "conn_rate_per_ip"), 1);
    // The rate refills: one attempt per third of a second.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(upgrade(gw.addr, b"", &[]).await.status, Some(101));
}

#[tokio::test]
async fn concurrent_connections_per_address_count_both_transports() {
    let gw = TestGateway::with_webtransport(|c| c.admission.max_connections_per_ip = Some(2)).await;
    let ws = upgrade(gw.addr, b"", &[]).await;
    assert_eq!(ws.status, Some(101));
    let wt = wt_session(&gw).await.expect("first WebTransport session");
    let refused = upgrade(gw.addr, b"", &[]).await;
    assert_eq!(refused.status, Some(429), "{}", refused.head);
    assert!(refused.header("retry-after").is_some());
    match wt_session(&gw).await {
        Err(Error::Handshake { .. }) => {}
        other => panic!("a third connection over WebTransport: {other:?}"),
    }
    assert_eq!(gw.refused(websocket, "max_connections_per_ip"), 1);
    assert_eq!(gw.refused(webtransport, "max_connections_per_ip"), 1);
    // A slot is free again once its connection has ended.
    drop(ws);
    gw.until("the WebSocket slot to be released", |gw| {
        gw.shared.admission.open_addresses() == 1 && gw.websocket_connections() == 0
    })
    .await;
    assert_eq!(upgrade(gw.addr, b"", &[]).await.status, Some(101));
    drop(wt);
}

#[tokio::test]
async fn webtransport_connects_over_the_rate_are_refused() {
    let gw = TestGateway::with_webtransport(|c| c.admission.conn_rate_per_ip = Some(1)).await;
    let _first = wt_session(&gw).await.expect("first session");
    match wt_session(&gw).await {
        Err(Error::Handshake { .. }) => {}
        other => panic!("a second CONNECT within the second: {other:?}"),
    }
    assert_eq!(gw.refused(webtransport, "conn_rate_per_ip"), 1);
    // Both transports draw on one budget per address.
    assert_eq!(upgrade(gw.addr, b"", &[]).await.status, Some(429));
    assert_eq!(gw.refused(websocket, "conn_rate_per_ip"), 1);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let limit_one = |c: &mut pantheon_gateway::Config| c.admission.max_connections_per_ip = Some(1);
    // Not trusted: the header is the client's own word and changes nothing.
    let gw = TestGateway::with(limit_one).await;
    let xff = |ip| [("X-Forwarded-For", ip)];
    let a = upgrade(gw.addr, b"", &xff("198.51.100.1")).await;
    assert_eq!(a.status, Some(101));
    let b = upgrade(gw.addr, b"", &xff("198.51.100.2")).await;
    assert_eq!(
        b.status,
        Some(429),
        "X-Forwarded-For from an untrusted peer"
    );
    drop((a, b));

    let gw = TestGateway::with(|c| {
        limit_one(c);
        c.admission.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let a = upgrade(gw.addr, b"", &xff("198.51.100.1")).await;
    let b = upgrade(gw.addr, b"", &xff("198.51.100.2")).await;
    assert_eq!((a.status, b.status), (Some(101), Some(101)));
    // The rightmost untrusted hop counts, not what the client put first.
    let c = upgrade(gw.addr, b"", &xff("6.6.6.6, 198.51.100.1")).await;
    assert_eq!(c.status, Some(429), "{}", c.head);
    let d = upgrade(gw.addr, b"", &xff("198.51.100.1, 127.0.0.9")).await;
    assert_eq!(d.status, Some(429), "{}", d.head);
    assert_eq!(gw.refused(websocket, "max_connections_per_ip"), 2);
}

#[tokio::test]
async fn proxy_protocol_names_the_client_behind_a_trusted_proxy() {
    let gw = TestGateway::with(|c| {
        c.admission.max_connections_per_ip = Some(1);
        c.admission.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 10.0.0.1 40000 443\r\n").into_bytes();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[203, 0, 113, 1, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    let a = upgrade(gw.addr, &v1("203.0.113.1"), &[]).await;
    assert_eq!(a.status, Some(101), "{}", a.head);
    let b = upgrade(gw.addr, &v2, &[]).await;
    assert_eq!(b.status, Some(429), "v2 names the same client: {}", b.head);
    let c = upgrade(gw.addr, &v1("203.0.113.2"), &[]).await;
    assert_eq!(c.status, Some(101), "{}", c.head);
    // Without a header the proxy itself is the client (a third address).
    let d = upgrade(gw.addr, b"", &[]).await;
    assert_eq!(d.status, Some(101), "{}", d.head);
    // A malformed header ends the connection, counted.
    let bad = upgrade(gw.addr, b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n", &[]).await;
    assert_eq!(bad.status, None, "{}", bad.head);
    assert_eq!(gw.refused(websocket, "proxy_protocol"), 1);

    // From an untrusted peer a PROXY header is not stripped: the request is
    // malformed HTTP and nothing is upgraded.
    let gw = TestGateway::start().await;
    let e = upgrade(gw.addr, &v1("203.0.113.1"), &[]).await;
    assert_ne!(e.status, Some(101), "{}", e.head);
}
