//! Ordering under volume (PROTOCOL.md §5) and many clients in one room.

mod common;

use common::{TestGateway, assert_nothing_pending, json_of, next, pair, within};
use pantheon_client::protocol::ServerMessage;
use pantheon_client::{Client, Event};
use serde_json::json;
use std::time::Duration;

fn unlimited(c: &mut pantheon_gateway::Config) {
    c.limits.rate_per_sec = 1_000_000;
    c.limits.rate_burst = 1_000_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signals_arrive_in_order() {
    let gw = TestGateway::with(unlimited).await;
    let (mut a, b) = pair(&gw, "r").await;
    let sender = b.handle();
    let to = a.peer().clone();
    let send = tokio::spawn(async move {
        for n in 0..1000u64 {
            // Alternate pipelined (no ack) and acknowledged requests.
            if n % 10 == 0 {
                sender.signal("r", &to, json!({"n": n})).await.unwrap();
            } else {
                sender
                    .signal_no_ack("r", &to, json!({"n": n}))
                    .await
                    .unwrap();
            }
        }
    });
    within(Duration::from_secs(30), "1000 signals", async {
        for n in 0..1000u64 {
            match next(&mut a).await {
                ServerMessage::Signal { data, .. } => {
                    assert_eq!(json_of(&data)["n"], n, "out of order")
                }
                other => panic!("expected signal {n}, got {other:?}"),
            }
        }
    })
    .await;
    send.await.unwrap();
    assert_nothing_pending(&mut a).await;
    assert_eq!(a.seq_errors(), 0);
    assert_eq!(b.seq_errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_broadcasts_from_one_sender_stay_in_order() {
    let gw = TestGateway::with(unlimited).await;
    let (mut a, b) = pair(&gw, "r").await;
    for n in 0..500u64 {
        if n % 2 == 0 {
            b.signal_no_ack("r", a.peer(), json!(n)).await.unwrap();
        } else {
            b.broadcast_no_ack("r", json!(n)).await.unwrap();
        }
    }
    b.ping().await.unwrap();
    for n in 0..500u64 {
        let data = match next(&mut a).await {
            ServerMessage::Signal { data, .. } if n % 2 == 0 => data,
            ServerMessage::Broadcast { data, .. } if n % 2 == 1 => data,
            other => panic!("message {n}: {other:?}"),
        };
        assert_eq!(json_of(&data), json!(n));
    }
    assert_eq!(a.seq_errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_broadcasting_in_one_room() {
    const CLIENTS: usize = 50;
    const EACH: u64 = 10;
    let gw = TestGateway::with(unlimited).await;
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..CLIENTS {
        let c = gw.client().await;
        let others = c.join("crowd", None).await.unwrap();
        assert_eq!(others.len(), clients.len());
        clients.push(c);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for n in 0..EACH {
                    c.broadcast("crowd", json!({"n": n})).await.unwrap();
                }
                // Per sender, the next n expected.
                let mut next_from = std::collections::HashMap::new();
                let mut received = 0;
                while received < (CLIENTS as u64 - 1) * EACH {
                    match c.next_event().await {
                        Some(Event::Message {
                            message: ServerMessage::Broadcast { from, data, .. },
                            ..
                        }) => {
                            assert_ne!(&from, c.peer(), "not to the sender");
                            let want = next_from.entry(from).or_insert(0u64);
                            assert_eq!(json_of(&data)["n"], *want, "per-sender order");
                            *want += 1;
                            received += 1;
                        }
                        Some(Event::Message {
                            message: ServerMessage::PeerJoined { .. },
                            ..
                        }) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(next_from.len(), CLIENTS - 1);
                assert_eq!(c.seq_errors(), 0);
                assert_eq!(c.protocol_errors(), 0);
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(
            within(Duration::from_secs(30), "a client's broadcasts", t)
                .await
                .unwrap(),
        );
    }
    let h = gw.http("GET", "/health", &[]).await.json();
    assert_eq!(h["connections"]["websocket"], CLIENTS);
    assert_eq!(h["peers"], CLIENTS);
    assert_eq!(h["rooms"], 1);
    for c in &mut clients {
        assert_nothing_pending(c).await;
    }
}
