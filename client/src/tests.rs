//! The session logic over an in-memory transport: the test plays the server
//! on the other end of two channels.

use crate::transport::{Incoming, Outgoing};
use crate::{Client, Error, Event, Options};
use futures_util::{Sink, Stream};
use pantheon_protocol::{ErrorCode, Resume, ServerMessage};
use serde_json::{Value, json};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

struct MockSink(mpsc::UnboundedSender<Outgoing>);

impl Sink<Outgoing> for MockSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Outgoing) -> Result<(), Error> {
        self.0
            .send(item)
            .map_err(|_| Error::Transport("server gone".into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
}

struct MockStream(mpsc::UnboundedReceiver<Result<Incoming, Error>>);

impl Stream for MockStream {
    type Item = Result<Incoming, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The server's end.
struct Server {
    from_client: mpsc::UnboundedReceiver<Outgoing>,
    to_client: mpsc::UnboundedSender<Result<Incoming, Error>>,
}

impl Server {
    async fn recv(&mut self) -> Outgoing {
        self.from_client.recv().await.expect("client alive")
    }

    async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Outgoing::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn send(&self, json: Value) {
        let text = json.to_string();
        let _ = self.to_client.send(Ok(Incoming::Text(text.into())));
    }

    fn close(&self, code: u16) {
        let _ = self.to_client.send(Ok(Incoming::Closed(crate::CloseInfo {
            code: Some(code),
            reason: "bye".into(),
        })));
    }
}

fn welcome(id: Option<u64>, resumed: bool) -> Value {
    let mut w = json!({
        "type": "welcome", "v": 1, "peer": "p_me", "session": "s1", "resumed": resumed,
        "server": "test", "region": "here", "heartbeat_ms": 25000,
        "limits": {"max_message_bytes": 65536, "max_rooms": 32, "max_room_peers": 64,
                   "rate_per_sec": 50, "rate_burst": 100}
    });
    if let Some(id) = id {
        w["id"] = id.into();
    }
    w
}

fn transport() -> (MockSink, MockStream, Server) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let server = Server {
        from_client: out_rx,
        to_client: in_tx,
    };
    (MockSink(out_tx), MockStream(in_rx), server)
}

/// Starts a client whose hello the server answers with `answer`.
async fn start_with(options: Options, answer: Value) -> (Result<Client, Error>, Server, Value) {
    let (sink, stream, mut server) = transport();
    let client = tokio::spawn(async move { Client::start(sink, stream, &options).await });
    let hello = server.recv_json().await;
    server.send(answer);
    (client.await.unwrap(), server, hello)
}

async fn connected() -> (Client, Server) {
    let (client, server, _) = start_with(Options::default(), welcome(None, false)).await;
    (client.unwrap(), server)
}

#[tokio::test]
async fn hello_carries_the_options_and_welcome_is_kept() {
    let options = Options {
        token: Some("jwt".into()),
        resume: Some(Resume {
            session: "old".into(),
            last_seq: 41,
        }),
        hello_id: Some(0),
        ..Options::default()
    };
    let (client, _server, hello) = start_with(options, welcome(Some(0), true)).await;
    assert_eq!(
        hello,
        json!({"type": "hello", "id": 0, "v": 1, "token": "jwt",
               "resume": {"session": "old", "last_seq": 41}})
    );
    let client = client.unwrap();
    assert_eq!(client.welcome().id, Some(0));
    assert!(client.welcome().resumed);
    assert_eq!(client.peer().as_str(), "p_me");
    assert_eq!(client.session(), "s1");
    assert_eq!(client.last_seq(), 41);
    assert_eq!(
        client.resume_info(),
        Resume {
            session: "s1".into(),
            last_seq: 41
        }
    );
}

#[tokio::test]
async fn failed_resume_starts_seq_from_zero() {
    let options = Options {
        resume: Some(Resume {
            session: "old".into(),
            last_seq: 41,
        }),
        ..Options::default()
    };
    let (client, server, _) = start_with(options, welcome(None, false)).await;
    let mut client = client.unwrap();
    assert_eq!(client.last_seq(), 0);
    server.send(json!({"seq": 1, "type": "reconnect", "reason": "draining", "after_ms": 5}));
    assert_eq!(client.next_event().await.unwrap().seq(), Some(1));
    assert_eq!(client.seq_errors(), 0);
}

#[tokio::test]
async fn handshake_failures_are_typed() {
    let error = json!({"type": "error", "code": "unsupported_version", "message": "v2"});
    let (client, _, _) = start_with(Options::default(), error).await;
    assert!(matches!(
        client,
        Err(Error::Server {
            code: ErrorCode::UnsupportedVersion,
            ..
        })
    ));

    let (client, _, _) = start_with(Options::default(), json!({"type": "pong"})).await;
    assert!(matches!(client, Err(Error::Protocol(_))));

    let (sink, stream, mut server) = transport();
    let client =
        tokio::spawn(async move { Client::start(sink, stream, &Options::default()).await });
    server.recv_json().await;
    server.close(4001);
    let err = client.await.unwrap().unwrap_err();
    assert_eq!(err.close_code(), Some(4001));
}

#[tokio::test]
async fn replies_are_matched_by_id_in_any_order() {
    let (client, mut server) = connected().await;
    let handle = client.handle();
    let first = tokio::spawn({
        let h = handle.clone();
        async move { h.peers("r").await }
    });
    let a = server.recv_json().await;
    let second = tokio::spawn(async move { handle.ping().await });
    let b = server.recv_json().await;
    assert_eq!(a["type"], "peers");
    assert_eq!(b["type"], "ping");
    assert_ne!(a["id"], b["id"]);
    server.send(json!({"seq": 1, "type": "pong", "id": b["id"]}));
    server.send(
        json!({"seq": 2, "type": "peers", "id": a["id"], "room": "r",
                       "peers": [{"peer": "p_x", "meta": {"n": 1}}]}),
    );
    second.await.unwrap().unwrap();
    let peers = first.await.unwrap().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer.as_str(), "p_x");
    assert_eq!(client.last_seq(), 2);
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn typed_requests_encode_their_fields() {
    let (client, mut server) = connected().await;
    let h = client.handle();
    let task = tokio::spawn(async move {
        h.join("r", Some(json!({"name": "a"}))).await.unwrap();
        h.signal("r", "p_b", json!({"sdp": "x"})).await.unwrap();
        h.broadcast("r", Value::Null).await.unwrap();
        h.update("r", json!({"name": "b"})).await.unwrap();
        h.leave("r").await.unwrap();
    });
    let mut seq = 0;
    let mut reply = |server: &Server, mut body: Value| {
        seq += 1;
        body["seq"] = seq.into();
        server.send(body);
    };
    let m = server.recv_json().await;
    assert_eq!(
        m,
        json!({"type": "join", "id": m["id"], "room": "r", "meta": {"name": "a"}})
    );
    reply(
        &server,
        json!({"type": "joined", "id": m["id"], "room": "r", "peers": []}),
    );
    let m = server.recv_json().await;
    assert_eq!(
        m,
        json!({"type": "signal", "id": m["id"], "room": "r", "to": "p_b", "data": {"sdp": "x"}})
    );
    reply(&server, json!({"type": "ack", "id": m["id"]}));
    let m = server.recv_json().await;
    assert_eq!(
        m,
        json!({"type": "broadcast", "id": m["id"], "room": "r", "data": null})
    );
    reply(&server, json!({"type": "ack", "id": m["id"]}));
    let m = server.recv_json().await;
    assert_eq!(
        m,
        json!({"type": "update", "id": m["id"], "room": "r", "meta": {"name": "b"}})
    );
    reply(&server, json!({"type": "ack", "id": m["id"]}));
    let m = server.recv_json().await;
    assert_eq!(m, json!({"type": "leave", "id": m["id"], "room": "r"}));
    reply(&server, json!({"type": "left", "id": m["id"], "room": "r"}));
    task.await.unwrap();
}

#[tokio::test]
async fn invalid_arguments_fail_locally() {
    let (client, _server) = connected().await;
    assert!(matches!(
        client.join("no spaces", None).await,
        Err(Error::Field(_))
    ));
    assert!(matches!(
        client.update("r", json!([1])).await,
        Err(Error::Field(_))
    ));
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn error_replies_resolve_as_server_errors() {
    let (client, mut server) = connected().await;
    let h = client.handle();
    let task = tokio::spawn(async move { h.signal("r", "p_b", json!(1)).await });
    let m = server.recv_json().await;
    server.send(json!({"seq": 1, "type": "error", "id": m["id"], "code": "not_in_room", "message": "join first"}));
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotInRoom));
}

#[tokio::test]
async fn other_messages_are_events_in_order() {
    let (mut client, mut server) = connected().await;
    server.send(json!({"seq": 1, "type": "peer_joined", "room": "r", "peer": "p_b", "meta": {}}));
    server.send(json!({"seq": 2, "type": "signal", "room": "r", "from": "p_b", "data": [1, 2]}));
    // A reply nobody waits for is an event too.
    server.send(json!({"seq": 3, "type": "ack", "id": 99}));
    server.send(json!({"seq": 4, "type": "error", "code": "rate_limited", "message": "slow down"}));
    let e = client.next_event().await.unwrap();
    assert_eq!(e.seq(), Some(1));
    assert_eq!(e.kind(), Some(pantheon_protocol::ServerKind::PeerJoined));
    match client.next_event().await.unwrap() {
        Event::Message {
            seq: Some(2),
            message: ServerMessage::Signal { from, data, .. },
        } => {
            assert_eq!(from.as_str(), "p_b");
            assert_eq!(data.as_str(), "[1,2]");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client.next_event().await.unwrap().into_message(),
        Some(ServerMessage::Ack { id: 99 })
    );
    assert!(matches!(
        client.next_event().await.unwrap().message(),
        Some(ServerMessage::Error {
            id: None,
            code: ErrorCode::RateLimited,
            ..
        })
    ));
    assert!(client.try_next_event().is_none());

    // A request sent without waiting gets its id; its reply is an event.
    let id = client
        .send(pantheon_protocol::Request::Ping, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.recv_json().await, json!({"type": "ping", "id": id}));
    server.send(json!({"seq": 5, "type": "pong", "id": id}));
    assert_eq!(
        client.next_event().await.unwrap().into_message(),
        Some(ServerMessage::Pong { id: Some(id) })
    );
    assert_eq!(client.seq_errors(), 0);
}

#[tokio::test]
async fn seq_gaps_repeats_and_garbage_are_counted() {
    let (mut client, server) = connected().await;
    let ev =
        |seq: u64| json!({"seq": seq, "type": "reconnect", "reason": "draining", "after_ms": 0});
    server.send(ev(1));
    server.send(ev(3)); // gap
    server.send(ev(3)); // repeat
    server.send(json!({"type": "reconnect", "reason": "x", "after_ms": 0})); // missing
    server.send(json!({"seq": 4, "type": "nonsense"}));
    server.send(ev(4));
    for _ in 0..5 {
        client.next_event().await.unwrap();
    }
    assert_eq!(client.seq_errors(), 3);
    assert_eq!(client.protocol_errors(), 1);
    assert_eq!(client.last_seq(), 4);
}

#[tokio::test]
async fn server_close_fails_requests_and_ends_the_events() {
    let (mut client, mut server) = connected().await;
    let h = client.handle();
    let pending = tokio::spawn(async move { h.ping().await });
    server.recv_json().await;
    server
        .send(json!({"seq": 1, "type": "peer_left", "room": "r", "peer": "p_b", "reason": "left"}));
    server.close(4009);
    let err = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Closed {
                code: Some(4009),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.next_event().await.unwrap().seq(), Some(1));
    assert!(matches!(
        client.next_event().await,
        Some(Event::Closed {
            code: Some(4009),
            ..
        })
    ));
    assert!(client.next_event().await.is_none());
    assert_eq!(client.closed().await.code, Some(4009));
    assert_eq!(client.ping().await.unwrap_err().close_code(), Some(4009));
}

#[tokio::test]
async fn lost_connection_ends_without_code() {
    let (mut client, server) = connected().await;
    drop(server);
    assert!(matches!(
        client.next_event().await,
        Some(Event::Closed { code: None, .. })
    ));
}

#[tokio::test]
async fn close_sends_a_close_frame_and_returns_the_answer() {
    let (mut client, mut server) = connected().await;
    let closing = tokio::spawn(async move {
        let info = client.close().await;
        (client, info)
    });
    match server.recv().await {
        Outgoing::Close { code: 1000, .. } => {}
        other => panic!("{other:?}"),
    }
    server.close(1000);
    let (mut client, info) = closing.await.unwrap();
    assert_eq!(info.unwrap().code, Some(1000));
    assert!(matches!(
        client.next_event().await,
        Some(Event::Closed {
            code: Some(1000),
            ..
        })
    ));
}

#[tokio::test]
async fn close_gives_up_after_the_timeout() {
    let options = Options {
        close_timeout: std::time::Duration::from_millis(50),
        ..Options::default()
    };
    let (client, _server, _) = start_with(options, welcome(None, false)).await;
    let mut client = client.unwrap();
    assert!(matches!(
        client.close_with(1001, "unload").await,
        Err(Error::Timeout(_))
    ));
    assert!(client.close_info().is_some());
}

#[tokio::test]
async fn abort_fails_waiters_and_keeps_buffered_events() {
    let (mut client, mut server) = connected().await;
    server.send(json!({"seq": 1, "type": "reconnect", "reason": "draining", "after_ms": 0}));
    let h = client.handle();
    let pending = tokio::spawn(async move { h.ping().await });
    server.recv_json().await;
    client.abort().await;
    assert!(matches!(
        pending.await.unwrap(),
        Err(Error::Closed { code: None, .. })
    ));
    assert_eq!(client.next_event().await.unwrap().seq(), Some(1));
    assert!(matches!(
        client.next_event().await,
        Some(Event::Closed { code: None, .. })
    ));
    assert_eq!(client.resume_info().last_seq, 1);
    // Aborting twice is harmless.
    client.abort().await;
}

#[tokio::test]
async fn a_dropped_request_stops_waiting() {
    let (mut client, mut server) = connected().await;
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), client.ping()).await;
    assert!(timed_out.is_err());
    assert_eq!(client.in_flight(), 0);
    // Its late reply is then an ordinary event, and the client goes on.
    let m = server.recv_json().await;
    server.send(json!({"seq": 1, "type": "pong", "id": m["id"]}));
    let late = client.next_event().await.unwrap().into_message();
    assert_eq!(
        late,
        Some(ServerMessage::Pong {
            id: m["id"].as_u64()
        })
    );
    let h = client.handle();
    let again = tokio::spawn(async move { h.ping().await });
    let m = server.recv_json().await;
    server.send(json!({"seq": 2, "type": "pong", "id": m["id"]}));
    again.await.unwrap().unwrap();
}
