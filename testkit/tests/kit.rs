//! The harness itself: real `redis-server` processes in every mode the
//! gateway tests use, and the delaying proxy.

use pantheon_testkit::resp::{Conn, Value};
use pantheon_testkit::{DelayProxy, Pki, Redis, RedisCluster, RedisOptions, RedisTls};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn ok(v: &Value) -> bool {
    matches!(v, Value::Simple(s) if s == "OK")
}

/// `redis-cli` with `args`, its stdout trimmed.
fn redis_cli(args: &[String]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    )
}

#[tokio::test]
async fn redis_answers_and_restarts_empty_on_the_same_port() {
    let mut redis = Redis::start(RedisOptions::plain()).await;
    let port = redis.port();
    assert_eq!(redis.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    assert!(ok(&redis.cmd(&["SET", "pantheon:forever", "1"]).await));
    assert!(ok(&redis
        .cmd(&["SET", "pantheon:brief", "1", "PX", "60000"])
        .await));
    assert!(ok(&redis.cmd(&["SET", "other:forever", "1"]).await));
    // Persistence is off.
    let save = redis.cmd(&["CONFIG", "GET", "save"]).await;
    assert_eq!(save.items()[1].text().as_deref(), Some(""));
    let aof = redis.cmd(&["CONFIG", "GET", "appendonly"]).await;
    assert_eq!(aof.items()[1].text().as_deref(), Some("no"));
    // Only the key under the prefix without a TTL is reported.
    assert_eq!(
        redis.keys_without_ttl("pantheon:").await,
        vec!["pantheon:forever (string)".to_owned()]
    );
    let mut keys = redis.keys("pantheon:").await;
    keys.sort();
    assert_eq!(keys, ["pantheon:brief", "pantheon:forever"]);

    redis.kill();
    assert!(!redis.is_running());
    assert!(
        TcpStream::connect(redis.addr()).await.is_err(),
        "a killed server refuses connections"
    );
    redis.restart_empty().await;
    assert_eq!(redis.port(), port, "same port");
    assert!(redis.is_running());
    assert!(redis.keys("").await.is_empty(), "data is gone");
}

#[tokio::test]
async fn password_is_enforced() {
    let redis = Redis::start(RedisOptions::password("s3cret pass")).await;
    let mut anon = Conn::connect(redis.addr()).await.unwrap();
    match anon.cmd(&["GET", "k"]).await.unwrap() {
        Value::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("expected NOAUTH, got {other:?}"),
    }
    match anon.cmd(&["AUTH", "wrong"]).await.unwrap() {
        Value::Error(e) => assert!(e.starts_with("WRONGPASS"), "{e}"),
        other => panic!("expected WRONGPASS, got {other:?}"),
    }
    // conn() authenticates.
    assert!(ok(&redis.cmd(&["SET", "k", "v"]).await));
    assert!(redis.url().starts_with("redis://:s3cret pass@127.0.0.1:"));
    let env = redis.env();
    assert!(env.contains(&("REDIS_PASSWORD".into(), "s3cret pass".into())));
    assert!(env.contains(&("REDIS_PORT".into(), redis.port().to_string())));
    let (good, out) = redis_cli(&[
        "-p".into(),
        redis.port().to_string(),
        "--no-auth-warning".into(),
        "-a".into(),
        "s3cret pass".into(),
        "GET".into(),
        "k".into(),
    ]);
    assert!(good && out == "v", "{out}");
}

#[tokio::test]
async fn tls_server_only_accepts_tls_and_refuses_plain() {
    let redis = Redis::start(RedisOptions::tls(RedisTls::ServerOnly)).await;
    let pki = redis.pki().expect("certificates");
    // rustls, verifying the server for 127.0.0.1, no client certificate.
    let mut c = Conn::connect_tls(redis.addr(), pki.client_config(false))
        .await
        .expect("TLS connection");
    assert_eq!(
        c.cmd(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    // Plain RESP on the TLS port gets no reply.
    let mut plain = Conn::connect(redis.addr()).await.unwrap();
    assert!(plain.cmd(&["PING"]).await.is_err(), "plain text must fail");
    // A client that trusts another CA refuses the server.
    let stranger = Pki::generate();
    assert!(
        Conn::connect_tls(redis.addr(), stranger.client_config(false))
            .await
            .is_err(),
        "a server signed by another CA must not verify"
    );
    // redis-cli over TLS.
    let (good, out) = redis_cli(&[
        "-p".into(),
        redis.port().to_string(),
        "--tls".into(),
        "--cacert".into(),
        pki.ca_cert().display().to_string(),
        "PING".into(),
    ]);
    assert!(good && out == "PONG", "{out}");
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let env = redis.env();
    assert!(env.contains(&("REDIS_TLS".into(), "true".into())));
    assert!(env.iter().any(|(k, _)| k == "REDIS_CA_CERT"));
    assert!(!env.iter().any(|(k, _)| k == "REDIS_CLIENT_CERT"));
}

#[tokio::test]
async fn tls_mutual_requires_a_client_certificate() {
    let redis = Redis::start(RedisOptions {
        password: Some("pw".into()),
        tls: Some(RedisTls::Mutual),
        ..RedisOptions::default()
    })
    .await;
    let pki = redis.pki().expect("certificates");
    let mut with_cert = Conn::connect_tls(redis.addr(), pki.client_config(true))
        .await
        .expect("TLS connection with a client certificate");
    with_cert.must(&["AUTH", "pw"]).await;
    assert_eq!(
        with_cert.cmd(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    // Without one the handshake (TLS 1.3: the first read) fails.
    let without = async {
        let mut c = Conn::connect_tls(redis.addr(), pki.client_config(false)).await?;
        c.cmd(&["PING"]).await
    };
    assert!(without.await.is_err(), "no client certificate must fail");
    let (good, out) = redis_cli(&[
        "-p".into(),
        redis.port().to_string(),
        "--tls".into(),
        "--cacert".into(),
        pki.ca_cert().display().to_string(),
        "--cert".into(),
        pki.client_cert().display().to_string(),
        "--key".into(),
        pki.client_key().display().to_string(),
        "--no-auth-warning".into(),
        "-a".into(),
        "pw".into(),
        "PING".into(),
    ]);
    assert!(good && out == "PONG", "{out}");
    let env = redis.env();
    for k in [
        "REDIS_TLS",
        "REDIS_CA_CERT",
        "REDIS_CLIENT_CERT",
        "REDIS_CLIENT_KEY",
    ] {
        assert!(env.iter().any(|(name, _)| name == k), "{k} in {env:?}");
    }
}

#[tokio::test]
async fn cluster_of_three_masters_reaches_ok() {
    let cluster = RedisCluster::start(3).await;
    assert_eq!(cluster.nodes().len(), 3);
    for node in cluster.nodes() {
        let info = node.cmd(&["CLUSTER", "INFO"]).await.text().unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
    }
    // A key lands on the node owning its slot; redis-cli -c follows the
    // redirection from any node.
    let first = cluster.nodes()[0].port().to_string();
    for key in ["a", "b", "c", "{room}x", "{room}y"] {
        let (good, out) = redis_cli(&[
            "-c".into(),
            "-p".into(),
            first.clone(),
            "SET".into(),
            format!("pantheon:{key}"),
            "1".into(),
        ]);
        assert!(good && out == "OK", "{out}");
    }
    let mut keys = cluster.keys("pantheon:").await;
    keys.sort();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_eq!(cluster.keys_without_ttl("pantheon:").await.len(), 5);
    let nodes = cluster.nodes_list();
    assert_eq!(nodes.split(',').count(), 3, "{nodes}");
    assert_eq!(cluster.env()[0].0, "REDIS_CLUSTER_NODES");
}

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_adds_the_delay_each_way_and_preserves_bytes() {
    let delay = Duration::from_millis(30);
    let echo = echo_server().await;
    let proxy = DelayProxy::start(echo, delay).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();

    // One round trip crosses the proxy twice.
    for _ in 0..3 {
        let started = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        let rtt = started.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= 2 * delay, "round trip {rtt:?} < 2 x {delay:?}");
        assert!(rtt < 2 * delay + Duration::from_millis(200), "{rtt:?}");
    }

    // Many writes in flight at once are delayed together, not one after
    // another: a queue, not a sleep per chunk.
    let started = Instant::now();
    for i in 0..50u8 {
        s.write_all(&[i; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = vec![0u8; 500];
    s.read_exact(&mut got).await.unwrap();
    let expected: Vec<u8> = (0..50u8).flat_map(|i| [i; 10]).collect();
    assert_eq!(got, expected, "in order");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "50 chunks took {:?}",
        started.elapsed()
    );

    // A megabyte of varied bytes comes back intact.
    let data: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut r, mut w) = s.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes changed in transit");
    assert_eq!(proxy.connections(), 1);
    assert!(proxy.bytes() >= 2 * data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_the_proxy_is_slower_by_the_round_trip() {
    let redis = Redis::start(RedisOptions::plain()).await;
    let proxy = DelayProxy::start(redis.addr(), Duration::from_millis(30)).await;
    let mut c = Conn::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        c.cmd(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    assert!(started.elapsed() >= Duration::from_millis(60));
    drop(proxy);
    // Stopping the proxy closes its connections.
    assert!(c.cmd(&["PING"]).await.is_err());
}
