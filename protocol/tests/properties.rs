//! Property tests for the wire codecs and the NDJSON framing.
//!
//! - Decoders never panic, whatever they are given: arbitrary bytes, arbitrary
//!   strings, and JSON-ish text built from a grammar of objects with random
//!   (mostly protocol) fields, some of it broken on purpose.
//! - Every valid message survives encode → decode unchanged, in both
//!   directions (server messages with a `seq` spliced in by `with_seq`).
//! - Field rules: bad room names, ids, and `meta` values are `bad_request`s
//!   that still echo a valid `id`.
//! - `LineDecoder` yields the same lines however its input is chunked, and
//!   never buffers more than its limit plus the chunk just read.

use pantheon_protocol::{
    ClientMessage, Data, DecodeError, ErrorCode, FieldError, IceServer, LeaveReason, Limits,
    LineDecoder, MAX_ID, Meta, PeerId, PeerInfo, Received, Region, Rejection, Request, Resume,
    RoomName, ServerMessage, Welcome, decode_client, decode_server, encode_client, encode_server,
    peek_id, with_seq,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A JSON string literal for `s`.
fn jstr(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Renders an object from `(key, JSON text)` pairs in the given order.
fn render(fields: &[(String, String)], pretty: bool) -> String {
    let sep = if pretty { ",\n  " } else { "," };
    let colon = if pretty { " : " } else { ":" };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}{colon}{v}", jstr(k)))
        .collect();
    if pretty {
        format!("{{\n  {}\n}}", body.join(sep))
    } else {
        format!("{{{}}}", body.join(sep))
    }
}

fn field(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

/// Checks what every client-side decode result must satisfy, and that an
/// accepted message is a fixpoint of encode → decode.
fn check_client_decode(input: &[u8]) -> Result<(), TestCaseError> {
    // What the rate limit reads of a message it drops is the id a full
    // decode finds.
    let id = match decode_client(input) {
        Ok(msg) => msg.id,
        Err(rejection) => rejection.id,
    };
    prop_assert_eq!(peek_id(input), id);
    match decode_client(input) {
        Ok(msg) => {
            let again = encode_client(&msg);
            prop_assert_eq!(
                decode_client(again.as_bytes()),
                Ok(msg),
                "re-encoded: {}",
                again
            );
        }
        Err(rejection) => {
            prop_assert_eq!(rejection.error.code(), ErrorCode::BadRequest);
            if let Some(id) = rejection.id {
                prop_assert!(id <= MAX_ID);
            }
        }
    }
    Ok(())
}

/// Same for the server side: anything accepted re-encodes to itself.
fn check_server_decode(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(received) = decode_server(input) {
        let body = encode_server(&received.message);
        let wire = match received.seq {
            Some(seq) => with_seq(&body, seq),
            None => body,
        };
        prop_assert_eq!(decode_server(&wire), Ok(received));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies: valid field values
// ---------------------------------------------------------------------------

fn room() -> impl Strategy<Value = RoomName> {
    prop_oneof![
        "[A-Za-z0-9._:~-]{1,128}",
        "[a-z]{1,8}",
        Just("x".repeat(128)),
    ]
    .prop_map(|s| RoomName::new(&s).expect("strategy yields valid room names"))
}

fn peer() -> impl Strategy<Value = PeerId> {
    prop_oneof!["p_[0-9a-f]{20}", "[!-~]{1,128}"]
        .prop_map(|s| PeerId::new(&s).expect("strategy yields valid peer ids"))
}

fn request_id() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(prop_oneof![0..=MAX_ID, 0u64..1_000, Just(0), Just(MAX_ID),])
}

/// Arbitrary text, with extra weight on what needs escaping.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ".{0,24}",
        1 => "[\"\\\\/\n\r\t\u{0}-\u{1f}\u{7f}\u{2028}\u{fffd}]{0,8}",
        1 => any::<String>(),
    ]
}

fn json_leaf(floats: bool) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    if floats {
        prop_oneof![
            4 => leaf,
            1 => any::<f64>()
                .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ]
        .boxed()
    } else {
        leaf.boxed()
    }
}

/// Arbitrary JSON values, nested a few levels deep.
fn json_value(floats: bool) -> BoxedStrategy<Value> {
    json_leaf(floats)
        .prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

fn json_object(floats: bool) -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), json_value(floats), 0..6).prop_map(|m| m.into_iter().collect())
}

fn meta() -> impl Strategy<Value = Meta> {
    prop_oneof![
        Just(Meta::empty()),
        json_object(true).prop_filter_map("meta must fit in 1024 bytes", |m| {
            Meta::from_map(&m).ok()
        }),
    ]
}

/// `data`: any JSON value, `null` included, compact or not (it is relayed
/// verbatim, so its exact text must survive).
fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        Just(Data::from_value(&Value::Null).expect("null serializes")),
        json_value(true).prop_map(|v| Data::from_value(&v).expect("values serialize")),
        json_value(true).prop_map(|v| {
            let pretty = serde_json::to_string_pretty(&v).expect("values serialize");
            Data::from_raw(&RawValue::from_string(pretty).expect("pretty JSON is JSON"))
        }),
        // An SDP offer and an ICE candidate, the two things actually relayed.
        ("[ -~\r\n]{0,2000}").prop_map(|sdp| {
            Data::from_value(&serde_json::json!({"type": "offer", "sdp": sdp}))
                .expect("values serialize")
        }),
        ("[ -~]{0,120}", proptest::option::of(0u32..8)).prop_map(|(candidate, idx)| {
            Data::from_value(&serde_json::json!({
                "candidate": candidate, "sdpMid": "0", "sdpMLineIndex": idx
            }))
            .expect("values serialize")
        }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(text()),
            proptest::option::of((text(), any::<u64>())),
        )
            .prop_map(|(v, token, resume)| Request::Hello {
                v,
                token,
                resume: resume.map(|(session, last_seq)| Resume { session, last_seq }),
            }),
        (room(), proptest::option::of(meta()))
            .prop_map(|(room, meta)| Request::Join { room, meta }),
        room().prop_map(|room| Request::Leave { room }),
        (room(), peer(), data()).prop_map(|(room, to, data)| Request::Signal { room, to, data }),
        (room(), data()).prop_map(|(room, data)| Request::Broadcast { room, data }),
        (room(), meta()).prop_map(|(room, meta)| Request::Update { room, meta }),
        room().prop_map(|room| Request::Peers { room }),
        Just(Request::Ping),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    (request_id(), request()).prop_map(|(id, request)| ClientMessage { id, request })
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (peer(), meta()).prop_map(|(peer, meta)| PeerInfo { peer, meta })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (
            any::<usize>(),
            any::<usize>(),
            any::<usize>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(max_message_bytes, max_rooms, max_room_peers, rate_per_sec, rate_burst)| {
                    Limits {
                        max_message_bytes,
                        max_rooms,
                        max_room_peers,
                        rate_per_sec,
                        rate_burst,
                    }
                }
            ),
    ]
}

fn ice_server() -> impl Strategy<Value = IceServer> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(urls, username, credential)| IceServer {
            urls,
            username,
            credential,
        })
}

fn region_info() -> impl Strategy<Value = Region> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<u32>(),
    )
        .prop_map(|(region, ws_url, wt_url, instances)| Region {
            region,
            ws_url,
            wt_url,
            instances,
        })
}

fn welcome() -> impl Strategy<Value = ServerMessage> {
    (
        (request_id(), any::<u64>(), peer(), text(), any::<bool>()),
        (
            text(),
            text(),
            any::<u64>(),
            limits(),
            proptest::option::of(vec(ice_server(), 0..4)),
            proptest::option::of(vec(region_info(), 0..4)),
        ),
    )
        .prop_map(
            |(
                (id, v, peer, session, resumed),
                (server, region, heartbeat_ms, limits, ice_servers, regions),
            )| {
                ServerMessage::Welcome(Welcome {
                    id,
                    v,
                    peer,
                    session,
                    resumed,
                    server,
                    region,
                    heartbeat_ms,
                    limits,
                    ice_servers,
                    regions,
                })
            },
        )
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        welcome(),
        (request_id(), room(), vec(peer_info(), 0..5))
            .prop_map(|(id, room, peers)| ServerMessage::Joined { id, room, peers }),
        (request_id(), room()).prop_map(|(id, room)| ServerMessage::Left { id, room }),
        (0..=MAX_ID).prop_map(|id| ServerMessage::Ack { id }),
        (request_id(), room(), vec(peer_info(), 0..5))
            .prop_map(|(id, room, peers)| ServerMessage::Peers { id, room, peers }),
        request_id().prop_map(|id| ServerMessage::Pong { id }),
        (room(), peer(), meta()).prop_map(|(room, peer, meta)| ServerMessage::PeerJoined {
            room,
            peer,
            meta
        }),
        (
            room(),
            peer(),
            select(vec![LeaveReason::Left, LeaveReason::Disconnected])
        )
            .prop_map(|(room, peer, reason)| ServerMessage::PeerLeft {
                room,
                peer,
                reason
            }),
        (room(), peer(), meta()).prop_map(|(room, peer, meta)| ServerMessage::PeerUpdated {
            room,
            peer,
            meta
        }),
        (room(), peer(), data()).prop_map(|(room, from, data)| ServerMessage::Signal {
            room,
            from,
            data
        }),
        (room(), peer(), data()).prop_map(|(room, from, data)| ServerMessage::Broadcast {
            room,
            from,
            data
        }),
        (text(), any::<u64>())
            .prop_map(|(reason, after_ms)| ServerMessage::Reconnect { reason, after_ms }),
        (request_id(), select(ErrorCode::ALL.to_vec()), text())
            .prop_map(|(id, code, message)| ServerMessage::Error { id, code, message }),
    ]
}

// ---------------------------------------------------------------------------
// Strategies: JSON-ish text (a grammar of objects with random fields)
// ---------------------------------------------------------------------------

const TYPES: &[&str] = &[
    "hello",
    "join",
    "leave",
    "signal",
    "broadcast",
    "update",
    "peers",
    "ping",
    "welcome",
    "joined",
    "left",
    "ack",
    "pong",
    "peer_joined",
    "peer_left",
    "peer_updated",
    "reconnect",
    "error",
    "Join",
    "",
];

/// JSON-ish scalar text: mostly valid JSON, some of it deliberately broken.
fn jsonish_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => json_leaf(true).prop_map(|v| v.to_string()),
        1 => select(vec![
            "null", "true", "false", "-0", "01", "1.", ".5", "-", "1e", "1e999", "-1e999",
            "NaN", "Infinity", "tru", "nul", "\"", "\"\\u\"", "\"\\ud800\"", "\"\\udc00x\"",
            "\"\\x\"", "{", "}", "[", "]", ",", ":", "", " ", "\u{0}", "\u{feff}",
        ])
        .prop_map(str::to_owned),
        1 => "-?[0-9]{1,24}(\\.[0-9]{0,4})?([eE][+-]?[0-9]{0,3})?",
        1 => "\"([^\"\\\\]|\\\\[\"\\\\/bfnrtux]|\\\\u[0-9a-fA-F]{0,4}){0,8}\"?",
        1 => ".{0,6}",
    ]
}

/// Any JSON-ish value: leaves, arrays and objects, nested.
fn jsonish_value() -> BoxedStrategy<String> {
    jsonish_leaf()
        .prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
                vec((jsonish_key(), inner), 0..5).prop_map(|kv| {
                    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
        .boxed()
}

const KEYS: &[&str] = &[
    "type",
    "id",
    "seq",
    "v",
    "token",
    "resume",
    "room",
    "to",
    "from",
    "data",
    "meta",
    "peer",
    "peers",
    "session",
    "resumed",
    "server",
    "region",
    "heartbeat_ms",
    "limits",
    "ice_servers",
    "regions",
    "reason",
    "after_ms",
    "code",
    "message",
    "last_seq",
    "urls",
];

fn jsonish_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(KEYS).prop_map(jstr),
        1 => text().prop_map(|k| jstr(&k)),
        1 => "[a-z\"]{0,6}",
    ]
}

/// A plausible value for a known key: valid often enough to get deep into
/// the decoders, invalid often enough to hit every rejection.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let specific: BoxedStrategy<String> = match key {
        "type" => select(TYPES).prop_map(jstr).boxed(),
        "id" | "seq" | "v" | "heartbeat_ms" | "after_ms" | "last_seq" => prop_oneof![
            4 => (0..=MAX_ID).prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
        ]
        .boxed(),
        "data" => json_value(true).prop_map(|v| v.to_string()).boxed(),
        "room" => prop_oneof![
            6 => "\"[A-Za-z0-9._:~-]{1,130}\"",
            1 => text().prop_map(|s| jstr(&s)),
        ]
        .boxed(),
        "to" | "from" | "peer" => prop_oneof![
            6 => "\"p_[0-9a-f]{20}\"",
            1 => text().prop_map(|s| jstr(&s)),
        ]
        .boxed(),
        "meta" => prop_oneof![
            json_object(true).prop_map(|m| Value::Object(m).to_string()),
            Just(format!("{{\"k\":\"{}\"}}", "x".repeat(1020))),
        ]
        .boxed(),
        "resume" => (text(), any::<u64>())
            .prop_map(|(s, n)| format!("{{\"session\":{},\"last_seq\":{n}}}", jstr(&s)))
            .boxed(),
        "limits" => limits()
            .prop_map(|l| serde_json::to_string(&l).expect("limits serialize"))
            .boxed(),
        "peers" => vec(peer_info(), 0..3)
            .prop_map(|p| serde_json::to_string(&p).expect("peers serialize"))
            .boxed(),
        "ice_servers" => vec(ice_server(), 0..3)
            .prop_map(|s| serde_json::to_string(&s).expect("ice servers serialize"))
            .boxed(),
        "regions" => vec(region_info(), 0..3)
            .prop_map(|s| serde_json::to_string(&s).expect("regions serialize"))
            .boxed(),
        "reason" => select(vec!["\"left\"", "\"disconnected\"", "\"draining\"", "\"\""])
            .prop_map(str::to_owned)
            .boxed(),
        "code" => select(ErrorCode::ALL.to_vec())
            .prop_map(|c| jstr(c.as_str()))
            .boxed(),
        "resumed" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        _ => text().prop_map(|s| jstr(&s)).boxed(),
    };
    prop_oneof![12 => specific, 1 => jsonish_value()].boxed()
}

fn jsonish_field() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        6 => select(KEYS).prop_flat_map(|k| value_for(k).prop_map(move |v| (jstr(k), v))),
        1 => (jsonish_key(), jsonish_value()),
    ]
}

/// Every `type` with the fields it takes.
const SHAPES: &[(&str, &[&str])] = &[
    ("hello", &["v", "token", "resume"]),
    ("join", &["room", "meta"]),
    ("leave", &["room"]),
    ("signal", &["room", "to", "data"]),
    ("broadcast", &["room", "data"]),
    ("update", &["room", "meta"]),
    ("peers", &["room"]),
    ("ping", &[]),
    (
        "welcome",
        &[
            "v",
            "peer",
            "session",
            "resumed",
            "server",
            "region",
            "heartbeat_ms",
            "limits",
            "ice_servers",
            "regions",
        ],
    ),
    ("joined", &["room", "peers"]),
    ("left", &["room"]),
    ("ack", &["id"]),
    ("peers", &["room", "peers"]),
    ("pong", &[]),
    ("peer_joined", &["room", "peer", "meta"]),
    ("peer_left", &["room", "peer", "reason"]),
    ("peer_updated", &["room", "peer", "meta"]),
    ("signal", &["room", "from", "data"]),
    ("broadcast", &["room", "from", "data"]),
    ("reconnect", &["reason", "after_ms"]),
    ("error", &["code", "message"]),
];

/// The fields of a message of a known `type`, each present nine times in
/// ten, plus `id` and `seq` now and then.
fn shaped_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    select(SHAPES).prop_flat_map(|(ty, keys)| {
        let fields: Vec<_> = keys
            .iter()
            .chain(&["id", "seq"])
            .map(|&k| {
                let p = if matches!(k, "id" | "seq") && !keys.contains(&k) {
                    0.5
                } else {
                    0.9
                };
                proptest::option::weighted(p, value_for(k).prop_map(move |v| (jstr(k), v)))
            })
            .collect();
        fields.prop_map(move |fields| {
            let mut fields: Vec<_> = fields.into_iter().flatten().collect();
            fields.insert(0, (jstr("type"), jstr(ty)));
            fields
        })
    })
}

/// A JSON-ish object with random fields (maybe duplicated, maybe truncated,
/// maybe with odd whitespace). Mostly shaped like a real message, so that
/// decoding often gets all the way through.
fn jsonish_message() -> impl Strategy<Value = String> {
    let fields = prop_oneof![
        3 => (shaped_fields(), vec(jsonish_field(), 0..3)).prop_map(|(mut f, extra)| {
            f.extend(extra);
            f
        }),
        1 => (proptest::option::of(value_for("type")), vec(jsonish_field(), 0..10)).prop_map(
            |(ty, mut f)| {
                if let Some(ty) = ty {
                    f.insert(0, (jstr("type"), ty));
                }
                f
            }
        ),
    ];
    (
        fields.prop_flat_map(|f| Just(f).prop_shuffle()),
        select(vec!["", " ", "\n", "\t", "\r\n  "]),
        proptest::option::weighted(0.05, any::<prop::sample::Index>()),
    )
        .prop_map(|(fields, ws, cut)| {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}{ws}"))
                .collect();
            let mut text = format!("{ws}{{{}}}{ws}", body.join(","));
            if let Some(cut) = cut {
                let mut at = cut.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            text
        })
}

// ---------------------------------------------------------------------------
// Strategies: invalid field values
// ---------------------------------------------------------------------------

/// Room names outside 1–128 bytes of `[A-Za-z0-9._:~-]`.
fn invalid_room() -> impl Strategy<Value = String> {
    let bad_char = any::<char>().prop_filter("outside the room charset", |c| {
        !(c.is_ascii_alphanumeric() || "._:~-".contains(*c))
    });
    prop_oneof![
        Just(String::new()),
        Just("x".repeat(129)),
        "[A-Za-z0-9._:~-]{129,400}",
        ("[A-Za-z0-9._:~-]{0,60}", bad_char, "[A-Za-z0-9._:~-]{0,60}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        // 64 two-byte characters: 64 characters, 128 bytes, none allowed.
        Just("é".repeat(64)),
    ]
}

/// JSON text that is valid JSON but not a valid `id`.
fn invalid_id() -> impl Strategy<Value = String> {
    prop_oneof![
        ((MAX_ID + 1)..=u64::MAX).prop_map(|n| n.to_string()),
        (i64::MIN..0).prop_map(|n| n.to_string()),
        Just("-0".to_owned()),
        (0..=MAX_ID).prop_map(|n| format!("{n}.0")),
        (0..=MAX_ID).prop_map(|n| format!("{n}e0")),
        (0..=MAX_ID).prop_map(|n| format!("{n}E+1")),
        "[1-9][0-9]{16,40}",
        any::<f64>().prop_filter_map("a finite non-integer literal", |f| {
            serde_json::Number::from_f64(f)
                .map(|n| n.to_string())
                .filter(|s| !s.bytes().all(|b| b.is_ascii_digit()))
        }),
        (0..=MAX_ID).prop_map(|n| jstr(&n.to_string())),
        select(vec![
            "null",
            "true",
            "false",
            "[1]",
            "{}",
            "{\"id\":1}",
            "\"\""
        ])
        .prop_map(str::to_owned),
    ]
}

/// Valid JSON values that are not objects, as `meta`.
fn non_object_meta() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value(true)
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(|v| v.to_string()),
        select(vec!["null", "\"{}\"", "[{}]", "\"{\\\"a\\\":1}\"", "[]"]).prop_map(str::to_owned),
    ]
}

/// The request types that carry a room, and fields that make them otherwise
/// valid.
fn with_room(kind: &str, room_json: String) -> Vec<(String, String)> {
    let mut fields = vec![field("type", jstr(kind)), field("room", room_json)];
    match kind {
        "signal" => {
            fields.push(field("to", "\"p_0123456789abcdef0123\""));
            fields.push(field("data", "{\"sdp\":\"v=0\"}"));
        }
        "broadcast" => fields.push(field("data", "null")),
        "update" => fields.push(field("meta", "{\"name\":\"a\"}")),
        _ => {}
    }
    fields
}

const ROOM_KINDS: [&str; 6] = ["join", "leave", "signal", "broadcast", "update", "peers"];

/// Adds `id` (when given), shuffles the fields, and renders them.
fn shuffled_request(
    fields: Vec<(String, String)>,
    id: Option<String>,
) -> impl Strategy<Value = String> {
    let mut fields = fields;
    if let Some(id) = id {
        fields.push(field("id", id));
    }
    (Just(fields).prop_shuffle(), any::<bool>()).prop_map(|(f, pretty)| render(&f, pretty))
}

/// Oversized or boundary-sized `meta`: a random object padded so that its
/// compact form is `target` bytes long (or longer, if it already was).
fn sized_meta(target: std::ops::Range<usize>) -> impl Strategy<Value = Map<String, Value>> {
    (json_object(false), target).prop_map(|(mut m, target)| {
        m.remove("pad");
        let base = Value::Object(m.clone()).to_string().len();
        let overhead = r#""pad":"""#.len() + usize::from(!m.is_empty());
        let n = target.saturating_sub(base + overhead);
        m.insert("pad".to_owned(), Value::String("x".repeat(n)));
        m
    })
}

// ---------------------------------------------------------------------------
// Decoders never panic
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decoders_never_panic_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_client_decode(&bytes)?;
        check_server_decode(&bytes)?;
    }

    #[test]
    fn decoders_never_panic_on_strings(s in any::<String>()) {
        check_client_decode(s.as_bytes())?;
        check_server_decode(s.as_bytes())?;
    }

    #[test]
    fn decoders_never_panic_on_jsonish_objects(s in jsonish_message()) {
        check_client_decode(s.as_bytes())?;
        check_server_decode(s.as_bytes())?;
    }

    #[test]
    fn decoders_never_panic_on_jsonish_values(s in jsonish_value()) {
        check_client_decode(s.as_bytes())?;
        check_server_decode(s.as_bytes())?;
    }

    /// Any byte flipped in a valid message still decodes or is rejected.
    #[test]
    fn decoders_never_panic_on_mutated_messages(
        msg in client_message(),
        server in server_message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for mut bytes in [encode_client(&msg).into_bytes(), with_seq(&encode_server(&server), 7).to_vec()] {
            for (at, b) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            check_client_decode(&bytes)?;
            check_server_decode(&bytes)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let text = encode_client(&msg);
        prop_assert_eq!(decode_client(text.as_bytes()), Ok(msg), "wire: {}", text);
    }

    /// Key order and whitespace do not matter to the decoder; `data` is kept
    /// verbatim, so only messages without one are compared after reformatting.
    #[test]
    fn client_messages_decode_the_same_pretty(msg in client_message()) {
        let value: Value = serde_json::from_str(&encode_client(&msg)).expect("encoder writes JSON");
        let pretty = serde_json::to_string_pretty(&value).expect("values serialize");
        let decoded = decode_client(pretty.as_bytes());
        match &msg.request {
            Request::Signal { .. } | Request::Broadcast { .. } => {
                let decoded = decoded.expect("pretty message decodes");
                prop_assert_eq!(decoded.id, msg.id);
                prop_assert_eq!(decoded.request.kind(), msg.request.kind());
            }
            _ => prop_assert_eq!(decoded, Ok(msg), "wire: {}", pretty),
        }
    }

    #[test]
    fn server_messages_round_trip_with_seq(msg in server_message(), seq in any::<u64>()) {
        let body = encode_server(&msg);
        prop_assert_eq!(body.first(), Some(&b'{'));
        let wire = with_seq(&body, seq);
        let prefix = format!("{{\"seq\":{seq},");
        prop_assert!(wire.starts_with(prefix.as_bytes()));
        prop_assert_eq!(
            decode_server(&wire),
            Ok(Received { seq: Some(seq), message: msg.clone() }),
            "wire: {}", String::from_utf8_lossy(&wire)
        );
        // Without `seq` (as `welcome` is sent) it decodes too.
        prop_assert_eq!(decode_server(&body), Ok(Received { seq: None, message: msg }));
    }

    /// The same body gets a different `seq` per recipient; the body is shared.
    #[test]
    fn with_seq_only_changes_the_seq(msg in server_message(), a in any::<u64>(), b in any::<u64>()) {
        let body = encode_server(&msg);
        let (wa, wb) = (with_seq(&body, a), with_seq(&body, b));
        let ra = decode_server(&wa).expect("decodes");
        let rb = decode_server(&wb).expect("decodes");
        prop_assert_eq!(ra.seq, Some(a));
        prop_assert_eq!(rb.seq, Some(b));
        prop_assert_eq!(ra.message, rb.message);
        prop_assert!(wa.ends_with(&body[1..]));
    }
}

// ---------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------

fn rejected(text: &str) -> Result<Rejection, TestCaseError> {
    match decode_client(text.as_bytes()) {
        Ok(msg) => Err(TestCaseError::fail(format!("accepted {text}\nas {msg:?}"))),
        Err(r) => {
            prop_assert_eq!(r.error.code(), ErrorCode::BadRequest);
            Ok(r)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invalid_rooms_are_rejected_and_echo_the_id(
        (text, id) in (select(ROOM_KINDS.to_vec()), invalid_room(), request_id())
            .prop_flat_map(|(kind, room, id)| {
                shuffled_request(with_room(kind, jstr(&room)), id.map(|i| i.to_string()))
                    .prop_map(move |t| (t, id))
            })
    ) {
        let r = rejected(&text)?;
        prop_assert_eq!(r, Rejection {
            id,
            error: DecodeError::InvalidField { field: "room", source: FieldError::Room },
        }, "{}", text);
    }

    /// A room that is not a string at all is a `bad_request` too, id echoed.
    #[test]
    fn non_string_rooms_are_rejected_and_echo_the_id(
        (text, id) in (
            select(ROOM_KINDS.to_vec()),
            json_value(true).prop_filter("not a string", |v| !v.is_string()),
            request_id(),
        )
            .prop_flat_map(|(kind, room, id)| {
                shuffled_request(with_room(kind, room.to_string()), id.map(|i| i.to_string()))
                    .prop_map(move |t| (t, id))
            })
    ) {
        prop_assert_eq!(rejected(&text)?.id, id, "{}", text);
    }

    #[test]
    fn valid_rooms_are_accepted(
        (text, id) in (select(ROOM_KINDS.to_vec()), room(), request_id())
            .prop_flat_map(|(kind, room, id)| {
                shuffled_request(with_room(kind, jstr(room.as_str())), id.map(|i| i.to_string()))
                    .prop_map(move |t| (t, id))
            })
    ) {
        let msg = decode_client(text.as_bytes());
        prop_assert!(msg.is_ok(), "{} -> {:?}", text, msg);
        prop_assert_eq!(msg.expect("checked").id, id);
    }

    #[test]
    fn invalid_ids_are_rejected_without_an_id(
        text in (request(), invalid_id()).prop_flat_map(|(request, id)| {
            let msg = ClientMessage { id: None, request };
            let value: Value = serde_json::from_str(&encode_client(&msg)).expect("encoder writes JSON");
            let fields = value
                .as_object()
                .expect("messages are objects")
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            shuffled_request(fields, Some(id))
        })
    ) {
        prop_assert_eq!(rejected(&text)?, Rejection { id: None, error: DecodeError::InvalidId }, "{}", text);
    }

    #[test]
    fn oversized_meta_is_rejected_and_echoes_the_id(
        (text, id, compact_len) in (
            select(vec!["join", "update"]),
            sized_meta(1025..4096),
            request_id(),
            any::<bool>(),
        )
            .prop_flat_map(|(kind, meta, id, pretty)| {
                let compact_len = Value::Object(meta.clone()).to_string().len();
                let meta = if pretty {
                    serde_json::to_string_pretty(&meta)
                } else {
                    serde_json::to_string(&meta)
                }
                .expect("maps serialize");
                let fields = vec![
                    field("type", jstr(kind)),
                    field("room", "\"lobby\""),
                    field("meta", meta),
                ];
                shuffled_request(fields, id.map(|i| i.to_string()))
                    .prop_map(move |t| (t, id, compact_len))
            })
    ) {
        prop_assert!(compact_len > 1024);
        prop_assert_eq!(rejected(&text)?, Rejection {
            id,
            error: DecodeError::InvalidField { field: "meta", source: FieldError::MetaTooLarge },
        }, "{}", text);
    }

    /// Accepted exactly when the compact form is at most 1 024 bytes, however
    /// much whitespace the request itself has; stored compact.
    #[test]
    fn meta_limit_counts_compact_bytes(
        kind in select(vec!["join", "update"]),
        meta in sized_meta(1000..1050),
        id in request_id(),
    ) {
        let compact = Value::Object(meta.clone()).to_string();
        let pretty = serde_json::to_string_pretty(&meta).expect("maps serialize");
        let mut fields = vec![field("type", jstr(kind)), field("room", "\"lobby\""), field("meta", pretty)];
        if let Some(id) = id {
            fields.push(field("id", id.to_string()));
        }
        let text = render(&fields, true);
        let decoded = decode_client(text.as_bytes());
        if compact.len() <= 1024 {
            let msg = decoded.expect("meta within the limit is accepted");
            let got = match msg.request {
                Request::Join { meta: Some(m), .. } | Request::Update { meta: m, .. } => m,
                other => return Err(TestCaseError::fail(format!("decoded as {other:?}"))),
            };
            prop_assert_eq!(got.as_str(), compact.as_str());
        } else {
            prop_assert_eq!(decoded, Err(Rejection {
                id,
                error: DecodeError::InvalidField { field: "meta", source: FieldError::MetaTooLarge },
            }));
        }
    }

    #[test]
    fn non_object_meta_is_rejected_and_echoes_the_id(
        (text, id) in (select(vec!["join", "update"]), non_object_meta(), request_id())
            .prop_flat_map(|(kind, meta, id)| {
                let fields = vec![
                    field("type", jstr(kind)),
                    field("room", "\"lobby\""),
                    field("meta", meta),
                ];
                shuffled_request(fields, id.map(|i| i.to_string()))
                    .prop_map(move |t| (t, id))
            })
    ) {
        prop_assert_eq!(rejected(&text)?, Rejection {
            id,
            error: DecodeError::InvalidField { field: "meta", source: FieldError::MetaNotObject },
        }, "{}", text);
    }

    /// Whatever else is wrong with a request, a valid `id` is echoed as long
    /// as the text is JSON.
    #[test]
    fn any_rejection_of_an_object_echoes_a_valid_id(
        s in jsonish_message(),
        id in 0..=MAX_ID,
    ) {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&s) else {
            return Ok(());
        };
        obj.insert("id".to_owned(), Value::from(id));
        let text = Value::Object(obj).to_string();
        match decode_client(text.as_bytes()) {
            Ok(msg) => prop_assert_eq!(msg.id, Some(id)),
            Err(r) => prop_assert_eq!(r.id, Some(id), "{} -> {:?}", text, r.error),
        }
    }
}

// ---------------------------------------------------------------------------
// LineDecoder
// ---------------------------------------------------------------------------

/// The reference: what a decoder must yield for `input`, and whether it must
/// refuse a line. A line's length counts everything but its `\n`.
fn expected_lines(input: &[u8], max_line: usize) -> (Vec<Vec<u8>>, bool) {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..pos];
        rest = &rest[pos + 1..];
        if line.len() > max_line {
            return (lines, true);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line.to_vec());
        }
    }
    (lines, rest.len() > max_line)
}

/// Feeds `input` in chunks of the given sizes (cycled), draining after every
/// chunk as a transport reader does, checking the buffering bound throughout.
fn run_chunked(
    input: &[u8],
    max_line: usize,
    sizes: &[usize],
    honor_room_left: bool,
) -> Result<(Vec<Vec<u8>>, bool), TestCaseError> {
    let mut d = LineDecoder::new(max_line);
    let mut lines = Vec::new();
    let mut at = 0;
    let mut sizes = sizes.iter().cycle();
    while at < input.len() {
        let mut n = (*sizes.next().expect("sizes are never empty")).min(input.len() - at);
        if honor_room_left {
            prop_assert!(d.room_left() >= 1, "room_left 0 without an error");
            n = n.min(d.room_left());
        }
        let before = d.buffered();
        prop_assert!(
            before <= max_line,
            "{} bytes buffered between reads",
            before
        );
        d.extend(&input[at..at + n]);
        at += n;
        prop_assert_eq!(d.buffered(), before + n);
        prop_assert!(d.buffered() <= max_line + n);
        if honor_room_left {
            prop_assert!(d.buffered() <= max_line + 1);
        }
        loop {
            match d.next_line() {
                Ok(Some(line)) => {
                    prop_assert!(!line.contains(&b'\n'));
                    prop_assert!(!line.iter().all(u8::is_ascii_whitespace));
                    lines.push(line.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert_eq!(e.limit, max_line);
                    return Ok((lines, true));
                }
            }
        }
    }
    Ok((lines, false))
}

/// Line-oriented input: JSON-ish lines, blank and whitespace lines, CRLF,
/// lone `\r`, and raw bytes.
fn ndjson_input() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            4 => jsonish_message().prop_map(|s| format!("{s}\n").into_bytes()),
            1 => jsonish_message().prop_map(|s| format!("{s}\r\n").into_bytes()),
            1 => select(vec!["\n", "\r\n", "  \n", "\t\r\n", "\r", "\r\r\n", "\n\n\n"])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => vec(any::<u8>(), 0..64),
            1 => "[ -~]{0,70}".prop_map(String::into_bytes),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..4, 8usize..80, 100usize..400, Just(1 << 20)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn line_decoder_ignores_chunking(
        input in ndjson_input(),
        max_line in max_line(),
        sizes in vec(1usize..96, 1..8),
    ) {
        let expected = expected_lines(&input, max_line);
        let whole = run_chunked(&input, max_line, &[usize::MAX], false)?;
        prop_assert_eq!(&whole, &expected, "all at once");
        let bytewise = run_chunked(&input, max_line, &[1], false)?;
        prop_assert_eq!(&bytewise, &expected, "byte by byte");
        let chunked = run_chunked(&input, max_line, &sizes, false)?;
        prop_assert_eq!(&chunked, &expected, "chunks of {:?}", sizes);
        let bounded = run_chunked(&input, max_line, &sizes, true)?;
        prop_assert_eq!(&bounded, &expected, "reading at most room_left()");
    }

    /// Lines exactly at, and just over, the limit, with and without `\r`.
    #[test]
    fn line_decoder_limit_is_exact(
        max_line in 1usize..64,
        extra in 0usize..3,
        crlf in any::<bool>(),
        sizes in vec(1usize..8, 1..4),
    ) {
        // The first line is `max_line + extra` bytes before its `\n`.
        let mut input = vec![b'a'; max_line + extra - usize::from(crlf)];
        if crlf {
            input.push(b'\r');
        }
        input.extend_from_slice(b"\nx\n");
        let expected = expected_lines(&input, max_line);
        if extra == 0 {
            prop_assert_eq!(expected.0.last().map(Vec::as_slice), Some(&b"x"[..]));
            prop_assert!(!expected.1);
        } else {
            prop_assert_eq!(expected.clone(), (vec![], true));
        }
        for s in [&[usize::MAX][..], &[1], &sizes] {
            prop_assert_eq!(&run_chunked(&input, max_line, s, false)?, &expected);
            prop_assert_eq!(&run_chunked(&input, max_line, s, true)?, &expected);
        }
    }

    #[test]
    fn line_decoder_never_panics_on_bytes(
        input in vec(any::<u8>(), 0..1024),
        max_line in max_line(),
        sizes in vec(1usize..300, 1..8),
    ) {
        let expected = expected_lines(&input, max_line);
        prop_assert_eq!(run_chunked(&input, max_line, &sizes, false)?, expected);
    }
}

// ---------------------------------------------------------------------------
// Fixed examples for the properties above
// ---------------------------------------------------------------------------

#[test]
fn crlf_line_at_the_limit_is_refused_however_it_arrives() {
    // 4 bytes + `\r` is 5 bytes before the `\n`: over a limit of 4 whether the
    // `\n` comes in the same read or the next one.
    let mut whole = LineDecoder::new(4);
    whole.extend(b"abcd\r\n");
    assert!(whole.next_line().is_err());

    let mut split = LineDecoder::new(4);
    split.extend(b"abcd\r");
    assert!(split.next_line().is_err());

    let mut fits = LineDecoder::new(5);
    fits.extend(b"abcd\r\n");
    assert_eq!(fits.next_line().unwrap().as_deref(), Some(&b"abcd"[..]));
}
