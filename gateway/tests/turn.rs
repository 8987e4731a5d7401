//! TURN credentials against a real coturn (Debian's `coturn` package):
//! `turnserver` with `use-auth-secret` on loopback, and
//! `turnutils_uclient` allocating relays with the credentials the gateway
//! issued in `welcome` and from `POST /turn-token`. They must work, and a
//! tampered or expired credential must not.

mod common;

use common::{TestGateway, WAIT, within};
use pantheon_client::Client;
use pantheon_gateway::Config;
use pantheon_gateway::config::auth::Secret;
use pantheon_testkit::free_udp_port;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const SECRET: &str = "coturn-static-auth-secret";
const REALM: &str = "pantheon.test";

/// A `turnserver` on 127.0.0.1, killed on drop.
struct TurnServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl TurnServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty configuration file: nothing from /etc/turnserver.conf.
        let conf = dir.path().join("turnserver.conf");
        std::fs::write(&conf, "").unwrap();
        let log = dir.path().join("turnserver.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_udp_port();
        let arg = |k: &str, v: &dyn std::fmt::Display| format!("--{k}={v}");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .args([
                arg("listening-ip", &"127.0.0.1"),
                arg("listening-port", &port),
                arg("relay-ip", &"127.0.0.1"),
                arg("static-auth-secret", &SECRET),
                arg("realm", &REALM),
                arg("pidfile", &dir.path().join("turnserver.pid").display()),
                arg("db", &dir.path().join("turndb").display()),
                arg("log-file", &"stdout"),
            ])
            .args([
                "--use-auth-secret",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                // UDP only: the test's allocations are UDP, and a TCP
                // listener on the same number could find it taken (the UDP
                // port was free, a TCP one of the same number need not be).
                "--no-tcp",
                "--simple-log",
                // The test's two allocations relay to each other on loopback.
                "--allow-loopback-peers",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("turnserver (Debian package coturn; scripts/test installs it)");
        let server = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    /// Until a STUN binding request is answered. The client waits forever
    /// for an answer to a request sent before the server listened, hence
    /// timeout(1).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new("timeout")
                .args(["2", "turnutils_stunclient", "-p", &self.port.to_string()])
                .arg("127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not answer STUN within 10 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Two allocations relaying to each other (`-y`) with these
    /// credentials; whether both allocations and the exchange succeeded.
    async fn allocate(&self, username: &str, credential: &str) -> (bool, String) {
        // coreutils' timeout(1) bounds a hung client (status 124).
        let mut cmd = Command::new("timeout");
        cmd.args(["20", "turnutils_uclient", "-y", "-n", "2", "-m", "1"])
            .args(["-p", &self.port.to_string()])
            .args(["-u", username, "-w", credential, "127.0.0.1"])
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("turnutils_uclient runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn turn_config(turn: &TurnServer, ttl: u64) -> impl FnOnce(&mut Config) {
    let url = turn.url();
    move |cfg: &mut Config| {
        cfg.ice.turn_urls = vec![url];
        cfg.ice.turn_secret = Some(Secret::new(SECRET));
        cfg.ice.turn_ttl = Duration::from_secs(ttl);
    }
}

fn credentials(entry: &Value) -> (String, String) {
    (
        entry["username"].as_str().expect("username").to_owned(),
        entry["credential"].as_str().expect("credential").to_owned(),
    )
}

async fn from_welcome(gw: &TestGateway) -> (String, String) {
    let c = within(WAIT, "connect", Client::connect(&gw.ws_url()))
        .await
        .unwrap();
    let ice = c.welcome().ice_servers.clone().expect("ice_servers");
    assert_eq!(ice.len(), 1);
    assert_eq!(
        ice[0]
            .username
            .as_deref()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1,
        c.peer().as_str(),
        "the user part is the peer"
    );
    (
        ice[0].username.clone().unwrap(),
        ice[0].credential.clone().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_issued_credentials_and_refuses_tampered_or_expired_ones() {
    let turn = TurnServer::start();
    let gw = TestGateway::with(turn_config(&turn, 3600)).await;

    let (user, pass) = from_welcome(&gw).await;
    let (ok, out) = turn.allocate(&user, &pass).await;
    assert!(ok, "welcome's credential refused:\n{out}\n{}", turn.log());

    let r = gw.http("POST", "/turn-token", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (user2, pass2) = credentials(&r.json()["ice_servers"][0]);
    let (ok, out) = turn.allocate(&user2, &pass2).await;
    assert!(
        ok,
        "/turn-token's credential refused:\n{out}\n{}",
        turn.log()
    );

    // A credential with one character changed.
    let mut tampered = pass.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (ok, out) = turn.allocate(&user, &tampered).await;
    assert!(!ok, "a tampered credential was accepted:\n{out}");
    // The username's expiry pushed later, keeping the credential.
    let (expiry, who) = user.split_once(':').unwrap();
    let later = format!("{}:{who}", expiry.parse::<u64>().unwrap() + 86_400);
    let (ok, out) = turn.allocate(&later, &pass).await;
    assert!(!ok, "a username with a changed expiry was accepted:\n{out}");
    // Another peer's name with this peer's credential.
    let (ok, out) = turn.allocate(&user2.replace(':', ":x"), &pass2).await;
    assert!(!ok, "a username with a changed user was accepted:\n{out}");

    // Credentials that expire 2 s after issue: refused once expired.
    let short = TestGateway::with(turn_config(&turn, 2)).await;
    let (user, pass) = from_welcome(&short).await;
    let expiry: u64 = user.split_once(':').unwrap().0.parse().unwrap();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= expiry
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = turn.allocate(&user, &pass).await;
    assert!(!ok, "an expired credential was accepted:\n{out}");
}
