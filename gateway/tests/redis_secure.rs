//! Redis with a password and with TLS (server-only and mutual), as managed
//! Redis services run it; and the gateway refusing to start when TLS is
//! asked for but cannot be verified.

mod common;
mod scale;

use pantheon_testkit::{Pki, Redis, RedisOptions, RedisTls, Wait};
use scale::{assert_keys_expire, cross_instance_basics, instance, pantheon};
use std::time::Duration;

const PASSWORD: &str = "pw-7f3a9c-do-not-log";

/// The password appears nowhere the gateway shows: its log, `/health`,
/// `/metrics`.
async fn assert_secret_kept(gws: &[&pantheon_testkit::Gateway], secret: &str) {
    for gw in gws {
        assert!(
            !gw.log().contains(secret),
            "{} logged the password",
            gw.name()
        );
        for path in ["/health", "/metrics", "/ready"] {
            let (_, body) = gw.http_get(path).await;
            assert!(
                !body.contains(secret),
                "{path} of {} shows the password",
                gw.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_with_redis_password() {
    let redis = Redis::start(RedisOptions::password(PASSWORD)).await;
    let env = redis.env();
    assert!(env.iter().any(|(k, _)| k == "REDIS_PASSWORD"));
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &env).spawn().await;
    cross_instance_basics(&[&a, &b]).await;
    assert_secret_kept(&[&a, &b], PASSWORD).await;
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_with_the_password_in_redis_url() {
    let redis = Redis::start(RedisOptions::password(PASSWORD)).await;
    let a = instance("gw-a", "local", &redis.url_env()).spawn().await;
    let b = instance("gw-b", "local", &redis.env()).spawn().await;
    cross_instance_basics(&[&a, &b]).await;
    assert_secret_kept(&[&a, &b], PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_never_ready_and_never_shown() {
    let redis = Redis::start(RedisOptions::password(PASSWORD)).await;
    let wrong = "wrong-pw-5d1e-do-not-log";
    let attempt = instance("gw-a", "local", &[])
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port().to_string())
        .env("REDIS_PASSWORD", wrong)
        .wait(Wait::Listening)
        .try_spawn()
        .await;
    match attempt {
        // Refusing to start is one right answer...
        Err(exited) => {
            assert_ne!(exited.code, Some(0), "{}", exited.log);
            assert!(!exited.log.contains(wrong), "the password is in the output");
        }
        // ...running without being ready is the other.
        Ok(mut gw) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if gw.is_running() {
                assert_eq!(gw.ready_status().await, 503, "ready with a wrong password");
                assert_eq!(gw.health().await["redis"], "down");
                assert_secret_kept(&[&gw], wrong).await;
            } else {
                assert!(!gw.log().contains(wrong));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifying_the_server() {
    let redis = Redis::start(RedisOptions::tls(RedisTls::ServerOnly)).await;
    // REDIS_HOST/REDIS_PORT + REDIS_TLS=true + REDIS_CA_CERT on one,
    // rediss:// + REDIS_CA_CERT on the other.
    let a = instance("gw-a", "local", &redis.env()).spawn().await;
    let b = instance("gw-b", "local", &redis.url_env()).spawn().await;
    cross_instance_basics(&[&a, &b]).await;
    assert_keys_expire(&redis, "pantheon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_password() {
    let redis = Redis::start(RedisOptions {
        password: Some(PASSWORD.into()),
        tls: Some(RedisTls::Mutual),
        ..RedisOptions::default()
    })
    .await;
    let a = instance("gw-a", "local", &redis.env()).spawn().await;
    let b = instance("gw-b", "local", &redis.url_env()).spawn().await;
    let c = instance("gw-c", "local", &redis.env()).spawn().await;
    cross_instance_basics(&[&a, &b, &c]).await;
    assert_secret_kept(&[&a, &b, &c], PASSWORD).await;
    assert_keys_expire(&redis, "pantheon").await;
}

/// Starts a gateway against `redis` with its variables changed by `adjust`
/// and expects it to exit soon with status 64 (bad configuration); returns
/// its log.
async fn expect_refusal(redis: &Redis, adjust: impl FnOnce(&mut Vec<(String, String)>)) -> String {
    let mut env = redis.env();
    adjust(&mut env);
    let result = pantheon_testkit::Gateway::builder(pantheon())
        .name("refused")
        .envs(env)
        .wait(Wait::Listening)
        .try_spawn()
        .await;
    let (code, log) = match result {
        Err(exited) => (exited.code, exited.log),
        Ok(mut gw) => match gw.wait_exit(Duration::from_secs(10)).await {
            Some(status) => (status.code(), gw.log()),
            None => panic!(
                "the gateway is still running 10 s after start instead of exiting with 64 \
                 (/ready {}, /health redis {}); log:\n{}",
                gw.ready_status().await,
                gw.health().await["redis"],
                gw.log()
            ),
        },
    };
    assert_eq!(code, Some(64), "exit status; log:\n{log}");
    log
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_server_stops_the_gateway_with_64() {
    let redis = Redis::start(RedisOptions::tls(RedisTls::ServerOnly)).await;
    let stranger = Pki::generate();
    let log = expect_refusal(&redis, |env| {
        set(
            env,
            "REDIS_CA_CERT",
            stranger.ca_cert().display().to_string(),
        )
    })
    .await;
    assert!(
        log.contains("REDIS"),
        "the message names the setting:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_stops_the_gateway_with_64() {
    let redis = Redis::start(RedisOptions::tls(RedisTls::ServerOnly)).await;
    let log = expect_refusal(&redis, |env| {
        set(env, "REDIS_CA_CERT", "/nonexistent/ca.pem".into())
    })
    .await;
    assert!(
        log.contains("REDIS_CA_CERT"),
        "the message names the variable:\n{log}"
    );
    // Not PEM at all.
    let junk = std::env::temp_dir().join(format!("pantheon-junk-ca-{}.pem", std::process::id()));
    std::fs::write(&junk, "not a certificate").unwrap();
    let log = expect_refusal(&redis, |env| {
        set(env, "REDIS_CA_CERT", junk.display().to_string())
    })
    .await;
    let _ = std::fs::remove_file(&junk);
    assert!(log.contains("REDIS_CA_CERT"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_redis_username() {
    let redis = Redis::start(RedisOptions::password(PASSWORD)).await;
    let user_pw = "acl-pw-0b7e-do-not-log";
    redis
        .cmd(&[
            "ACL",
            "SETUSER",
            "pantheon-gw",
            "on",
            &format!(">{user_pw}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    let env = vec![
        ("REDIS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("REDIS_PORT".to_owned(), redis.port().to_string()),
        ("REDIS_USERNAME".to_owned(), "pantheon-gw".to_owned()),
        ("REDIS_PASSWORD".to_owned(), user_pw.to_owned()),
    ];
    let url = vec![(
        "REDIS_URL".to_owned(),
        format!("redis://pantheon-gw:{user_pw}@127.0.0.1:{}", redis.port()),
    )];
    let a = instance("gw-a", "local", &env).spawn().await;
    let b = instance("gw-b", "local", &url)
        .env("REDIS_POOL_SIZE", "2")
        .spawn()
        .await;
    cross_instance_basics(&[&a, &b]).await;
    assert_secret_kept(&[&a, &b], user_pw).await;
    // The gateways really are that user.
    let clients = redis.cmd(&["CLIENT", "LIST"]).await.text().unwrap();
    assert!(clients.contains("user=pantheon-gw"), "{clients}");
    assert_keys_expire(&redis, "pantheon").await;
}
