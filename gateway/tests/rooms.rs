//! PROTOCOL.md §4–5: join, leave, signal, broadcast, update, peers, and the
//! events they cause.

mod common;

use common::{TestGateway, expect_peer_joined, expect_peer_left, fence, json_of, next, pair};
use pantheon_client::protocol::{ErrorCode, Request, RoomName, ServerMessage};
use serde_json::{Value, json};

fn meta_json(m: &pantheon_client::protocol::Meta) -> Value {
    serde_json::from_str(m.as_str()).unwrap()
}

#[tokio::test]
async fn join_lists_the_others_with_meta_and_tells_them() {
    let gw = TestGateway::start().await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;
    let c = gw.client().await;
    assert!(
        a.join("room-1", Some(json!({"name": "a"})))
            .await
            .unwrap()
            .is_empty()
    );
    let others = b.join("room-1", Some(json!({"name": "b"}))).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(&others[0].peer, a.peer());
    assert_eq!(meta_json(&others[0].meta), json!({"name": "a"}));
    assert_eq!(
        expect_peer_joined(&mut a, "room-1", b.peer()).await,
        json!({"name": "b"})
    );

    // Without meta: `{}`.
    let mut others = c.join("room-1", None).await.unwrap();
    others.sort_by(|x, y| x.peer.cmp(&y.peer));
    let mut want = vec![
        (a.peer().clone(), json!({"name": "a"})),
        (b.peer().clone(), json!({"name": "b"})),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    let got: Vec<_> = others
        .iter()
        .map(|p| (p.peer.clone(), meta_json(&p.meta)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        expect_peer_joined(&mut a, "room-1", c.peer()).await,
        json!({})
    );
    assert_eq!(
        expect_peer_joined(&mut b, "room-1", c.peer()).await,
        json!({})
    );
}

#[tokio::test]
async fn joined_reply_echoes_the_room() {
    let gw = TestGateway::start().await;
    let a = gw.client().await;
    let room = "Az09._:~-";
    match a
        .request(Request::Join {
            room: RoomName::new(room).unwrap(),
            meta: None,
        })
        .await
        .unwrap()
    {
        ServerMessage::Joined { room: r, peers, .. } => {
            assert_eq!(r.as_str(), room);
            assert!(peers.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn join_again_is_idempotent() {
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    // Same meta ({} both times): a fresh joined, no new peer_joined.
    let others = b.join("r", None).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(&others[0].peer, a.peer());
    fence(&b, &mut a, "r").await;
    assert_eq!(a.peers("r").await.unwrap().len(), 1, "b is listed once");
}

#[tokio::test]
async fn join_again_with_other_meta_is_an_update() {
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    let others = b.join("r", Some(json!({"mic": true}))).await.unwrap();
    assert_eq!(others.len(), 1);
    match next(&mut a).await {
        ServerMessage::PeerUpdated { room, peer, meta } => {
            assert_eq!(room.as_str(), "r");
            assert_eq!(&peer, b.peer());
            assert_eq!(meta_json(&meta), json!({"mic": true}));
        }
        other => panic!("expected peer_updated, got {other:?}"),
    }
    fence(&b, &mut a, "r").await;
    let listed = a.peers("r").await.unwrap();
    assert_eq!(meta_json(&listed[0].meta), json!({"mic": true}));
}

#[tokio::test]
async fn leave_replies_left_and_tells_the_others() {
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    match b
        .request(Request::Leave {
            room: RoomName::new("r").unwrap(),
        })
        .await
        .unwrap()
    {
        ServerMessage::Left { room, id } => {
            assert_eq!(room.as_str(), "r");
            assert!(id.is_some());
        }
        other => panic!("expected left, got {other:?}"),
    }
    assert_eq!(expect_peer_left(&mut a, "r", b.peer()).await, "left");
    assert!(a.peers("r").await.unwrap().is_empty());
    // b is no longer in r.
    let err = b.peers("r").await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotInRoom));
    // And may join again.
    b.join("r", None).await.unwrap();
    expect_peer_joined(&mut a, "r", b.peer()).await;
}

#[tokio::test]
async fn signal_reaches_the_target_with_from_room_and_data() {
    let gw = TestGateway::start().await;
    let (mut a, mut b) = pair(&gw, "r").await;
    let sdp = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    b.signal("r", a.peer(), &sdp).await.expect("ack");
    match next(&mut a).await {
        ServerMessage::Signal { room, from, data } => {
            assert_eq!(room.as_str(), "r");
            assert_eq!(&from, b.peer());
            assert_eq!(json_of(&data), sdp);
        }
        other => panic!("expected signal, got {other:?}"),
    }
    // The sender gets nothing but the ack (consumed by `signal`).
    fence(&a, &mut b, "r").await;
}

#[tokio::test]
async fn ack_only_when_id_given() {
    let gw = TestGateway::start().await;
    let (mut a, mut b) = pair(&gw, "r").await;
    // With id: the ack is the reply, with the same id.
    let id = b
        .send(
            Request::Signal {
                room: RoomName::new("r").unwrap(),
                to: a.peer().clone(),
                data: pantheon_client::protocol::Data::from_value(&1).unwrap(),
            },
            true,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next(&mut b).await, ServerMessage::Ack { id });
    // Without id: no ack for signal, broadcast or update.
    b.signal_no_ack("r", a.peer(), json!(2)).await.unwrap();
    b.broadcast_no_ack("r", json!(3)).await.unwrap();
    b.update_no_ack("r", json!({"x": 1})).await.unwrap();
    for _ in 0..4 {
        next(&mut a).await;
    }
    // b's next event is a's fence: no ack came in between.
    fence(&a, &mut b, "r").await;
}

#[tokio::test]
async fn data_of_every_json_kind_is_relayed() {
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    let values = [
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-17),
        json!(1.5e300),
        json!(9007199254740993u64),
        json!(""),
        json!("text with \"quotes\", \\, \n, \u{0} and ünïcødé 🎉"),
        json!([]),
        json!({}),
        json!([1, "two", null, {"three": [3]}]),
        json!({"candidate": "candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}),
    ];
    for v in &values {
        b.signal("r", a.peer(), v).await.unwrap();
    }
    for v in &values {
        b.broadcast("r", v).await.unwrap();
    }
    for v in &values {
        match next(&mut a).await {
            ServerMessage::Signal { data, .. } => assert_eq!(&json_of(&data), v),
            other => panic!("expected signal of {v}, got {other:?}"),
        }
    }
    for v in &values {
        match next(&mut a).await {
            ServerMessage::Broadcast { data, .. } => assert_eq!(&json_of(&data), v),
            other => panic!("expected broadcast of {v}, got {other:?}"),
        }
    }
    // Raw: data given literally, null included, is relayed as JSON.
    b.send_raw_text(format!(
        r#"{{"type":"signal","room":"r","to":"{}","data":null}}"#,
        a.peer()
    ))
    .await
    .unwrap();
    match next(&mut a).await {
        ServerMessage::Signal { data, .. } => assert_eq!(data.as_str(), "null"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn broadcast_reaches_every_other_member_not_the_sender() {
    let gw = TestGateway::start().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = gw.client().await;
        c.join("r", None).await.unwrap();
        clients.push(c);
    }
    // Everyone's peer_joined events: client i saw joins of i+1..4.
    for i in 0..4 {
        for j in i + 1..4 {
            let peer = clients[j].peer().clone();
            expect_peer_joined(&mut clients[i], "r", &peer).await;
        }
    }
    clients[1]
        .broadcast("r", json!({"hello": "all"}))
        .await
        .unwrap();
    let sender = clients[1].peer().clone();
    for (i, c) in clients.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        match next(c).await {
            ServerMessage::Broadcast { room, from, data } => {
                assert_eq!(room.as_str(), "r");
                assert_eq!(from, sender);
                assert_eq!(json_of(&data), json!({"hello": "all"}));
            }
            other => panic!("expected broadcast, got {other:?}"),
        }
    }
    // Not to the sender.
    let (first, rest) = clients.split_at_mut(1);
    fence(&first[0], &mut rest[0], "r").await;
}

#[tokio::test]
async fn update_acks_and_tells_the_others() {
    let gw = TestGateway::start().await;
    let (mut a, mut b) = pair(&gw, "r").await;
    b.update("r", json!({"name": "bob", "muted": false}))
        .await
        .unwrap();
    match next(&mut a).await {
        ServerMessage::PeerUpdated { room, peer, meta } => {
            assert_eq!(room.as_str(), "r");
            assert_eq!(&peer, b.peer());
            assert_eq!(meta_json(&meta), json!({"name": "bob", "muted": false}));
        }
        other => panic!("expected peer_updated, got {other:?}"),
    }
    let listed = a.peers("r").await.unwrap();
    assert_eq!(
        meta_json(&listed[0].meta),
        json!({"name": "bob", "muted": false})
    );
    // The sender itself gets no peer_updated.
    fence(&a, &mut b, "r").await;
}

#[tokio::test]
async fn update_with_the_same_meta_is_acked_but_not_announced() {
    // Ambiguity: §4 says others get `peer_updated` on `update`; read, as for
    // an idempotent `join`, as "when the meta changes": an update that
    // changes nothing is acknowledged and tells nobody.
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    b.update("r", json!({"v": 1})).await.unwrap();
    assert!(matches!(
        next(&mut a).await,
        ServerMessage::PeerUpdated { .. }
    ));
    b.update("r", json!({"v": 1})).await.expect("acked");
    fence(&b, &mut a, "r").await;
}

#[tokio::test]
async fn peers_lists_the_other_members_now() {
    let gw = TestGateway::start().await;
    let (mut a, b) = pair(&gw, "r").await;
    match a
        .request(Request::Peers {
            room: RoomName::new("r").unwrap(),
        })
        .await
        .unwrap()
    {
        ServerMessage::Peers { room, peers, id } => {
            assert_eq!(room.as_str(), "r");
            assert!(id.is_some());
            assert_eq!(peers.len(), 1);
            assert_eq!(&peers[0].peer, b.peer());
        }
        other => panic!("expected peers, got {other:?}"),
    }
    let c = gw.client().await;
    c.join("r", Some(json!({"k": "v"}))).await.unwrap();
    expect_peer_joined(&mut a, "r", c.peer()).await;
    let listed = a.peers("r").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| &p.peer != a.peer()), "not itself");
}

#[tokio::test]
async fn rooms_are_independent() {
    let gw = TestGateway::start().await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;
    a.join("one", None).await.unwrap();
    a.join("two", None).await.unwrap();
    b.join("two", None).await.unwrap();
    expect_peer_joined(&mut a, "two", b.peer()).await;
    b.join("one", None).await.unwrap();
    expect_peer_joined(&mut a, "one", b.peer()).await;
    b.leave("one").await.unwrap();
    assert_eq!(expect_peer_left(&mut a, "one", b.peer()).await, "left");
    // Still together in "two".
    b.signal("two", a.peer(), json!("still here"))
        .await
        .unwrap();
    match next(&mut a).await {
        ServerMessage::Signal { room, .. } => assert_eq!(room.as_str(), "two"),
        other => panic!("{other:?}"),
    }
    let err = b.signal("one", a.peer(), json!(0)).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotInRoom));
    fence(&a, &mut b, "two").await;
}
