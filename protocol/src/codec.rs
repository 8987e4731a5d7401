//! JSON codecs for both directions.
//!
//! Decoding reads a flat envelope (every field optional, borrowed where it can
//! be) and then checks the fields the `type` needs. That way every rejection
//! can still echo the request's `id`, `data` is kept verbatim without being
//! parsed into a tree, and duplicate keys, wrong types and non-objects are all
//! plain `bad_request`s. serde_json bounds nesting depth, so no input can
//! exhaust the stack.

use crate::codes::ErrorCode;
use crate::message::{
    ClientMessage, IceServer, LeaveReason, PeerInfo, Region, Request, RequestKind, Resume,
    ServerKind, ServerMessage, Welcome,
};
use crate::types::{Data, FieldError, Limits, MAX_ID, Meta, PeerId, RoomName};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a message could not be decoded. Every variant is a `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, duplicate keys, or a field of the wrong JSON type.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object.
    #[error("message must be a JSON object")]
    NotObject,
    /// No `type` field.
    #[error("missing field `type`")]
    MissingType,
    /// A `type` this protocol does not have.
    #[error("unknown type `{0}`")]
    UnknownType(String),
    /// `id` that is not an integer from 0 to 2^53 − 1.
    #[error("id must be an integer from 0 to 2^53-1")]
    InvalidId,
    /// A field the `type` requires is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but invalid.
    #[error("invalid field `{field}`: {source}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        source: FieldError,
    },
}

impl DecodeError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// A request that could not be decoded, with the `id` to echo when one could
/// be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The request's `id`, when it was a valid one.
    pub id: Option<u64>,
    /// What was wrong.
    pub error: DecodeError,
}

/// Deserializes a field that may be JSON `null` while still telling "absent"
/// (`None`) apart from "present" (`Some`, possibly `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ClientEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    v: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    resume: Option<Resume>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// The `id` of a client message, read without decoding the rest: what
/// [`decode_client`] would report as the message's (or its rejection's)
/// `id`, for a message the rate limit drops unread. Skips the other fields
/// without allocating.
pub fn peek_id(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?;
    if !is_object(bytes) {
        return None;
    }
    let raw = serde_json::from_slice::<IdOnly<'_>>(bytes).ok()?.id?;
    parse_id(raw).ok()
}

fn parse_id(raw: &RawValue) -> Result<u64, DecodeError> {
    let text = raw.get();
    // Only plain non-negative integer literals: no fraction, exponent or sign.
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::InvalidId);
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(DecodeError::InvalidId);
    }
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_ID => Ok(n),
        _ => Err(DecodeError::InvalidId),
    }
}

fn is_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Decodes one client message (a WebSocket text frame or an NDJSON line
/// without its `\n`).
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, Rejection> {
    // serde_json does not check the UTF-8 of values it skips or keeps raw.
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Rejection {
            id: None,
            error: DecodeError::Json(format!("invalid UTF-8: {e}")),
        });
    }
    if !is_object(bytes) {
        let error = match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => DecodeError::NotObject,
            Err(e) => DecodeError::Json(e.to_string()),
        };
        return Err(Rejection { id: None, error });
    }
    let env: ClientEnvelope<'_> = match serde_json::from_slice(bytes) {
        Ok(env) => env,
        Err(e) => {
            // The envelope failed as a whole (bad JSON, duplicate key, wrong
            // type): still echo the id if it can be read on its own.
            let id = serde_json::from_slice::<IdOnly<'_>>(bytes)
                .ok()
                .and_then(|o| o.id)
                .and_then(|raw| parse_id(raw).ok());
            return Err(Rejection {
                id,
                error: DecodeError::Json(e.to_string()),
            });
        }
    };
    let id = match env.id {
        None => None,
        Some(raw) => match parse_id(raw) {
            Ok(id) => Some(id),
            Err(error) => return Err(Rejection { id: None, error }),
        },
    };
    env.into_request()
        .map(|request| ClientMessage { id, request })
        .map_err(|error| Rejection { id, error })
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, DecodeError> {
    field.ok_or(DecodeError::MissingField(name))
}

fn room(field: Option<Cow<'_, str>>) -> Result<RoomName, DecodeError> {
    RoomName::new(&required(field, "room")?).map_err(|source| DecodeError::InvalidField {
        field: "room",
        source,
    })
}

fn meta(raw: &RawValue) -> Result<Meta, DecodeError> {
    Meta::from_raw(raw).map_err(|source| DecodeError::InvalidField {
        field: "meta",
        source,
    })
}

impl ClientEnvelope<'_> {
    fn into_request(self) -> Result<Request, DecodeError> {
        let ty = self.ty.ok_or(DecodeError::MissingType)?;
        let kind =
            RequestKind::parse(&ty).ok_or_else(|| DecodeError::UnknownType(truncate(&ty)))?;
        Ok(match kind {
            RequestKind::Hello => Request::Hello {
                v: match self.v {
                    None => None,
                    Some(raw) => Some(
                        serde_json::from_str::<u64>(raw.get())
                            .map_err(|_| DecodeError::MissingField("v"))?,
                    ),
                },
                token: self.token.map(Cow::into_owned),
                resume: self.resume,
            },
            RequestKind::Join => Request::Join {
                room: room(self.room)?,
                meta: self.meta.map(meta).transpose()?,
            },
            RequestKind::Leave => Request::Leave {
                room: room(self.room)?,
            },
            RequestKind::Signal => {
                let room = room(self.room)?;
                let to = PeerId::new(&required(self.to, "to")?).map_err(|source| {
                    DecodeError::InvalidField {
                        field: "to",
                        source,
                    }
                })?;
                Request::Signal {
                    room,
                    to,
                    data: Data::from_raw(required(self.data, "data")?),
                }
            }
            RequestKind::Broadcast => Request::Broadcast {
                room: room(self.room)?,
                data: Data::from_raw(required(self.data, "data")?),
            },
            RequestKind::Update => Request::Update {
                room: room(self.room)?,
                meta: meta(required(self.meta, "meta")?)?,
            },
            RequestKind::Peers => Request::Peers {
                room: room(self.room)?,
            },
            RequestKind::Ping => Request::Ping,
        })
    }
}

/// Cuts untrusted text that goes back into an error message.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Encodes a client message (for client libraries and tests).
pub fn encode_client(msg: &ClientMessage) -> String {
    serde_json::to_string(msg).expect("client messages always serialize")
}

/// Encodes a server message without `seq`. The result starts with `{` and can
/// be given a `seq` with [`with_seq`], once per recipient.
pub fn encode_server(msg: &ServerMessage) -> Bytes {
    let mut out = BytesMut::with_capacity(128).writer();
    serde_json::to_writer(&mut out, msg).expect("server messages always serialize");
    out.into_inner().freeze()
}

/// Puts `"seq":N` first into an encoded message.
pub fn with_seq(encoded: &[u8], seq: u64) -> Bytes {
    debug_assert_eq!(encoded.first(), Some(&b'{'));
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(seq);
    let mut out = BytesMut::with_capacity(encoded.len() + digits.len() + 8);
    out.put_slice(b"{\"seq\":");
    out.put_slice(digits.as_bytes());
    out.put_u8(b',');
    out.put_slice(&encoded[1..]);
    out.freeze()
}

#[derive(Deserialize)]
struct ServerEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    seq: Option<u64>,
    id: Option<u64>,
    v: Option<u64>,
    peer: Option<PeerId>,
    session: Option<String>,
    resumed: Option<bool>,
    server: Option<String>,
    region: Option<String>,
    heartbeat_ms: Option<u64>,
    limits: Option<Limits>,
    ice_servers: Option<Vec<IceServer>>,
    regions: Option<Vec<Region>>,
    room: Option<RoomName>,
    peers: Option<Vec<PeerInfo>>,
    meta: Option<Meta>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    from: Option<PeerId>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    after_ms: Option<u64>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    message: Option<String>,
}

/// A server message as a client receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The message's `seq` (absent on `welcome`).
    pub seq: Option<u64>,
    /// The message.
    pub message: ServerMessage,
}

/// Decodes one server message (for client libraries and tests).
pub fn decode_server(bytes: &[u8]) -> Result<Received, DecodeError> {
    if !is_object(bytes) {
        return Err(DecodeError::NotObject);
    }
    let e: ServerEnvelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    let kind = ServerKind::parse(&e.ty).ok_or_else(|| DecodeError::UnknownType(truncate(&e.ty)))?;
    let room = || required(e.room.clone(), "room");
    let message = match kind {
        ServerKind::Welcome => ServerMessage::Welcome(Welcome {
            id: e.id,
            v: required(e.v, "v")?,
            peer: required(e.peer.clone(), "peer")?,
            session: required(e.session.clone(), "session")?,
            resumed: required(e.resumed, "resumed")?,
            server: required(e.server.clone(), "server")?,
            region: required(e.region.clone(), "region")?,
            heartbeat_ms: required(e.heartbeat_ms, "heartbeat_ms")?,
            limits: required(e.limits, "limits")?,
            ice_servers: e.ice_servers.clone(),
            regions: e.regions.clone(),
        }),
        ServerKind::Joined => ServerMessage::Joined {
            id: e.id,
            room: room()?,
            peers: required(e.peers.clone(), "peers")?,
        },
        ServerKind::Left => ServerMessage::Left {
            id: e.id,
            room: room()?,
        },
        ServerKind::Ack => ServerMessage::Ack {
            id: required(e.id, "id")?,
        },
        ServerKind::Peers => ServerMessage::Peers {
            id: e.id,
            room: room()?,
            peers: required(e.peers.clone(), "peers")?,
        },
        ServerKind::Pong => ServerMessage::Pong { id: e.id },
        ServerKind::PeerJoined => ServerMessage::PeerJoined {
            room: room()?,
            peer: required(e.peer.clone(), "peer")?,
            meta: required(e.meta.clone(), "meta")?,
        },
        ServerKind::PeerLeft => ServerMessage::PeerLeft {
            room: room()?,
            peer: required(e.peer.clone(), "peer")?,
            reason: match required(e.reason.as_deref(), "reason")? {
                "left" => LeaveReason::Left,
                "disconnected" => LeaveReason::Disconnected,
                _ => return Err(DecodeError::MissingField("reason")),
            },
        },
        ServerKind::PeerUpdated => ServerMessage::PeerUpdated {
            room: room()?,
            peer: required(e.peer.clone(), "peer")?,
            meta: required(e.meta.clone(), "meta")?,
        },
        ServerKind::Signal | ServerKind::Broadcast => {
            let room = room()?;
            let from = required(e.from.clone(), "from")?;
            let data = Data::from_raw(required(e.data, "data")?);
            if kind == ServerKind::Signal {
                ServerMessage::Signal { room, from, data }
            } else {
                ServerMessage::Broadcast { room, from, data }
            }
        }
        ServerKind::Reconnect => ServerMessage::Reconnect {
            reason: required(e.reason.as_deref(), "reason")?.to_owned(),
            after_ms: e.after_ms.unwrap_or(0),
        },
        ServerKind::Error => ServerMessage::Error {
            id: e.id,
            code: required(e.code.as_deref(), "code")
                .and_then(|c| ErrorCode::parse(c).ok_or(DecodeError::MissingField("code")))?,
            message: e.message.clone().unwrap_or_default(),
        },
    };
    Ok(Received {
        seq: e.seq,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> ClientMessage {
        decode_client(json.as_bytes()).unwrap_or_else(|r| panic!("{json}: {r:?}"))
    }

    fn err(json: &str) -> Rejection {
        decode_client(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn decodes_every_request() {
        let m = ok(
            r#"{"type":"hello","v":1,"token":"t","resume":{"session":"s","last_seq":41},"id":0}"#,
        );
        assert_eq!(m.id, Some(0));
        assert_eq!(
            m.request,
            Request::Hello {
                v: Some(1),
                token: Some("t".into()),
                resume: Some(Resume {
                    session: "s".into(),
                    last_seq: 41
                })
            }
        );
        assert!(matches!(
            ok(r#"{"type":"join","room":"r"}"#).request,
            Request::Join { meta: None, .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"join","room":"r","meta":{"a":1}}"#).request,
            Request::Join { meta: Some(_), .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"leave","room":"r"}"#).request,
            Request::Leave { .. }
        ));
        let sig =
            ok(r#"{"type":"signal","room":"r","to":"p_1","data":null,"id":9007199254740991}"#);
        assert_eq!(sig.id, Some(MAX_ID));
        match sig.request {
            Request::Signal { data, .. } => assert_eq!(data.as_str(), "null"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok(r#"{"type":"broadcast","room":"r","data":{"x":[1]}}"#).request,
            Request::Broadcast { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"update","room":"r","meta":{}}"#).request,
            Request::Update { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"peers","room":"r"}"#).request,
            Request::Peers { .. }
        ));
        assert_eq!(
            ok(r#"{"type":"ping","extra":{"ignored":[1,2,{"deep":true}]}}"#).request,
            Request::Ping
        );
    }

    #[test]
    fn rejections_echo_the_id_when_they_can() {
        assert_eq!(
            err(r#"{"type":"nope","id":7}"#),
            Rejection {
                id: Some(7),
                error: DecodeError::UnknownType("nope".into())
            }
        );
        assert_eq!(err(r#"{"id":7}"#).error, DecodeError::MissingType);
        assert_eq!(
            err(r#"{"type":"signal","room":"r","to":"p","id":3}"#),
            Rejection {
                id: Some(3),
                error: DecodeError::MissingField("data")
            }
        );
        assert_eq!(
            err(r#"{"type":"join","room":"bad room","id":4}"#).id,
            Some(4)
        );
        assert_eq!(err(r#"{"type":"join","room":5,"id":5}"#).id, Some(5));
        assert_eq!(
            err(r#"{"type":"join","room":"a","room":"b","id":6}"#).id,
            Some(6)
        );
        assert!(matches!(
            err(r#"{"type":"join","room":"a","room":"b"}"#).error,
            DecodeError::Json(_)
        ));
        assert_eq!(
            err(r#"{"type":"update","room":"r","meta":[1],"id":8}"#).id,
            Some(8)
        );
    }

    #[test]
    fn invalid_ids() {
        for id in [
            "-1",
            "1.0",
            "1e3",
            "9007199254740992",
            "\"1\"",
            "null",
            "true",
            "01",
            "[1]",
        ] {
            let r = err(&format!(r#"{{"type":"ping","id":{id}}}"#));
            assert_eq!(r.id, None, "{id}");
            assert_eq!(r.error.code(), ErrorCode::BadRequest);
        }
    }

    #[test]
    fn not_objects() {
        for s in [
            "",
            "   ",
            "[]",
            "1",
            "\"x\"",
            "null",
            "{",
            "{\"type\":\"ping\"",
            "\u{0}",
        ] {
            assert_eq!(decode_client(s.as_bytes()).unwrap_err().id, None, "{s:?}");
        }
        assert_eq!(err("[1]").error, DecodeError::NotObject);
        assert!(decode_client(b"{\"type\":\"ping\",\"x\":\"\xff\"}").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"type\":\"join\",\"room\":\"r\",\"meta\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decode_client(deep.as_bytes()).is_err());
        let deep_obj = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(decode_client(deep_obj.as_bytes()).is_err());
    }

    #[test]
    fn seq_goes_first() {
        let body = encode_server(&ServerMessage::Pong { id: Some(3) });
        assert_eq!(&body[..], br#"{"type":"pong","id":3}"#);
        assert_eq!(
            &with_seq(&body, 42)[..],
            br#"{"seq":42,"type":"pong","id":3}"#
        );
        let back = decode_server(&with_seq(&body, 42)).unwrap();
        assert_eq!(back.seq, Some(42));
        assert_eq!(back.message, ServerMessage::Pong { id: Some(3) });
    }

    const WELCOME: &str = r#"{"type":"welcome","v":1,"peer":"p_1","session":"s","resumed":false,"server":"a","region":"eu","heartbeat_ms":25000,"limits":{"max_message_bytes":65536,"max_rooms":32,"max_room_peers":64,"rate_per_sec":50,"rate_burst":100}"#;

    #[test]
    fn welcome_regions_are_optional_and_unknown_fields_ignored() {
        let plain = decode_server(format!("{WELCOME}}}").as_bytes()).unwrap();
        let ServerMessage::Welcome(w) = plain.message else {
            panic!()
        };
        assert_eq!(w.regions, None);
        // A newer server's fields an older client does not know are ignored.
        let future = format!(r#"{WELCOME},"future":{{"x":[1]}},"also":2}}"#);
        assert!(matches!(
            decode_server(future.as_bytes()).unwrap().message,
            ServerMessage::Welcome(_)
        ));
        let with = format!(
            r#"{WELCOME},"regions":[{{"region":"eu","ws_url":"wss://eu.example.org/ws","wt_url":"https://eu.example.org/wt","instances":2}},{{"region":"us","instances":1}}]}}"#
        );
        let ServerMessage::Welcome(w) = decode_server(with.as_bytes()).unwrap().message else {
            panic!()
        };
        let regions = w.regions.clone().unwrap();
        assert_eq!(regions.len(), 2);
        assert_eq!(
            regions[0].ws_url.as_deref(),
            Some("wss://eu.example.org/ws")
        );
        assert_eq!(regions[1].ws_url, None);
        assert_eq!(regions[1].instances, 1);
        // and back, without the absent URLs
        let text = String::from_utf8(encode_server(&ServerMessage::Welcome(w)).to_vec()).unwrap();
        assert!(text.contains(r#"{"region":"us","instances":1}"#), "{text}");
    }
}
