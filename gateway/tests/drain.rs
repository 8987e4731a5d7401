//! Graceful shutdown (PROTOCOL.md §5 `reconnect`, §8 `/ready`): sessions are
//! told to move, new ones are refused, stragglers are closed with 1001 after
//! `DRAIN_TIMEOUT_MS`, and `run` returns.

mod common;

use common::{TestGateway, WAIT, next, pair, until_closed, within};
use pantheon_client::Error;
use pantheon_client::protocol::ServerMessage;
use std::time::{Duration, Instant};

async fn expect_reconnect(c: &mut pantheon_client::Client) {
    match next(c).await {
        ServerMessage::Reconnect { reason, .. } => assert_eq!(reason, "draining"),
        other => panic!("expected reconnect, got {other:?}"),
    }
}

#[tokio::test]
async fn drain_tells_sessions_to_move_then_closes_with_1001() {
    let drain_timeout = Duration::from_millis(500);
    let mut gw = TestGateway::with(|c| c.drain_timeout = drain_timeout).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    assert_eq!(gw.http_get("/ready").await.0, 200);

    let started = Instant::now();
    gw.drain();
    expect_reconnect(&mut a).await;
    expect_reconnect(&mut b).await;
    // Not ready, and new upgrades are refused; HTTP still answers.
    assert_eq!(gw.http_get("/ready").await.0, 503);
    match pantheon_client::Client::connect(&gw.ws_url()).await {
        Err(Error::Handshake { status, .. }) => assert_eq!(status, Some(503)),
        other => panic!("expected 503 for a new session while draining, got {other:?}"),
    }
    // The sessions still work until they are closed.
    a.ping().await.expect("still served while draining");
    b.signal("r", a.peer(), serde_json::json!("bye"))
        .await
        .unwrap();
    assert!(matches!(next(&mut a).await, ServerMessage::Signal { .. }));

    let (code_a, _) = until_closed(&mut a, WAIT).await;
    let (code_b, _) = until_closed(&mut b, WAIT).await;
    assert_eq!(code_a, Some(1001));
    assert_eq!(code_b, Some(1001));
    assert!(
        started.elapsed() >= drain_timeout,
        "closed after {:?}",
        started.elapsed()
    );
    gw.stopped(WAIT).await.expect("run returns Ok");
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "the listener is closed once run has returned"
    );
}

#[tokio::test]
async fn drain_ends_as_soon_as_every_client_has_left() {
    let mut gw = TestGateway::with(|c| c.drain_timeout = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&gw, "r").await;
    gw.drain();
    expect_reconnect(&mut a).await;
    expect_reconnect(&mut b).await;
    // A client moving elsewhere would resume there; this one just goes.
    a.abort().await;
    within(WAIT, "close", b.close()).await.unwrap();
    // Well before the 30 s drain timeout.
    gw.stopped(WAIT).await.expect("run returns Ok");
}

#[tokio::test]
async fn drain_with_no_clients_returns_at_once() {
    let mut gw = TestGateway::with(|c| c.drain_timeout = Duration::from_secs(30)).await;
    assert_eq!(gw.http_get("/health").await.0, 200);
    gw.drain();
    gw.stopped(WAIT).await.expect("run returns Ok");
}

#[tokio::test]
async fn health_reports_draining() {
    let mut gw = TestGateway::with(|c| c.drain_timeout = Duration::from_secs(30)).await;
    let mut c = gw.client().await;
    gw.drain();
    expect_reconnect(&mut c).await;
    let h = gw.http("GET", "/health", &[]).await;
    assert_eq!(h.status, 200, "health answers while draining");
    // PROTOCOL.md lists `status` without naming its values; the gateway says
    // "draining", and anything but "ok" is right.
    assert_ne!(h.json()["status"], "ok");
    c.close().await.unwrap();
    gw.stopped(WAIT).await.unwrap();
}
