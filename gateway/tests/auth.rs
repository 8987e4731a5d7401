//! Authentication (PROTOCOL.md §7) and ICE servers (§3, §8) over real
//! sockets: JWTs (HS256, ES256, RS256) and the legacy `AUTH_KEY` in `hello`
//! over WebSocket and WebTransport, room grants on `join`, `meta.user` from
//! `sub`, resumes across a token's expiry, `POST /turn-token`, and the shape
//! of `welcome.ice_servers`.

mod common;

use base64::Engine as _;
use common::{TestGateway, WAIT, expect_error, expect_peer_joined, next, within};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use pantheon_certs::{Source, Store};
use pantheon_client::protocol::{
    ClientMessage, ErrorCode, Request, Resume, RoomName, ServerMessage,
};
use pantheon_client::raw::RawSession;
use pantheon_client::{Client, Options};
use pantheon_gateway::auth::PublicKey;
use pantheon_gateway::config::auth::Secret;
use pantheon_gateway::gateway::Shared;
use pantheon_gateway::{Config, Gateway, webtransport};
use pantheon_testkit::metric_sum;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "pantheon test secret, thirty-two bytes or more";
const KEY: &str = "legacy-shared-key";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("sign")
}

/// An HS256 token signed with [`SECRET`].
fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims,
    )
}

/// A valid HS256 token for `sub` and `rooms`, an hour long.
fn token(sub: &str, rooms: &[&str]) -> String {
    hs(json!({"sub": sub, "rooms": rooms, "exp": now() + 3600}))
}

fn with_secret(cfg: &mut Config) {
    cfg.auth.jwt_secret = Some(Secret::new(SECRET));
}

fn with_token(token: impl Into<String>) -> Options {
    Options {
        token: Some(token.into()),
        ..Options::default()
    }
}

async fn connect(url: &str, options: Options) -> Client {
    within(WAIT, "connect", Client::connect_with(url, options))
        .await
        .expect("welcomed")
}

/// Sends `hello` (id 7) with `token` and expects what §6 says for a refused
/// one: `error` `unauthorized` echoing the id, then close 4003. Returns the
/// error message.
async fn refused(url: &str, options: &Options, token: Option<&str>) -> String {
    let mut s = within(WAIT, "connect", RawSession::connect_with(url, options))
        .await
        .expect("transport opens");
    s.send_message(&ClientMessage {
        id: Some(7),
        request: Request::Hello {
            v: Some(1),
            token: token.map(str::to_owned),
            resume: options.resume.clone(),
        },
    })
    .await
    .unwrap();
    let message = match within(WAIT, "the error", s.recv_message()).await {
        Ok(r) => match r.message {
            ServerMessage::Error { id, code, message } => {
                assert_eq!(code, ErrorCode::Unauthorized, "{message}");
                assert_eq!(id, Some(7));
                assert!(r.seq.is_none(), "an error before welcome has no seq");
                message
            }
            other => panic!("expected unauthorized, got {other:?}"),
        },
        Err(e) => panic!("expected unauthorized, got {e}"),
    };
    let close = within(WAIT, "the close", s.recv_close()).await.unwrap();
    assert_eq!(close.code, Some(4003), "{close:?}");
    message
}

fn failures(shared: &Shared, reason: &str) -> f64 {
    let text = shared.metrics.encode();
    metric_sum(
        &text,
        "pantheon_auth_failures_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or_else(|| panic!("no auth failure series for {reason}:\n{text}"))
}

fn meta_of(m: &pantheon_client::protocol::Meta) -> Value {
    serde_json::from_str(m.as_str()).unwrap()
}

#[tokio::test]
async fn an_hs256_token_admits_and_its_sub_is_the_users_name_in_meta() {
    let gw = TestGateway::with(with_secret).await;
    let mut alice = connect(&gw.ws_url(), with_token(token("alice", &["lobby"]))).await;
    let bob = connect(&gw.ws_url(), with_token(token("bob", &["lobby"]))).await;
    alice.join("lobby", None).await.unwrap();
    // bob tries to pass as someone else: the server writes his own name.
    let peers = bob
        .join("lobby", Some(json!({"user": "alice", "name": "B"})))
        .await
        .unwrap();
    assert_eq!(meta_of(&peers[0].meta), json!({"user": "alice"}));
    let meta = expect_peer_joined(&mut alice, "lobby", bob.peer()).await;
    assert_eq!(meta, json!({"user": "bob", "name": "B"}));
    // Same for `update`.
    bob.update("lobby", json!({"user": "root", "name": "B2"}))
        .await
        .unwrap();
    match next(&mut alice).await {
        ServerMessage::PeerUpdated { meta, .. } => {
            assert_eq!(meta_of(&meta), json!({"user": "bob", "name": "B2"}));
        }
        other => panic!("expected peer_updated, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_unauthorized_then_4003() {
    let gw = TestGateway::with(with_secret).await;
    let url = gw.ws_url();
    let o = Options::default();
    let other_secret = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret, thirty-two bytes long....."),
        &json!({"sub": "x", "exp": now() + 60}),
    );
    let cases: [(&str, Option<String>, &str, &str); 7] = [
        ("no token", None, "missing", "required"),
        ("empty token", Some(String::new()), "missing", "required"),
        ("not a JWT", Some("hello".into()), "invalid", "not a JWT"),
        (
            "wrong secret",
            Some(other_secret),
            "invalid",
            "bad signature",
        ),
        (
            "expired",
            Some(hs(json!({"sub": "x", "exp": now() - 120}))),
            "expired",
            "expired",
        ),
        (
            "no exp",
            Some(hs(json!({"sub": "x", "rooms": ["*"]}))),
            "invalid",
            "no exp",
        ),
        (
            "rooms not a list",
            Some(hs(json!({"exp": now() + 60, "rooms": "lobby"}))),
            "invalid",
            "malformed claims",
        ),
    ];
    for (what, token, reason, says) in cases {
        let before = failures(&gw.shared, reason);
        let message = refused(&url, &o, token.as_deref()).await;
        assert!(message.contains(says), "{what}: {message:?}");
        assert_eq!(failures(&gw.shared, reason), before + 1.0, "{what}");
    }
    // The client library reports the refusal as the server's error.
    let err = Client::connect_with(&url, Options::default())
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Unauthorized), "{err}");
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let gw = TestGateway::with(|cfg| {
        with_secret(cfg);
        cfg.auth.audience = Some(vec!["pantheon".into(), "signaling".into()]);
        cfg.auth.issuer = Some(vec!["https://idp.example".into()]);
    })
    .await;
    let url = gw.ws_url();
    let exp = now() + 60;
    let good = hs(json!({"exp": exp, "aud": "signaling", "iss": "https://idp.example"}));
    connect(&url, with_token(good)).await;
    let list = hs(json!({"exp": exp, "aud": ["other", "pantheon"], "iss": "https://idp.example"}));
    connect(&url, with_token(list)).await;
    for (claims, says) in [
        (
            json!({"exp": exp, "aud": "other", "iss": "https://idp.example"}),
            "wrong audience",
        ),
        (json!({"exp": exp, "iss": "https://idp.example"}), "no aud"),
        (
            json!({"exp": exp, "aud": "pantheon", "iss": "https://evil.example"}),
            "wrong issuer",
        ),
        (json!({"exp": exp, "aud": "pantheon"}), "no iss"),
    ] {
        let message = refused(&url, &Options::default(), Some(&hs(claims.clone()))).await;
        assert!(message.contains(says), "{claims}: {message:?}");
    }
}

#[tokio::test]
async fn without_a_configured_audience_aud_is_not_looked_at() {
    let gw = TestGateway::with(with_secret).await;
    let t = hs(json!({"exp": now() + 60, "aud": "some-other-service"}));
    connect(&gw.ws_url(), with_token(t)).await;
}

/// Writes `pem` to a file and configures it as AUTH_JWT_PUBLIC_KEY, the way
/// the configuration loads it.
fn public_key_file(pem: &str) -> (tempfile::NamedTempFile, PublicKey) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, pem.as_bytes()).unwrap();
    let key = PublicKey::from_pem(&std::fs::read(f.path()).unwrap()).expect("public key");
    (f, key)
}

/// The SubjectPublicKeyInfo of `pair` as a `PUBLIC KEY` PEM, the way
/// `openssl pkey -pubout` writes it.
fn public_pem(pair: &rcgen::KeyPair) -> String {
    use rcgen::PublicKeyData as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pair.subject_public_key_info());
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[tokio::test]
async fn es256_tokens_verify_with_a_pem_public_key() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (_file, key) = public_key_file(&public_pem(&pair));
    assert_eq!(key.algorithm(), "ES256");
    let gw = TestGateway::with(|cfg| cfg.auth.jwt_public_key = Some(key)).await;
    let signer = EncodingKey::from_ec_der(&pair.serialize_der());
    let claims = json!({"sub": "carol", "rooms": ["r"], "exp": now() + 60});
    let c = connect(
        &gw.ws_url(),
        with_token(sign(Algorithm::ES256, &signer, &claims)),
    )
    .await;
    c.join("r", None).await.unwrap();

    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_der(&stranger.serialize_der()),
        &claims,
    );
    let message = refused(&gw.ws_url(), &Options::default(), Some(&forged)).await;
    assert!(message.contains("bad signature"), "{message}");
    // No secret is configured: HS256 is not accepted (and never with the
    // public key as its secret).
    let message = refused(&gw.ws_url(), &Options::default(), Some(&hs(claims))).await;
    assert!(message.contains("algorithm"), "{message}");
}

#[tokio::test]
async fn rs256_tokens_verify_with_a_pem_public_key() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let public = std::fs::read_to_string(format!("{dir}/rs256-public.pem")).unwrap();
    let private = std::fs::read(format!("{dir}/rs256-private.pem")).unwrap();
    let (_file, key) = public_key_file(&public);
    assert_eq!(key.algorithm(), "RS256");
    let gw = TestGateway::with(|cfg| {
        cfg.auth.jwt_public_key = Some(key);
        with_secret(cfg);
    })
    .await;
    let signer = EncodingKey::from_rsa_pem(&private).unwrap();
    let claims = json!({"sub": "dave", "rooms": ["*"], "exp": now() + 60});
    let c = connect(
        &gw.ws_url(),
        with_token(sign(Algorithm::RS256, &signer, &claims)),
    )
    .await;
    c.join("anything", None).await.unwrap();
    // With both configured, HS256 tokens are accepted too.
    connect(&gw.ws_url(), with_token(hs(claims.clone()))).await;
    // RS384 is not RS256.
    let message = refused(
        &gw.ws_url(),
        &Options::default(),
        Some(&sign(Algorithm::RS384, &signer, &claims)),
    )
    .await;
    assert!(message.contains("algorithm"), "{message}");
    // A flipped signature byte.
    let good = sign(Algorithm::RS256, &signer, &claims);
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    sig[10] ^= 1;
    let tampered = format!(
        "{head}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    );
    let message = refused(&gw.ws_url(), &Options::default(), Some(&tampered)).await;
    assert!(message.contains("bad signature"), "{message}");
}

#[tokio::test]
async fn rooms_grants_are_enforced_on_every_join() {
    let gw = TestGateway::with(with_secret).await;
    let mut c = connect(
        &gw.ws_url(),
        with_token(token("erin", &["lobby", "team-*"])),
    )
    .await;
    c.join("lobby", None).await.unwrap();
    c.join("team-red", None).await.unwrap();
    c.join("team-", None).await.unwrap();
    let before = failures(&gw.shared, "forbidden_room");
    for room in ["lobby2", "team", "other", "lobb"] {
        let err = c.join(room, None).await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::Unauthorized), "{room}");
    }
    assert_eq!(failures(&gw.shared, "forbidden_room"), before + 4.0);
    // Without an id, the error comes without one; the connection stays.
    c.send(
        Request::Join {
            room: RoomName::new("secret").unwrap(),
            meta: None,
        },
        false,
    )
    .await
    .unwrap();
    expect_error(&mut c, None, ErrorCode::Unauthorized).await;
    c.ping().await.expect("still connected");
    // Nobody else sees a refused join.
    assert_eq!(
        c.peers("lobby").await.unwrap().len(),
        0,
        "only erin is in lobby"
    );

    // A token without `rooms` connects but joins nothing.
    let c = connect(
        &gw.ws_url(),
        with_token(hs(json!({"sub": "f", "exp": now() + 60}))),
    )
    .await;
    let err = c.join("lobby", None).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn the_legacy_auth_key_admits_to_every_room_without_a_user() {
    let gw = TestGateway::with(|cfg| {
        with_secret(cfg);
        cfg.auth.key = Some(Secret::new(KEY));
    })
    .await;
    let mut a = connect(&gw.ws_url(), with_token(KEY)).await;
    let b = connect(&gw.ws_url(), with_token(KEY)).await;
    a.join("any-room", None).await.unwrap();
    b.join("any-room", Some(json!({"user": "admin", "x": 1})))
        .await
        .unwrap();
    // No subject: a forged `user` is removed.
    assert_eq!(
        expect_peer_joined(&mut a, "any-room", b.peer()).await,
        json!({"x": 1})
    );
    for wrong in [&KEY[1..], "legacy-shared-keY", "legacy-shared-key "] {
        refused(&gw.ws_url(), &Options::default(), Some(wrong)).await;
    }

    // AUTH_KEY alone turns authentication on too.
    let gw = TestGateway::with(|cfg| cfg.auth.key = Some(Secret::new(KEY))).await;
    connect(&gw.ws_url(), with_token(KEY)).await;
    let message = refused(&gw.ws_url(), &Options::default(), Some(&token("x", &[]))).await;
    assert!(message.contains("not the shared key"), "{message}");
    refused(&gw.ws_url(), &Options::default(), None).await;
}

#[tokio::test]
async fn a_session_outlives_its_token_but_a_resume_needs_a_valid_one() {
    let gw = TestGateway::with(|cfg| {
        with_secret(cfg);
        cfg.auth.leeway = Duration::ZERO;
    })
    .await;
    let url = gw.ws_url();
    let exp = now() + 2;
    let short = hs(json!({"sub": "gina", "rooms": ["room"], "exp": exp}));
    let mut c = connect(&url, with_token(&short)).await;
    c.join("room", None).await.unwrap();
    let peer = c.peer().clone();

    // Before expiry: a resume with the same token works.
    c.abort().await;
    let mut c = connect(
        &url,
        Options {
            resume: Some(c.resume_info()),
            ..with_token(&short)
        },
    )
    .await;
    assert!(c.welcome().resumed);
    assert_eq!(c.peer(), &peer);

    // The token expires; the live session goes on, joins included.
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.ping().await.expect("the session outlives its token");
    c.join("room", None)
        .await
        .expect("granted rooms stay joinable");

    // A resume with the expired token is refused (and leaves the session
    // in its grace window)...
    c.abort().await;
    let resume: Resume = c.resume_info();
    let message = refused(
        &url,
        &Options {
            resume: Some(resume.clone()),
            ..Options::default()
        },
        Some(&short),
    )
    .await;
    assert!(message.contains("expired"), "{message}");
    // ...another subject's valid token does not resume it either: a new
    // session, and the old one stays resumable...
    let before = failures(&gw.shared, "wrong_subject");
    let other = connect(
        &url,
        Options {
            resume: Some(resume.clone()),
            ..with_token(token("mallory", &["room"]))
        },
    )
    .await;
    assert!(!other.welcome().resumed);
    assert_ne!(other.peer(), &peer);
    assert_eq!(failures(&gw.shared, "wrong_subject"), before + 1.0);
    // ...nor does a token without a subject...
    let anon = connect(
        &url,
        Options {
            resume: Some(resume.clone()),
            ..with_token(hs(json!({"rooms": ["*"], "exp": now() + 60})))
        },
    )
    .await;
    assert!(!anon.welcome().resumed);
    // ...while a fresh token of the same subject does.
    let c = connect(
        &url,
        Options {
            resume: Some(resume),
            ..with_token(token("gina", &["room"]))
        },
    )
    .await;
    assert!(c.welcome().resumed);
    assert_eq!(c.peer(), &peer);
}

/// A gateway serving WebSocket and WebTransport (self-signed certificate).
struct WtGateway {
    url: String,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

async fn wt_gateway(adjust: impl FnOnce(&mut Config)) -> WtGateway {
    let mut config = Config::for_tests(0);
    adjust(&mut config);
    let certs = Arc::new(Store::new(Source::self_signed_local()).expect("dev cert"));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wt = webtransport::Listener::bind("127.0.0.1:0".parse().unwrap(), &certs, &config)
        .expect("bind WebTransport");
    let url = format!("https://127.0.0.1:{}/wt", wt.local_addr().unwrap().port());
    let gateway = Gateway::builder(config).webtransport(certs, wt).build();
    let shared = gateway.shared().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.run(tcp, async move {
        let _ = stopped.await;
    }));
    WtGateway {
        url,
        shared,
        _stop: stop,
    }
}

#[tokio::test]
async fn webtransport_hello_is_authenticated_the_same_way() {
    let gw = wt_gateway(|cfg| {
        with_secret(cfg);
        cfg.auth.key = Some(Secret::new(KEY));
    })
    .await;
    let insecure = Options::insecure();
    let mut a = connect(
        &gw.url,
        Options {
            token: Some(token("hana", &["wt-*"])),
            ..Options::insecure()
        },
    )
    .await;
    let b = connect(
        &gw.url,
        Options {
            token: Some(KEY.into()),
            ..Options::insecure()
        },
    )
    .await;
    a.join("wt-1", Some(json!({"user": "x"}))).await.unwrap();
    let peers = b.join("wt-1", None).await.unwrap();
    assert_eq!(meta_of(&peers[0].meta), json!({"user": "hana"}));
    expect_peer_joined(&mut a, "wt-1", b.peer()).await;
    let err = a.join("lobby", None).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Unauthorized));

    refused(&gw.url, &insecure, None).await;
    refused(&gw.url, &insecure, Some("not-the-key")).await;
    let expired = hs(json!({"sub": "hana", "exp": now() - 600}));
    let message = refused(&gw.url, &insecure, Some(&expired)).await;
    assert!(message.contains("expired"), "{message}");
    assert!(failures(&gw.shared, "missing") >= 1.0);
    assert!(failures(&gw.shared, "expired") >= 1.0);
}

fn ice_config(cfg: &mut Config) {
    cfg.ice.stun_urls = vec!["stun:stun.example.org:3478".into()];
    cfg.ice.turn_urls = vec![
        "turn:turn.example.org:3478?transport=udp".into(),
        "turns:turn.example.org:5349?transport=tcp".into(),
    ];
    cfg.ice.turn_secret = Some(Secret::new("turn-shared-secret"));
    cfg.ice.turn_ttl = Duration::from_secs(3600);
}

/// Checks one TURN entry: `username` = `<expiry>:<user>` with the expiry
/// `ttl` from now, `credential` = base64(HMAC-SHA1(secret, username))
/// computed here independently.
fn check_turn(entry: &Value, user: &str, ttl: u64) {
    let username = entry["username"].as_str().expect("username");
    let (expiry, who) = username.split_once(':').expect("<expiry>:<user>");
    assert_eq!(who, user);
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry.abs_diff(now() + ttl) <= 5,
        "expiry {expiry} is not now + {ttl}"
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"turn-shared-secret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(entry["credential"], json!(expected));
}

#[tokio::test]
async fn welcome_carries_ice_servers_as_the_protocol_shows() {
    let gw = TestGateway::with(ice_config).await;
    let mut raw = gw.raw().await;
    raw.send_text(r#"{"type":"hello","v":1}"#).await.unwrap();
    let welcome = match raw.recv().await.unwrap() {
        Some(pantheon_client::raw::Frame::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("expected welcome, got {other:?}"),
    };
    let peer = welcome["peer"].as_str().unwrap();
    let ice = welcome["ice_servers"].as_array().expect("ice_servers");
    assert_eq!(ice.len(), 3, "{ice:?}");
    assert_eq!(ice[0], json!({"urls": "stun:stun.example.org:3478"}));
    assert_eq!(ice[1]["urls"], "turn:turn.example.org:3478?transport=udp");
    assert_eq!(ice[2]["urls"], "turns:turn.example.org:5349?transport=tcp");
    for turn in &ice[1..] {
        assert_eq!(turn.as_object().unwrap().len(), 3, "{turn}");
        check_turn(turn, peer, 3600);
    }
    // Without servers configured, the field is absent.
    let gw = TestGateway::start().await;
    let c = gw.client().await;
    assert_eq!(c.welcome().ice_servers, None);
}

#[tokio::test]
async fn turn_token_needs_a_bearer_token_when_auth_is_on() {
    let gw = TestGateway::with(|cfg| {
        with_secret(cfg);
        cfg.auth.key = Some(Secret::new(KEY));
        ice_config(cfg);
    })
    .await;
    let post = |headers: Vec<(&'static str, String)>| {
        let gw = &gw;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gw.http("POST", "/turn-token", &h).await
        }
    };
    let before = failures(&gw.shared, "missing");
    let r = post(vec![]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(failures(&gw.shared, "missing"), before + 1.0);
    for bad in [
        "Bearer nonsense".to_owned(),
        format!("Basic {KEY}"),
        format!("Bearer {}", hs(json!({"sub": "x", "exp": now() - 600}))),
    ] {
        let r = post(vec![("Authorization", bad.clone())]).await;
        assert_eq!(r.status, 401, "{bad}: {}", r.body);
    }

    let r = post(vec![(
        "Authorization",
        format!("Bearer {}", token("ivan", &[])),
    )])
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["ttl"], 3600);
    let ice = body["ice_servers"].as_array().unwrap();
    assert_eq!(ice.len(), 3);
    assert_eq!(ice[0], json!({"urls": "stun:stun.example.org:3478"}));
    check_turn(&ice[1], "ivan", 3600);

    // The shared key, with a lower-case scheme: an anonymous user part.
    let r = post(vec![("authorization", format!("bearer {KEY}"))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.json()["ice_servers"][1]["username"]
        .as_str()
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    assert!(user.starts_with("anon-"), "{user}");

    // A `sub` that is not a plain name does not go into TURN usernames.
    let odd = hs(json!({"sub": "a:b c", "exp": now() + 60}));
    let r = post(vec![("Authorization", format!("Bearer {odd}"))]).await;
    let name = r.json()["ice_servers"][1]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        name.split_once(':').unwrap().1.starts_with("anon-"),
        "{name}"
    );
}

#[tokio::test]
async fn turn_token_without_auth_answers_anyone_anonymously() {
    let gw = TestGateway::with(ice_config).await;
    let r = gw.http("POST", "/turn-token", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let turn = &body["ice_servers"][1];
    let user = turn["username"]
        .as_str()
        .unwrap()
        .split_once(':')
        .unwrap()
        .1;
    assert!(user.starts_with("anon-"), "{user}");
    check_turn(turn, user, 3600);
    // GET is not the method.
    assert_eq!(gw.http("GET", "/turn-token", &[]).await.status, 405);
    // With nothing configured: an empty list.
    let gw = TestGateway::start().await;
    let r = gw.http("POST", "/turn-token", &[]).await;
    assert_eq!(r.json(), json!({"ice_servers": [], "ttl": 86400}));
}

fn pantheon() -> &'static str {
    env!("CARGO_BIN_EXE_pantheon")
}

/// Starts the binary with `env` and expects exit status 64; returns its log.
async fn exits_with_64(env: &[(&str, String)]) -> String {
    let mut b = pantheon_testkit::Gateway::builder(pantheon())
        .name("refused")
        .wait(pantheon_testkit::Wait::Listening);
    for (k, v) in env {
        b = b.env(*k, v.clone());
    }
    match b.try_spawn().await {
        Err(exited) => {
            assert_eq!(exited.code, Some(64), "{}", exited.log);
            exited.log
        }
        Ok(_) => panic!("the gateway started with {env:?}"),
    }
}

#[tokio::test]
async fn a_bad_public_key_file_stops_the_gateway_with_64_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let private = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rs256-private.pem"
    ))
    .unwrap();
    let cases = [
        ("/nonexistent/key.pem".to_owned(), "cannot read"),
        (write("text.pem", "hello\n"), "not a PEM file"),
        (write("private.pem", &private), "private key"),
        (write("p384.pem", &public_pem(&p384)), "P-256"),
        (
            write(
                "garbage.pem",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            ),
            "not an EC P-256 or RSA public key",
        ),
    ];
    for (path, says) in cases {
        let log = exits_with_64(&[("AUTH_JWT_PUBLIC_KEY", path.clone())]).await;
        assert!(
            log.contains("AUTH_JWT_PUBLIC_KEY") && log.contains(says),
            "{path}: {log}"
        );
    }
    // Every bad variable at once, and no secret in the message.
    let log = exits_with_64(&[
        ("AUTH_JWT_PUBLIC_KEY", "/nonexistent/key.pem".into()),
        ("AUTH_JWT_SECRET", "short-S3CRET".into()),
        ("TURN_URLS", "turn:t.example:3478".into()),
        ("TURN_TTL", "forever".into()),
    ])
    .await;
    for name in [
        "AUTH_JWT_PUBLIC_KEY",
        "AUTH_JWT_SECRET",
        "TURN_URLS",
        "TURN_TTL",
    ] {
        assert!(log.contains(name), "{name} missing: {log}");
    }
    assert!(!log.contains("S3CRET"), "{log}");
}

#[tokio::test]
async fn refusals_are_logged_and_counted_without_secrets_or_tokens() {
    const JWT_SECRET: &str = "jwt-secret-SENTINEL-0123456789abcdef0123";
    const AUTH_KEY: &str = "auth-key-SENTINEL";
    const TURN_SECRET: &str = "turn-secret-SENTINEL";
    let gw = pantheon_testkit::Gateway::builder(pantheon())
        .name("auth-log")
        .env("RUST_LOG", "debug")
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .env("AUTH_KEY", AUTH_KEY)
        .env("TURN_URLS", "turn:127.0.0.1:3478")
        .env("TURN_SECRET", TURN_SECRET)
        .spawn()
        .await;
    let url = gw.ws_url();
    let signed = |claims: Value| {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            &claims,
        )
    };
    let expired = signed(json!({"sub": "u", "exp": now() - 600}));
    let wrong = "token-SENTINEL-not-a-jwt";
    let o = Options::default();
    refused(&url, &o, Some(&expired)).await;
    refused(&url, &o, Some(wrong)).await;
    refused(&url, &o, None).await;
    let r = gw
        .http(
            "POST",
            "/turn-token",
            &[("Authorization", &format!("Bearer {wrong}"))],
        )
        .await;
    assert_eq!(r.status, 401);
    let good = signed(json!({"sub": "u", "rooms": ["a"], "exp": now() + 60}));
    let c = connect(&url, with_token(&good)).await;
    let err = c.join("b", None).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Unauthorized));
    let turn = c.welcome().ice_servers.clone().unwrap();
    let credential = turn[0].credential.clone().unwrap();

    let metrics = gw.metrics().await;
    for (reason, n) in [
        ("expired", 1.0),
        ("invalid", 2.0),
        ("missing", 1.0),
        ("forbidden_room", 1.0),
    ] {
        assert_eq!(
            metric_sum(
                &metrics,
                "pantheon_auth_failures_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(n),
            "{reason}"
        );
    }
    let log = gw.log();
    assert!(log.contains("hello refused"), "{log}");
    assert!(log.contains("/turn-token refused"), "{log}");
    assert!(log.contains("join refused"), "{log}");
    for secret in [
        JWT_SECRET,
        AUTH_KEY,
        TURN_SECRET,
        wrong,
        &expired,
        &good,
        &credential,
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    assert!(!log.contains("SENTINEL"), "{log}");
}
