//! Walks through the protocol against a running gateway and prints what
//! happens at each step:
//!
//! ```text
//! cargo run -p pantheon-client --example walkthrough -- ws://127.0.0.1:3000/ws
//! ```
//!
//! Two peers join a room, signal, broadcast, update, list peers, ping; one
//! provokes an error, drops its connection and resumes; both leave.

use pantheon_client::protocol::ServerMessage;
use pantheon_client::{Client, Error, Event, Options};
use serde_json::json;
use std::time::Duration;

async fn next(client: &mut Client) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(5), client.next_event())
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(5)))?
        .ok_or_else(|| Error::Protocol("no more events".into()))
}

fn show(who: &str, event: &Event) {
    match event {
        Event::Message { seq, message } => println!("  {who} <- seq {seq:?}: {message:?}"),
        Event::Closed { code, reason } => println!("  {who} <- closed {code:?} {reason:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".into());
    let room = format!("walk.{}", std::process::id());

    let mut alice = Client::connect(&url).await?;
    let w = alice.welcome();
    println!(
        "alice: peer {} server {} region {} limits {:?}",
        w.peer, w.server, w.region, w.limits
    );
    let mut bob = Client::connect(&url).await?;
    println!("bob: peer {}", bob.peer());

    println!("join: alice sees {:?}", alice.join(&room, None).await?);
    let peers = bob.join(&room, Some(json!({"name": "bob"}))).await?;
    println!("join: bob sees {peers:?}");
    show("alice", &next(&mut alice).await?);

    bob.signal(&room, alice.peer(), json!({"sdp": "v=0"}))
        .await?;
    show("alice", &next(&mut alice).await?);
    alice.broadcast(&room, json!("hello room")).await?;
    show("bob", &next(&mut bob).await?);
    bob.update(&room, json!({"name": "robert"})).await?;
    show("alice", &next(&mut alice).await?);
    println!("peers: {:?}", alice.peers(&room).await?);
    println!("ping: {:?}", alice.ping().await?);

    match alice.signal("not-joined", bob.peer(), json!(1)).await {
        Err(e) => println!("signal outside the room: {e}"),
        Ok(()) => println!("signal outside the room: unexpectedly acked"),
    }
    bob.send_raw_text("{\"type\":\"nope\"}").await?;
    show("bob", &next(&mut bob).await?);
    bob.send_raw_binary(vec![1, 2, 3]).await?;
    show("bob", &next(&mut bob).await?);

    // Drop bob's connection without a close frame, signal him while he is
    // away, then resume: the signal is replayed and alice sees no peer_left.
    let resume = bob.resume_info();
    let bob_peer = bob.peer().clone();
    bob.abort().await;
    println!("bob aborted at last_seq {}", resume.last_seq);
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.signal(&room, &bob_peer, json!("while away")).await?;
    let mut bob2 = Client::connect_with(
        &url,
        Options {
            resume: Some(resume),
            ..Options::default()
        },
    )
    .await?;
    println!(
        "bob resumed: {} as {} (last_seq {})",
        bob2.welcome().resumed,
        bob2.peer(),
        bob2.last_seq()
    );
    show("bob", &next(&mut bob2).await?);
    println!("bob seq errors {}", bob2.seq_errors());

    println!("bob close: {:?}", bob2.close().await?);
    let left = next(&mut alice).await?;
    show("alice", &left);
    assert!(matches!(
        left.message(),
        Some(ServerMessage::PeerLeft { .. })
    ));
    println!("alice close: {:?}", alice.close().await?);
    show("alice", &next(&mut alice).await?);
    println!("seq errors: alice {}", alice.seq_errors());
    Ok(())
}
