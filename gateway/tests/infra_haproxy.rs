//! The shipped `infra/haproxy.cfg`, run by Debian's `haproxy` in front of
//! three gateways sharing a Redis started from the shipped `infra/redis.conf`
//! (TLS and password as it configures them, with test certificates): the
//! cookie keeps WebSocket sessions and long-polling requests on one
//! instance, and an instance whose `/ready` turns 503 on SIGTERM leaves
//! rotation while it drains.

mod common;
mod scale;

use common::{WAIT, next, within};
use futures_util::{SinkExt, StreamExt};
use pantheon_client::protocol::ServerMessage;
use pantheon_testkit::infra::{self, tool};
use pantheon_testkit::{
    Gateway, HttpResponse, Proc, Redis, RedisOptions, RedisTls, free_tcp_ports, http_request, poll,
};
use scale::{connect, instance};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const COOKIE: &str = "PANTHEON_SERVER";

/// `haproxy` with the shipped configuration, its backends set by `GW*_ADDR`.
struct Haproxy {
    addr: SocketAddr,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(backends: &[SocketAddr; 3]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_tcp_ports(2);
        let addr: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
        let mut cmd = Command::new(tool("haproxy"));
        cmd.arg("-db")
            .arg("-f")
            .arg(infra::dir().join("haproxy.cfg"))
            .env("LB_BIND", addr.to_string())
            .env("LB_STATS_BIND", format!("127.0.0.1:{}", ports[1]))
            .env("LB_SOCKET", dir.path().join("haproxy.sock"));
        for (i, b) in backends.iter().enumerate() {
            cmd.env(format!("GW{}_ADDR", i + 1), b.to_string());
        }
        let mut proc =
            Proc::spawn("haproxy", cmd, &dir.path().join("haproxy.log")).expect("spawning haproxy");
        // Up once every backend has passed its /ready checks (rise 2).
        let up = poll(Duration::from_secs(15), || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..12 {
                if let Ok(r) = http_request(addr, "GET", "/health", &[]).await
                    && r.status == 200
                {
                    seen.insert(r.json()["server"].as_str().unwrap_or("").to_owned());
                }
            }
            (seen.len() == 3).then_some(())
        })
        .await;
        if up.is_none() || proc.try_status().is_some() {
            panic!(
                "haproxy did not balance over 3 gateways:\n{}",
                proc.log_text()
            );
        }
        Self {
            addr,
            proc,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> HttpResponse {
        let header;
        let headers: &[(&str, &str)] = match cookie {
            Some(c) => {
                header = format!("{COOKIE}={c}");
                &[("Cookie", header.as_str())]
            }
            None => &[],
        };
        within(WAIT, path, http_request(self.addr, "GET", path, headers))
            .await
            .unwrap_or_else(|e| panic!("GET {path} through haproxy: {e}"))
    }
}

fn header<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The cookie value HAProxy set (`gw1`...), if any.
fn set_cookie(r: &HttpResponse) -> Option<String> {
    let v = header(r, "set-cookie")?;
    let pair = v.split(';').next()?;
    pair.strip_prefix(&format!("{COOKIE}=")).map(str::to_owned)
}

/// Opens a WebSocket through HAProxy with `cookie`, says `hello`, and
/// returns the instance named in `welcome` and the HAProxy backend.
async fn websocket_via(
    lb: &Haproxy,
    cookie: &str,
) -> (
    String,
    String,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let mut req = format!("ws://{}/ws", lb.addr)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("Cookie", format!("{COOKIE}={cookie}").parse().unwrap());
    h.insert("Sec-WebSocket-Protocol", "pantheon.v1".parse().unwrap());
    let (mut ws, resp) = within(WAIT, "upgrade", tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade through haproxy");
    let backend = resp
        .headers()
        .get("x-pantheon-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ws.send(Message::text(r#"{"type":"hello","v":1,"id":1}"#))
        .await
        .unwrap();
    let server = loop {
        match within(WAIT, "welcome", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "welcome", "{v}");
                break v["server"].as_str().unwrap().to_owned();
            }
            Some(Ok(_)) => continue,
            other => panic!("no welcome through haproxy: {other:?}"),
        }
    };
    (server, backend, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_sticky_and_takes_a_draining_instance_out_of_rotation() {
    // Redis as infra/redis.conf configures it (TLS only, requirepass), with
    // this test's certificates, password and port.
    let redis = Redis::start(RedisOptions {
        password: Some("infra-test-password".into()),
        tls: Some(RedisTls::ServerOnly),
        conf: Some(infra::dir().join("redis.conf")),
        ..RedisOptions::default()
    })
    .await;
    let mut gws: Vec<Gateway> = Vec::new();
    for name in ["gw-1", "gw-2", "gw-3"] {
        gws.push(instance(name, "local", &redis.env()).spawn().await);
    }
    for gw in &gws {
        assert_eq!(gw.health().await["redis"], "ok");
    }
    let lb = Haproxy::start(&[gws[0].addr(), gws[1].addr(), gws[2].addr()]).await;

    // A first request gets a cookie naming the instance that served it.
    let first = lb.get("/health", None).await;
    assert_eq!(first.status, 200);
    let cookie = set_cookie(&first).expect("haproxy sets the cookie");
    let server = first.json()["server"].as_str().unwrap().to_owned();
    assert_eq!(header(&first, "x-pantheon-backend"), Some(cookie.as_str()));

    // Long-polling: every request with the cookie lands on that instance,
    // and no new cookie is set. (/socket.io/ itself may 404 on a build
    // without the legacy endpoint; the routing is what is checked.)
    for i in 0..10 {
        let r = lb.get("/health", Some(&cookie)).await;
        assert_eq!(r.json()["server"], server.as_str(), "request {i}");
        assert_eq!(set_cookie(&r), None);
        let r = lb
            .get(
                &format!("/socket.io/?EIO=4&transport=polling&t={i}"),
                Some(&cookie),
            )
            .await;
        assert_eq!(header(&r, "x-pantheon-backend"), Some(cookie.as_str()));
    }
    // Each cookie value pins its own instance.
    for (i, gw) in gws.iter().enumerate() {
        let r = lb.get("/health", Some(&format!("gw{}", i + 1))).await;
        assert_eq!(r.json()["server"], gw.name());
    }

    // WebSocket: the upgrade with the cookie reaches the same instance.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (welcomed_by, backend, ws) = websocket_via(&lb, &cookie).await;
        assert_eq!(welcomed_by, server);
        assert_eq!(backend, cookie);
        sockets.push(ws);
    }
    let pinned = gws.iter().find(|g| g.name() == server).unwrap();
    assert_eq!(pinned.health().await["connections"]["websocket"], 3);

    // Drain gw-1 while a client holds it open (so it stays up, draining).
    let mut held = connect(&gws[0]).await;
    gws[0].terminate();
    match next(&mut held).await {
        ServerMessage::Reconnect { reason, .. } => assert_eq!(reason, "draining"),
        other => panic!("expected reconnect, got {other:?}"),
    }
    assert_eq!(gws[0].ready_status().await, 503);
    // HAProxy sees /ready 503 (fall 2, inter 1 s) and stops sending gw1
    // anything, cookie or not, while the process still runs.
    let moved = poll(Duration::from_secs(10), || async {
        let r = lb.get("/health", Some("gw1")).await;
        (r.json()["server"] != "gw-1").then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("gw1 stayed in rotation:\n{}", lb.proc.log_text()));
    let new_cookie = set_cookie(&moved).expect("a new cookie for the new instance");
    assert_ne!(new_cookie, "gw1");
    assert!(gws[0].is_running(), "gw-1 exited instead of draining");
    for _ in 0..12 {
        let r = lb.get("/health", None).await;
        assert_ne!(
            r.json()["server"],
            "gw-1",
            "a new client was sent to the draining gw-1"
        );
    }
    let (welcomed_by, _, _ws) = websocket_via(&lb, "gw1").await;
    assert_ne!(welcomed_by, "gw-1");
    drop(held);
    drop(sockets);
}
