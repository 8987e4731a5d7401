//! A native peer driven over stdin/stdout, for tests written in other
//! languages (the legacy Socket.IO tests in `legacy-tests/` use it for the
//! native WebSocket and WebTransport side):
//!
//! ```text
//! cargo run -p pantheon-client --example line_peer -- https://127.0.0.1:3000/wt
//! ```
//!
//! Prints `{"type":"welcome","peer":...}`, then every server message as one
//! JSON line; sends every line read from stdin as one message. Ends when
//! stdin closes (with a goodbye) or the connection does.

use pantheon_client::protocol::encode_server;
use pantheon_client::{Client, Event, Options};
use serde_json::json;
use std::io::Write;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), pantheon_client::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".into());
    // Tests only: the gateway's self-signed WebTransport certificate.
    let mut client = Client::connect_with(&url, Options::insecure()).await?;
    let out = |line: &[u8]| {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(line);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    };
    let welcome = json!({"type": "welcome", "peer": client.peer().as_str()});
    out(welcome.to_string().as_bytes());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) => client.send_raw_text(line).await?,
                _ => {
                    client.close().await?;
                    return Ok(());
                }
            },
            event = client.next_event() => match event {
                Some(Event::Message { message, .. }) => out(&encode_server(&message)),
                Some(Event::Closed { code, .. }) => {
                    out(json!({"type": "closed", "code": code}).to_string().as_bytes());
                    return Ok(());
                }
                None => return Ok(()),
            },
        }
    }
}
