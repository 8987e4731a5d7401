//! The translation between the old server's Socket.IO events (PROTOCOL.md §9)
//! and native protocol messages, with no I/O: [`Inlet`] turns one legacy
//! event into one native request for the session loop, [`Outlet`] turns one
//! native server message into the legacy events to emit.
//!
//! Requests carry an `id` so that an `error` can be traced back to what
//! caused it (the old server's `PEER_NOT_FOUND` names the target in
//! `details.peerId`); the replies those ids produce (`ack`) are swallowed.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The one room legacy clients reach.
pub const ROOM: &str = "global";

/// The `signal` payload that carries a legacy `request-models`: a legacy
/// target gets `models-requested`, a native one this `signal`.
pub const REQUEST_MODELS: &str = "request-models";

/// The targets of requests in flight, by request id, shared by both halves.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<HashMap<u64, String>>>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a legacy client said in its handshake: Socket.IO 4 clients send
/// `auth`, socket.io-client 2.x (Engine.IO 3) can only send query parameters,
/// so both are read (`auth` first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// `authKey` or `token`: becomes `hello.token`.
    pub token: Option<String>,
    /// `deviceId`: becomes the peer id.
    pub device_id: Option<String>,
    /// `clientType`: goes into meta.
    pub client_type: Option<String>,
}

impl Handshake {
    /// Reads the handshake from the `auth` payload and the query string.
    pub fn parse(auth: Option<&Value>, query: Option<&str>) -> Self {
        let query: Vec<(String, String)> = query
            .map(|q| {
                url_pairs(q)
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "authKey" | "token" | "deviceId" | "clientType")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let get = |key: &str| -> Option<String> {
            auth.and_then(|a| a.get(key))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .or_else(|| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
                .filter(|s| !s.is_empty())
        };
        Self {
            token: get("authKey").or_else(|| get("token")),
            device_id: get("deviceId"),
            client_type: get("clientType"),
        }
    }

    /// The native `hello` this handshake stands for.
    pub fn hello(&self) -> Bytes {
        let mut hello = json!({"type": "hello", "v": 1});
        if let Some(token) = &self.token {
            hello["token"] = Value::String(token.clone());
        }
        Bytes::from(hello.to_string())
    }
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The legacy → native half: one connection's own meta and whether it has
/// joined `global`.
#[derive(Debug)]
pub struct Inlet {
    meta: Map<String, Value>,
    joined: bool,
    next_id: u64,
    pending: Pending,
}

impl Inlet {
    /// A connection whose Socket.IO id is `socket_id`.
    pub fn new(handshake: &Handshake, socket_id: &str, pending: Pending) -> Self {
        let mut meta = Map::new();
        if let Some(ct) = &handshake.client_type {
            meta.insert("clientType".into(), Value::String(ct.clone()));
        }
        meta.insert("socketId".into(), Value::String(socket_id.into()));
        meta.insert("models".into(), Value::Array(Vec::new()));
        Self {
            meta,
            joined: false,
            next_id: 1,
            pending,
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The native request for legacy event `event` with its first argument
    /// `data` (`Null` when it had none), or `None` when it needs none.
    /// Events the old server did not know become a `ping`, so they still
    /// count against the rate limit.
    pub fn event(&mut self, event: &str, data: Value) -> Option<Bytes> {
        let id = self.id();
        let msg = match event {
            "join-account" => {
                self.joined = true;
                json!({"type": "join", "id": id, "room": ROOM, "meta": self.meta})
            }
            "request-peer-list" => json!({"type": "peers", "id": id, "room": ROOM}),
            "webrtc-signal" => {
                let to = field(&data, &["to", "targetUserId"]);
                let signal = field(&data, &["data", "signal"]);
                self.relay(id, to, signal)
            }
            "request-models" => {
                let to = match &data {
                    Value::String(_) => Some(data.clone()),
                    other => field(other, &["userId", "targetUserId", "to"]),
                };
                self.relay(id, to, Some(json!({"type": REQUEST_MODELS})))
            }
            "announce-models" => {
                for key in ["models", "batteryState"] {
                    if let Some(v) = data.get(key) {
                        self.meta.insert(key.into(), v.clone());
                    }
                }
                if !self.joined {
                    // Kept for `join-account`, which carries the meta.
                    return None;
                }
                json!({"type": "update", "id": id, "room": ROOM, "meta": self.meta})
            }
            _ => json!({"type": "ping"}),
        };
        Some(Bytes::from(msg.to_string()))
    }

    fn relay(&mut self, id: u64, to: Option<Value>, data: Option<Value>) -> Value {
        let mut msg = json!({"type": "signal", "id": id, "room": ROOM});
        if let Some(to) = to {
            if let Value::String(target) = &to {
                self.pending.lock().insert(id, target.clone());
            }
            msg["to"] = to;
        }
        // A missing `data` stays missing: the session answers `bad_request`.
        if let Some(data) = data {
            msg["data"] = data;
        }
        msg
    }
}

/// The first of `keys` present (and not null) in object `v`.
fn field(v: &Value, keys: &[&str]) -> Option<Value> {
    keys.iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()).cloned())
}

/// What to do with one native message.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    /// `welcome`: the connection is admitted as this peer.
    Welcome(String),
    /// An error before `welcome`: the connection is refused.
    Refused {
        /// The native error code.
        code: String,
        /// Why.
        message: String,
    },
    /// Emit these legacy events, in order.
    Events(Vec<(&'static str, Value)>),
}

/// The native → legacy half: the members of `global` this connection knows
/// (for `peer-left`, which natively names only the peer).
#[derive(Debug)]
pub struct Outlet {
    peers: HashMap<String, Value>,
    welcomed: bool,
    pending: Pending,
}

impl Outlet {
    /// The half that shares `pending` with its [`Inlet`].
    pub fn new(pending: Pending) -> Self {
        Self {
            peers: HashMap::new(),
            welcomed: false,
            pending,
        }
    }

    /// Translates one encoded native server message.
    pub fn message(&mut self, text: &[u8]) -> Emit {
        let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(text) else {
            return Emit::Events(Vec::new());
        };
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        let id = msg.get("id").and_then(Value::as_u64);
        if !self.welcomed {
            return match kind {
                "welcome" => {
                    self.welcomed = true;
                    let peer = msg.get("peer").and_then(Value::as_str).unwrap_or("");
                    Emit::Welcome(peer.to_owned())
                }
                _ => Emit::Refused {
                    code: str_of(&msg, "code"),
                    message: str_of(&msg, "message"),
                },
            };
        }
        let target = id.and_then(|id| self.pending.lock().remove(&id));
        let mut out = Vec::new();
        match kind {
            "joined" | "peers" => {
                let list = self.replace_peers(msg.get("peers"));
                let event = if kind == "joined" {
                    "existing-peers"
                } else {
                    "peer-list"
                };
                out.push((event, Value::Array(list)));
            }
            "peer_joined" => {
                let (peer, meta) = peer_and_meta(&msg);
                self.peers.insert(peer.clone(), meta.clone());
                out.push(("peer-joined", presence(&peer, &meta)));
            }
            "peer_updated" => {
                let (peer, meta) = peer_and_meta(&msg);
                self.peers.insert(peer.clone(), meta.clone());
                let mut ev = json!({
                    "userId": peer,
                    "models": models(&meta),
                    "clientType": client_type(&meta),
                });
                if let Some(b) = meta.get("batteryState") {
                    ev["batteryState"] = b.clone();
                }
                out.push(("peer-models-updated", ev));
            }
            "peer_left" => {
                let (peer, _) = peer_and_meta(&msg);
                let meta = self.peers.remove(&peer).unwrap_or(Value::Null);
                out.push(("peer-left", presence(&peer, &meta)));
            }
            "signal" => {
                let from = str_of(&msg, "from");
                let data = msg.get("data").cloned().unwrap_or(Value::Null);
                if data.get("type").and_then(Value::as_str) == Some(REQUEST_MODELS) {
                    out.push(("models-requested", json!({"fromUserId": from})));
                } else {
                    out.push(("webrtc-signal", json!({"fromUserId": from, "signal": data})));
                }
            }
            "error" => {
                let code = str_of(&msg, "code");
                let details = match (&target, code.as_str()) {
                    (Some(peer), "peer_not_found") => json!({"peerId": peer}),
                    _ => json!({}),
                };
                out.push((
                    "error",
                    json!({
                        "code": code.to_ascii_uppercase(),
                        "message": str_of(&msg, "message"),
                        "details": details,
                        "timestamp": timestamp(),
                    }),
                ));
            }
            // `ack`, `pong`, `left`, `broadcast` (the old server had no
            // broadcast) and `reconnect` (the gateway closes the transport
            // when it goes, and socket.io-client reconnects by itself) have
            // no legacy event.
            _ => {}
        }
        Emit::Events(out)
    }

    fn replace_peers(&mut self, peers: Option<&Value>) -> Vec<Value> {
        self.peers.clear();
        let mut list = Vec::new();
        for p in peers.and_then(Value::as_array).into_iter().flatten() {
            let (peer, meta) = peer_and_meta(p.as_object().unwrap_or(&Map::new()));
            let mut entry = presence(&peer, &meta);
            entry["models"] = models(&meta);
            if let Some(b) = meta.get("batteryState") {
                entry["batteryState"] = b.clone();
            }
            list.push(entry);
            self.peers.insert(peer, meta);
        }
        list
    }
}

fn str_of(msg: &Map<String, Value>, key: &str) -> String {
    msg.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn peer_and_meta(msg: &Map<String, Value>) -> (String, Value) {
    (
        str_of(msg, "peer"),
        msg.get("meta").cloned().unwrap_or(Value::Null),
    )
}

/// `{userId, socketId, clientType, originalUserId}` of a member.
fn presence(peer: &str, meta: &Value) -> Value {
    let socket_id = meta.get("socketId").and_then(Value::as_str).unwrap_or(peer);
    json!({
        "userId": peer,
        "socketId": socket_id,
        "clientType": client_type(meta),
        "originalUserId": peer,
    })
}

/// A member's `clientType`; native clients that set none are `"native"`.
fn client_type(meta: &Value) -> Value {
    meta.get("clientType")
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or_else(|| Value::String("native".into()))
}

fn models(meta: &Value) -> Value {
    meta.get("models")
        .filter(|v| v.is_array())
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()))
}

/// Now, as JavaScript's `new Date().toISOString()` writes it.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let t = time::OffsetDateTime::UNIX_EPOCH + now;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Option<Bytes>) -> Value {
        serde_json::from_slice(&b.expect("a request")).unwrap()
    }

    #[test]
    fn handshake_reads_auth_then_query() {
        let auth = json!({"authKey": "k", "deviceId": "dev-1", "clientType": "web"});
        let h = Handshake::parse(Some(&auth), Some("deviceId=other&EIO=4"));
        assert_eq!(h.token.as_deref(), Some("k"));
        assert_eq!(h.device_id.as_deref(), Some("dev-1"));
        assert_eq!(h.client_type.as_deref(), Some("web"));
        let h = Handshake::parse(None, Some("token=a%2Bb%20c&deviceId=d%41&EIO=3"));
        assert_eq!(h.token.as_deref(), Some("a+b c"));
        assert_eq!(h.device_id.as_deref(), Some("dA"));
        assert_eq!(
            parse(Some(h.hello())),
            json!({"type":"hello","v":1,"token":"a+b c"})
        );
        assert_eq!(Handshake::parse(None, Some("%zz=%")).device_id, None);
    }

    #[test]
    fn events_become_requests() {
        let h = Handshake {
            client_type: Some("web".into()),
            ..Handshake::default()
        };
        let pending = Pending::default();
        let mut inlet = Inlet::new(&h, "sid1", pending.clone());
        // Announced before joining: kept for the join.
        assert_eq!(
            inlet.event(
                "announce-models",
                json!({"models": ["m"], "batteryState": {"level": 1}})
            ),
            None
        );
        let join = parse(inlet.event("join-account", Value::Null));
        assert_eq!(join["type"], "join");
        assert_eq!(join["room"], ROOM);
        assert_eq!(
            join["meta"],
            json!({"clientType":"web","socketId":"sid1","models":["m"],"batteryState":{"level":1}})
        );
        let s = parse(inlet.event(
            "webrtc-signal",
            json!({"targetUserId": "b", "signal": {"sdp": 1}}),
        ));
        assert_eq!(
            (s["type"].clone(), s["to"].clone(), s["data"].clone()),
            (json!("signal"), json!("b"), json!({"sdp":1}))
        );
        let s2 = parse(inlet.event("webrtc-signal", json!({"to": "c", "data": null})));
        assert_eq!(
            (s2["to"].clone(), s2.get("data").cloned()),
            (json!("c"), None)
        );
        assert_eq!(
            pending
                .lock()
                .get(&s["id"].as_u64().unwrap())
                .map(String::as_str),
            Some("b")
        );
        let r = parse(inlet.event("request-models", json!("b")));
        assert_eq!(r["data"], json!({"type": REQUEST_MODELS}));
        let u = parse(inlet.event("announce-models", json!({"models": ["x"]})));
        assert_eq!(
            (u["type"].clone(), u["meta"]["models"].clone()),
            (json!("update"), json!(["x"]))
        );
        assert_eq!(
            parse(inlet.event("request-peer-list", Value::Null))["type"],
            "peers"
        );
        assert_eq!(
            parse(inlet.event("something-else", json!(1)))["type"],
            "ping"
        );
    }

    #[test]
    fn messages_become_events() {
        let pending = Pending::default();
        pending.lock().insert(7, "ghost".into());
        let mut out = Outlet::new(pending);
        assert_eq!(
            out.message(br#"{"type":"error","code":"unauthorized","message":"no"}"#),
            Emit::Refused {
                code: "unauthorized".into(),
                message: "no".into()
            }
        );
        let mut out = Outlet::new(out.pending.clone());
        assert_eq!(
            out.message(br#"{"type":"welcome","peer":"me"}"#),
            Emit::Welcome("me".into())
        );
        let Emit::Events(ev) = out.message(br#"{"seq":1,"type":"joined","id":1,"room":"global","peers":[{"peer":"n","meta":{}},{"peer":"l","meta":{"clientType":"web","socketId":"s","models":["m"],"batteryState":3}}]}"#) else { panic!() };
        let list = ev[0].1.as_array().unwrap();
        assert_eq!(ev[0].0, "existing-peers");
        let n = list.iter().find(|p| p["userId"] == "n").unwrap();
        assert_eq!(
            n,
            &json!({"userId":"n","socketId":"n","clientType":"native","originalUserId":"n","models":[]})
        );
        let l = list.iter().find(|p| p["userId"] == "l").unwrap();
        assert_eq!(
            l,
            &json!({"userId":"l","socketId":"s","clientType":"web","originalUserId":"l","models":["m"],"batteryState":3})
        );
        let Emit::Events(ev) = out
            .message(br#"{"seq":2,"type":"peer_left","room":"global","peer":"l","reason":"left"}"#)
        else {
            panic!()
        };
        assert_eq!(
            ev,
            vec![(
                "peer-left",
                json!({"userId":"l","socketId":"s","clientType":"web","originalUserId":"l"})
            )]
        );
        let Emit::Events(ev) = out.message(br#"{"seq":3,"type":"signal","room":"global","from":"n","data":{"type":"request-models"}}"#) else { panic!() };
        assert_eq!(ev, vec![("models-requested", json!({"fromUserId":"n"}))]);
        let Emit::Events(ev) = out.message(
            br#"{"seq":4,"type":"error","id":7,"code":"peer_not_found","message":"no such peer"}"#,
        ) else {
            panic!()
        };
        assert_eq!(ev[0].1["code"], "PEER_NOT_FOUND");
        assert_eq!(ev[0].1["details"], json!({"peerId":"ghost"}));
        assert_eq!(ev[0].1["timestamp"].as_str().unwrap().len(), 24);
        let Emit::Events(ev) = out.message(br#"{"seq":5,"type":"ack","id":8}"#) else {
            panic!()
        };
        assert!(ev.is_empty());
    }
}
