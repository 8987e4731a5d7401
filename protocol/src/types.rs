//! Validated field types: room names, peer ids, `meta` objects, `data` values,
//! and the per-session limits announced in `welcome`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;
/// Longest peer id, in bytes.
pub const MAX_PEER_BYTES: usize = 128;
/// Largest `meta` object, in bytes of compact JSON.
pub const MAX_META_BYTES: usize = 1024;
/// Largest integer a request `id` may be (2^53 − 1, safe in JavaScript).
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Why a field was rejected. Every variant maps to `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A room name outside 1–128 bytes of `[A-Za-z0-9._:~-]`.
    #[error("room must be 1-128 bytes of [A-Za-z0-9._:~-]")]
    Room,
    /// A peer id outside 1–128 bytes of visible ASCII.
    #[error("peer must be 1-128 bytes of visible ASCII")]
    Peer,
    /// `meta` that is not a JSON object.
    #[error("meta must be a JSON object")]
    MetaNotObject,
    /// `meta` over 1 024 bytes of compact JSON.
    #[error("meta must be at most 1024 bytes of compact JSON")]
    MetaTooLarge,
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:path, $err:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: &str) -> Result<Self, FieldError> {
                if $check(s) { Ok(Self(Arc::from(s))) } else { Err($err) }
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(D::Error::custom)
            }
        }
    };
}

fn is_room(s: &str) -> bool {
    (1..=MAX_ROOM_BYTES).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-'))
}

fn is_peer(s: &str) -> bool {
    (1..=MAX_PEER_BYTES).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

string_newtype!(
    /// A room name: 1–128 bytes of `[A-Za-z0-9._:~-]`.
    RoomName,
    is_room,
    FieldError::Room
);

string_newtype!(
    /// A peer id. Native peers get `p_` + 20 hex digits from the server; legacy
    /// Socket.IO peers keep their `deviceId`. Always 1–128 bytes of visible ASCII.
    PeerId,
    is_peer,
    FieldError::Peer
);

/// A peer's `meta`: a JSON object of at most 1 024 bytes in compact JSON,
/// stored compact and shared cheaply between every message that carries it.
#[derive(Clone)]
pub struct Meta(Arc<RawValue>);

impl Meta {
    /// Validates a JSON value as `meta` and stores it in compact form.
    pub fn from_raw(raw: &RawValue) -> Result<Self, FieldError> {
        let text = raw.get();
        if !text.trim_start().starts_with('{') {
            return Err(FieldError::MetaNotObject);
        }
        // Compact first: whitespace in the request does not count against the limit.
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| FieldError::MetaNotObject)?;
        Self::from_map(&map)
    }

    /// Validates an object as `meta`.
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> Result<Self, FieldError> {
        let compact = serde_json::to_string(map).map_err(|_| FieldError::MetaNotObject)?;
        if compact.len() > MAX_META_BYTES {
            return Err(FieldError::MetaTooLarge);
        }
        let raw = RawValue::from_string(compact).map_err(|_| FieldError::MetaNotObject)?;
        Ok(Self(Arc::from(raw)))
    }

    /// `{}`.
    pub fn empty() -> Self {
        Self(Arc::from(
            RawValue::from_string("{}".to_owned()).expect("{} is JSON"),
        ))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The object, parsed.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl Default for Meta {
    fn default() -> Self {
        Self::empty()
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Meta {}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        Self::from_raw(raw).map_err(D::Error::custom)
    }
}

/// The `data` of a `signal` or `broadcast`: any JSON value, relayed verbatim
/// (never re-encoded) and shared between every recipient.
#[derive(Clone)]
pub struct Data(Arc<RawValue>);

impl Data {
    /// Wraps an already validated JSON value.
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(Arc::from(raw.to_owned()))
    }

    /// Serializes any value as `data`.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(Arc::from(serde_json::value::to_raw_value(value)?)))
    }

    /// The JSON text as it was received.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Parses the data into any type.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_raw(<&RawValue>::deserialize(d)?))
    }
}

/// Per-session limits, announced in `welcome.limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Most rooms one session may be in.
    pub max_rooms: usize,
    /// Most members one room may have.
    pub max_room_peers: usize,
    /// Sustained messages per second a client may send.
    pub rate_per_sec: u32,
    /// Messages a client may send in a burst.
    pub rate_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_536,
            max_rooms: 32,
            max_room_peers: 64,
            rate_per_sec: 50,
            rate_burst: 100,
        }
    }
}

impl Limits {
    /// A frame or line this long is not read at all: the connection is closed
    /// with 1009.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::new("a").is_ok());
        assert!(RoomName::new("Az09._:~-").is_ok());
        assert!(RoomName::new(&"x".repeat(128)).is_ok());
        assert_eq!(RoomName::new(""), Err(FieldError::Room));
        assert_eq!(RoomName::new(&"x".repeat(129)), Err(FieldError::Room));
        for bad in ["a b", "a/b", "é", "a\0", "a\n", "room#1"] {
            assert_eq!(RoomName::new(bad), Err(FieldError::Room), "{bad:?}");
        }
    }

    #[test]
    fn peer_ids() {
        assert!(PeerId::new("p_0123abcd").is_ok());
        assert!(PeerId::new("device-42@home").is_ok());
        assert_eq!(PeerId::new(""), Err(FieldError::Peer));
        assert_eq!(PeerId::new("a b"), Err(FieldError::Peer));
        assert_eq!(PeerId::new(&"p".repeat(129)), Err(FieldError::Peer));
    }

    #[test]
    fn meta_is_compacted_and_bounded() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{ "a" : 1,  "b": [1, 2] }"#).unwrap();
        assert_eq!(
            Meta::from_raw(&raw).unwrap().as_str(),
            r#"{"a":1,"b":[1,2]}"#
        );

        let not_obj: Box<RawValue> = serde_json::from_str("[1]").unwrap();
        assert_eq!(Meta::from_raw(&not_obj), Err(FieldError::MetaNotObject));

        // 1 024 bytes exactly is allowed, one more is not.
        let pad = |n: usize| format!(r#"{{"k":"{}"}}"#, "x".repeat(n - 8));
        let ok: Box<RawValue> = serde_json::from_str(&pad(1024)).unwrap();
        assert_eq!(Meta::from_raw(&ok).unwrap().as_str().len(), 1024);
        let big: Box<RawValue> = serde_json::from_str(&pad(1025)).unwrap();
        assert_eq!(Meta::from_raw(&big), Err(FieldError::MetaTooLarge));

        // Whitespace does not count.
        let spaced = format!(r#"{{  "k"  :  "{}"  }}"#, "x".repeat(1016));
        let spaced: Box<RawValue> = serde_json::from_str(&spaced).unwrap();
        assert!(Meta::from_raw(&spaced).is_ok());
    }
}
