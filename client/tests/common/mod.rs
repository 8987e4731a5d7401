//! An in-process gateway serving both transports — WebSocket on TCP and
//! WebTransport on UDP, both on loopback with free ports — and clients of
//! either transport. The event helpers (`next`, `expect_peer_left`,
//! `fence`, ...) work on any [`Client`] and are the gateway tests' own
//! (gateway/tests/common/mod.rs), reused rather than copied.
#![allow(dead_code, unreachable_pub)]

#[path = "../../../gateway/tests/common/mod.rs"]
mod gateway_common;

#[allow(unused_imports)]
pub use gateway_common::{
    WAIT, assert_nothing_pending, assert_quiet, expect_error, expect_peer_joined, expect_peer_left,
    fence, json_of, next, next_msg, until_closed, within,
};

use pantheon_certs::{Source, Store};
use pantheon_client::raw::RawSession;
use pantheon_client::{Client, Options, Transport};
use pantheon_gateway::gateway::Shared;
use pantheon_gateway::metrics;
use pantheon_gateway::{Config, Gateway, webtransport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Both transports, for tests that run over each.
pub const BOTH: [Transport; 2] = [Transport::WebSocket, Transport::WebTransport];

/// A gateway with both listeners.
#[derive(Debug)]
pub struct Gw {
    /// TCP: WebSocket and HTTP.
    pub http: SocketAddr,
    /// UDP: WebTransport.
    pub wt: SocketAddr,
    /// The self-signed certificate's SHA-256, as `/webtransport/cert-hash`
    /// serves it.
    pub cert_hash: [u8; 32],
    /// The gateway's state.
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<std::io::Result<()>>,
}

impl Gw {
    /// A gateway with the test defaults (`Config::for_tests`).
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A gateway whose config `adjust` changed first.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests(0);
        adjust(&mut config);
        let certs = Arc::new(Store::new(Source::self_signed_local()).expect("dev cert"));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind TCP");
        let wt = webtransport::Listener::bind("127.0.0.1:0".parse().unwrap(), &certs, &config)
            .expect("bind WebTransport");
        let (http, wt_addr) = (tcp.local_addr().unwrap(), wt.local_addr().unwrap());
        let gateway = Gateway::builder(config).webtransport(certs, wt).build();
        let shared = gateway.shared().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(gateway.run(tcp, async move {
            let _ = stopped.await;
        }));
        // What a client does: ask the gateway for its certificate's hash.
        let cert_hash = within(
            WAIT,
            "the cert hash",
            pantheon_client::fetch_cert_hash(&format!("http://{http}")),
        )
        .await
        .expect("GET /webtransport/cert-hash");
        Self {
            http,
            wt: wt_addr,
            cert_hash,
            shared,
            stop: Some(stop),
            run,
        }
    }

    /// The URL of `transport`.
    pub fn url(&self, transport: Transport) -> String {
        match transport {
            Transport::WebSocket => format!("ws://{}/ws", self.http),
            Transport::WebTransport => format!("https://127.0.0.1:{}/wt", self.wt.port()),
        }
    }

    /// Default options that trust this gateway's certificate.
    pub fn options(&self) -> Options {
        Options::with_cert_hash(self.cert_hash)
    }

    /// `options` that trust this gateway's certificate.
    pub fn trusting(&self, options: Options) -> Options {
        Options {
            cert_hashes: vec![self.cert_hash],
            ..options
        }
    }

    /// A welcomed client over `transport`.
    pub async fn client(&self, transport: Transport) -> Client {
        self.client_with(transport, Options::default()).await
    }

    /// A welcomed client over `transport`, trusting this gateway.
    pub async fn client_with(&self, transport: Transport, options: Options) -> Client {
        self.connect(transport, options)
            .await
            .unwrap_or_else(|e| panic!("{transport} connect: {e}"))
    }

    /// Connects over `transport`, trusting this gateway; may fail.
    pub async fn connect(
        &self,
        transport: Transport,
        options: Options,
    ) -> Result<Client, pantheon_client::Error> {
        within(
            WAIT,
            "connect",
            Client::connect_with(&self.url(transport), self.trusting(options)),
        )
        .await
    }

    /// A bare session over `transport` (nothing sent).
    pub async fn raw(&self, transport: Transport) -> RawSession {
        within(
            WAIT,
            "raw connect",
            RawSession::connect_with(&self.url(transport), &self.options()),
        )
        .await
        .unwrap_or_else(|e| panic!("{transport} raw connect: {e}"))
    }

    /// Open connections of `transport`, as the gateway counts them.
    pub fn connections(&self, transport: Transport) -> i64 {
        let t = match transport {
            Transport::WebSocket => metrics::Transport::websocket,
            Transport::WebTransport => metrics::Transport::webtransport,
        };
        self.shared.metrics.connections(t).get()
    }

    /// Polls `cond` until it holds.
    pub async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        within(WAIT, what, async {
            while !cond(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Starts the drain (as SIGTERM would).
    pub fn drain(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.run.abort();
    }
}

/// Two clients in `room` over the given transports, `a` first; `a`'s
/// `peer_joined` of `b` consumed.
pub async fn pair(gw: &Gw, room: &str, ta: Transport, tb: Transport) -> (Client, Client) {
    let mut a = gw.client(ta).await;
    let b = gw.client(tb).await;
    a.join(room, None).await.expect("a joins");
    b.join(room, None).await.expect("b joins");
    expect_peer_joined(&mut a, room, b.peer()).await;
    (a, b)
}

/// Runs a test body once per transport, as two tests named after them:
/// `over_both! { async fn name(t) { ... } }` makes `name::websocket` and
/// `name::webtransport`.
#[macro_export]
macro_rules! over_both {
    ($(async fn $name:ident($t:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                async fn websocket() {
                    run(pantheon_client::Transport::WebSocket).await
                }

                #[tokio::test]
                async fn webtransport() {
                    run(pantheon_client::Transport::WebTransport).await
                }

                async fn run($t: pantheon_client::Transport) $body
            }
        )*
    };
}
