//! PROTOCOL.md §8: `/health`, `/ready`, `/metrics`, CORS, `MAX_CONNECTIONS`
//! and the header-read timeout.

mod common;

use common::{TestGateway, WAIT, pair, within};
use pantheon_client::Error;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn health_reports_this_instance() {
    let gw = TestGateway::with(|c| {
        c.server_id = "gw-7".into();
        c.region = "eu-west".into();
    })
    .await;
    let r = gw.http("GET", "/health", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["server"], "gw-7");
    assert_eq!(h["region"], "eu-west");
    assert!(h["uptime_s"].is_u64(), "{h}");
    assert_eq!(
        h["connections"],
        json!({"websocket": 0, "webtransport": 0, "socketio": 0})
    );
    assert_eq!(h["rooms"], 0);
    assert_eq!(h["peers"], 0);
    assert_eq!(h["redis"], "standalone");
}

#[tokio::test]
async fn health_counts_sockets_rooms_and_peers() {
    let gw = TestGateway::start().await;
    let (a, mut b) = pair(&gw, "r").await;
    a.join("s", None).await.unwrap();
    let _idle = gw.client().await;
    let h = gw.http("GET", "/health", &[]).await.json();
    assert_eq!(h["connections"]["websocket"], 3);
    assert_eq!(h["rooms"], 2);
    assert_eq!(h["peers"], 3);
    within(WAIT, "close", b.close()).await.unwrap();
    gw.until("b's socket to be counted out", |gw| {
        gw.websocket_connections() == 2
    })
    .await;
    let h = gw.http("GET", "/health", &[]).await.json();
    assert_eq!(h["connections"]["websocket"], 2);
    assert_eq!(h["peers"], 2);
    assert_eq!(h["rooms"], 2);
}

#[tokio::test]
async fn ready_until_max_connections() {
    let gw = TestGateway::with(|c| c.max_connections = 1).await;
    let (status, body) = gw.http_get("/ready").await;
    assert_eq!(status, 200, "{body}");
    let mut first = gw.client().await;
    let (status, _) = gw.http_get("/ready").await;
    assert_eq!(status, 503, "at MAX_CONNECTIONS");
    match pantheon_client::Client::connect(&gw.ws_url()).await {
        Err(Error::Handshake { status, .. }) => assert_eq!(status, Some(503)),
        other => panic!("expected the upgrade to be refused, got {other:?}"),
    }
    // HTTP endpoints still answer.
    assert_eq!(gw.http_get("/health").await.0, 200);
    within(WAIT, "close", first.close()).await.unwrap();
    gw.until("the connection to be released", |gw| {
        gw.websocket_connections() == 0
    })
    .await;
    // The permit is released when the session task ends, just after the
    // gauge goes down.
    within(WAIT, "ready again", async {
        while gw.http_get("/ready").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    gw.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn metrics_expose_the_prometheus_families() {
    let gw = TestGateway::start().await;
    let (a, b) = pair(&gw, "r").await;
    a.signal("r", b.peer(), json!(1)).await.unwrap();
    a.broadcast("r", json!(2)).await.unwrap();
    assert!(a.peers("elsewhere").await.is_err());
    let r = gw.http("GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").is_some_and(|v| v.contains("text")),
        "{:?}",
        r.headers
    );
    let text = r.body;
    for needle in [
        r#"pantheon_connections{server="test",region="local",transport="websocket"} 2"#,
        r#"pantheon_messages_received_total{server="test",region="local",type="signal"} 1"#,
        r#"pantheon_messages_received_total{server="test",region="local",type="join"} 2"#,
        r#"pantheon_errors_total{server="test",region="local",code="not_in_room"} 1"#,
        "pantheon_relay_latency_seconds_bucket",
        r#"pantheon_relay_latency_seconds_count{server="test",region="local"} 2"#,
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

/// `METRICS_ADDR` moves `/metrics` to a listener of its own, which keeps
/// serving through the drain (so a stuck drain shows) and reports it.
#[tokio::test]
async fn metrics_addr_serves_metrics_apart_and_through_the_drain() {
    let port = pantheon_testkit::free_tcp_port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut gw = TestGateway::with(|c| {
        c.metrics_addr = Some(metrics_addr);
        c.drain_timeout = Duration::from_secs(30);
    })
    .await;
    assert_eq!(gw.http_get("/metrics").await.0, 404, "not on PORT any more");
    let (_a, _b) = pair(&gw, "r").await;
    let text = within(
        WAIT,
        "/metrics",
        common::http_request(metrics_addr, "GET", "/metrics", &[]),
    )
    .await
    .body;
    for needle in [
        r#"pantheon_ready{server="test",region="local"} 1"#,
        r#"pantheon_draining{server="test",region="local"} 0"#,
        r#"pantheon_rooms_by_size{server="test",region="local",size="2"} 1"#,
        r#"pantheon_room_members{server="test",region="local"} 2"#,
        r#"pantheon_connections_limit{server="test",region="local"} 10000"#,
        "process_open_fds",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    // Only /metrics there.
    let other = within(
        WAIT,
        "/health",
        common::http_request(metrics_addr, "GET", "/health", &[]),
    )
    .await;
    assert_eq!(other.status, 404);

    gw.drain();
    let text = within(
        WAIT,
        "/metrics",
        common::http_request(metrics_addr, "GET", "/metrics", &[]),
    )
    .await
    .body;
    for needle in [
        r#"pantheon_ready{server="test",region="local"} 0"#,
        r#"pantheon_draining{server="test",region="local"} 1"#,
        r#"pantheon_drain_timeout_seconds{server="test",region="local"} 30.0"#,
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

#[tokio::test]
async fn a_bad_metrics_addr_exits_64() {
    let result = pantheon_testkit::Gateway::builder(env!("CARGO_BIN_EXE_pantheon"))
        .env("METRICS_ADDR", "metrics.local")
        .try_spawn()
        .await;
    match result {
        Err(exited) => {
            assert_eq!(exited.code, Some(64), "{}", exited.log);
            assert!(exited.log.contains("METRICS_ADDR"), "{}", exited.log);
        }
        Ok(_) => panic!("started with METRICS_ADDR=metrics.local"),
    }
}

#[tokio::test]
async fn cors_preflight_names_the_allowed_headers() {
    let gw = TestGateway::start().await;
    let r = gw
        .http(
            "OPTIONS",
            "/health",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "GET"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
        )
        .await;
    assert!((200..300).contains(&r.status), "{r:?}");
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or_else(|| panic!("no allow-headers: {r:?}"))
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(allowed.contains("content-type"), "{allowed}");
    assert_ne!(allowed.trim(), "*", "a * does not cover Authorization");
    let origin = r.header("access-control-allow-origin").unwrap_or_default();
    assert!(
        origin == "*" || origin == "https://app.example",
        "any origin when ALLOWED_ORIGINS is unset: {r:?}"
    );
    // A simple request gets the origin header too.
    let r = gw
        .http("GET", "/health", &[("Origin", "https://app.example")])
        .await;
    assert!(r.header("access-control-allow-origin").is_some(), "{r:?}");
}

#[tokio::test]
async fn cors_follows_allowed_origins() {
    let gw =
        TestGateway::with(|c| c.allowed_origins = Some(vec!["https://app.example".into()])).await;
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ]
    };
    let r = gw
        .http("OPTIONS", "/health", &preflight("https://app.example"))
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example"),
        "{r:?}"
    );
    assert!(
        r.header("access-control-allow-headers")
            .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")),
        "{r:?}"
    );
    let r = gw
        .http("OPTIONS", "/health", &preflight("https://evil.example"))
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
}

#[tokio::test]
async fn unknown_paths_and_plain_gets_of_ws() {
    let gw = TestGateway::start().await;
    assert_eq!(gw.http_get("/nope").await.0, 404);
    let (status, _) = gw.http_get("/ws").await;
    assert!(
        (400..500).contains(&status),
        "a GET /ws that is no upgrade: {status}"
    );
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let limit = Duration::from_millis(200);
    let gw = TestGateway::with(|c| c.http_header_timeout = limit).await;
    for partial in [
        "GET /health HTTP/1.1\r\nHost: x\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        "",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        // The server ends the connection (perhaps after a 408): EOF or reset.
        let _ = within(WAIT, "the server to close", s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{partial:?}: {text}"
        );
        assert!(start.elapsed() >= limit / 2, "{:?}", start.elapsed());
    }
    // Complete requests are unaffected.
    assert_eq!(gw.http_get("/health").await.0, 200);
}
