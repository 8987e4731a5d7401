//! What instances say to each other on Redis channels: a tag byte, then
//! length-prefixed fields (binary-safe: relayed `data` may hold anything).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pantheon_protocol::{LeaveReason, Meta, PeerId, RoomName};
use std::sync::Arc;

/// One message between instances. `origin`/`region` name the sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// A member joined, changed meta or moved to `origin` (room channel).
    Member {
        /// The instance serving the member.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The room.
        room: RoomName,
        /// The member.
        peer: PeerId,
        /// Its meta.
        meta: Meta,
    },
    /// A member left (room channel).
    Left {
        /// The instance that announced it.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The room.
        room: RoomName,
        /// The member.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A room message (room channel).
    Broadcast {
        /// The sender's instance.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The room.
        room: RoomName,
        /// The sender.
        from: PeerId,
        /// Encoded message, without `seq`.
        body: Bytes,
    },
    /// A directed message (instance channel).
    Deliver {
        /// The sender's instance.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The room.
        room: RoomName,
        /// The recipient.
        to: PeerId,
        /// Encoded message, without `seq`.
        body: Bytes,
        /// Random and non-zero; the same in the recipient's inbox, should it
        /// be kept there too, so the two copies are told apart. A trailing
        /// field: builds that predate it send none (0) and ignore it.
        id: u64,
    },
    /// "Hand me this session" (instance channel of its owner).
    Takeover {
        /// The instance asking.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The session.
        peer: PeerId,
        /// The client's last seen `seq`.
        last_seq: u64,
    },
    /// The answer (instance channel of the asker).
    Handover {
        /// The instance that served the session.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The session.
        peer: PeerId,
        /// Whether it is handed over (else it ended).
        ok: bool,
        /// The `seq` of the next message.
        next_seq: u64,
        /// Rooms and meta.
        rooms: Vec<(RoomName, Meta)>,
        /// Numbered messages the client has not seen.
        lines: Vec<Bytes>,
    },
    /// "End this session: a client of mine connected under its id"
    /// (instance channel of its owner; legacy `deviceId` replacement).
    Evict {
        /// The instance asking.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The session.
        peer: PeerId,
    },
    /// The answer (instance channel of the asker).
    Evicted {
        /// The instance that served the session.
        origin: Arc<str>,
        /// Its region.
        region: Arc<str>,
        /// The session.
        peer: PeerId,
        /// Whether the id is free now: the session ended or was not served
        /// there. `false`: the server named it, so it is never replaced.
        ok: bool,
    },
}

/// A message from another instance could not be read (a bug or a foreign
/// publisher on our channels).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bus message: {0}")]
pub struct Malformed(&'static str);

struct Writer(BytesMut);

impl Writer {
    fn new(tag: u8) -> Self {
        let mut b = BytesMut::with_capacity(128);
        b.put_u8(tag);
        Self(b)
    }

    fn field(mut self, bytes: &[u8]) -> Self {
        self.0.put_u32_le(bytes.len() as u32);
        self.0.put_slice(bytes);
        self
    }

    fn num(self, n: u64) -> Self {
        let mut buf = itoa::Buffer::new();
        let s = buf.format(n).to_owned();
        self.field(s.as_bytes())
    }
}

struct Reader(Bytes);

impl Reader {
    fn field(&mut self) -> Result<Bytes, Malformed> {
        if self.0.remaining() < 4 {
            return Err(Malformed("truncated length"));
        }
        let len = self.0.get_u32_le() as usize;
        if self.0.remaining() < len {
            return Err(Malformed("truncated field"));
        }
        Ok(self.0.split_to(len))
    }

    fn text(&mut self) -> Result<Arc<str>, Malformed> {
        let f = self.field()?;
        std::str::from_utf8(&f)
            .map(Arc::from)
            .map_err(|_| Malformed("not UTF-8"))
    }

    fn room(&mut self) -> Result<RoomName, Malformed> {
        RoomName::new(&self.text()?).map_err(|_| Malformed("room"))
    }

    fn peer(&mut self) -> Result<PeerId, Malformed> {
        PeerId::new(&self.text()?).map_err(|_| Malformed("peer"))
    }

    fn meta(&mut self) -> Result<Meta, Malformed> {
        let f = self.field()?;
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_slice(&f).map_err(|_| Malformed("meta"))?;
        Meta::from_raw(&raw).map_err(|_| Malformed("meta"))
    }

    fn num(&mut self) -> Result<u64, Malformed> {
        self.text()?.parse().map_err(|_| Malformed("number"))
    }
}

/// When a message was published and until when it may be delivered, as
/// its sender's wall clock had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publication time, Unix microseconds (`None` from senders that
    /// predate it).
    pub sent_us: Option<u64>,
    /// After this (Unix milliseconds) the message must not be delivered:
    /// its sender has been told it failed.
    pub expires_ms: u64,
}

/// Wraps an encoded message with its [`Stamp`]: `S`, the publication time
/// (Unix µs) and the deadline (Unix ms), both u64 little-endian.
pub fn stamped(payload: &[u8], sent_us: u64, expires_ms: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 17);
    b.put_u8(b'S');
    b.put_u64_le(sent_us);
    b.put_u64_le(expires_ms);
    b.put_slice(payload);
    b.freeze()
}

/// Splits off a [`Stamp`] added by [`stamped`] (or the deadline-only `E`
/// envelope of earlier builds), if any.
pub fn split_stamp(mut bytes: Bytes) -> (Option<Stamp>, Bytes) {
    if bytes.len() >= 17 && bytes[0] == b'S' {
        bytes.advance(1);
        let sent_us = bytes.get_u64_le();
        let expires_ms = bytes.get_u64_le();
        let stamp = Stamp {
            sent_us: Some(sent_us),
            expires_ms,
        };
        (Some(stamp), bytes)
    } else if bytes.len() >= 9 && bytes[0] == b'E' {
        bytes.advance(1);
        let expires_ms = bytes.get_u64_le();
        let stamp = Stamp {
            sent_us: None,
            expires_ms,
        };
        (Some(stamp), bytes)
    } else {
        (None, bytes)
    }
}

/// Now, in Unix microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Wire {
    /// Encodes for a channel.
    pub fn encode(&self) -> Bytes {
        let w = match self {
            Self::Member {
                origin,
                region,
                room,
                peer,
                meta,
            } => Writer::new(b'M')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(room.as_str().as_bytes())
                .field(peer.as_str().as_bytes())
                .field(meta.as_str().as_bytes()),
            Self::Left {
                origin,
                region,
                room,
                peer,
                reason,
            } => Writer::new(b'L')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(room.as_str().as_bytes())
                .field(peer.as_str().as_bytes())
                .field(match reason {
                    LeaveReason::Left => b"left",
                    LeaveReason::Disconnected => b"disconnected",
                }),
            Self::Broadcast {
                origin,
                region,
                room,
                from,
                body,
            } => Writer::new(b'B')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(room.as_str().as_bytes())
                .field(from.as_str().as_bytes())
                .field(body),
            Self::Deliver {
                origin,
                region,
                room,
                to,
                body,
                id,
            } => Writer::new(b'D')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(room.as_str().as_bytes())
                .field(to.as_str().as_bytes())
                .field(body)
                .num(*id),
            Self::Evict {
                origin,
                region,
                peer,
            } => Writer::new(b'X')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(peer.as_str().as_bytes()),
            Self::Evicted {
                origin,
                region,
                peer,
                ok,
            } => Writer::new(b'V')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(peer.as_str().as_bytes())
                .num(u64::from(*ok)),
            Self::Takeover {
                origin,
                region,
                peer,
                last_seq,
            } => Writer::new(b'T')
                .field(origin.as_bytes())
                .field(region.as_bytes())
                .field(peer.as_str().as_bytes())
                .num(*last_seq),
            Self::Handover {
                origin,
                region,
                peer,
                ok,
                next_seq,
                rooms,
                lines,
            } => {
                let mut w = Writer::new(b'H')
                    .field(origin.as_bytes())
                    .field(region.as_bytes())
                    .field(peer.as_str().as_bytes())
                    .num(u64::from(*ok))
                    .num(*next_seq)
                    .num(rooms.len() as u64);
                for (room, meta) in rooms {
                    w = w
                        .field(room.as_str().as_bytes())
                        .field(meta.as_str().as_bytes());
                }
                w = w.num(lines.len() as u64);
                for line in lines {
                    w = w.field(line);
                }
                w
            }
        };
        w.0.freeze()
    }

    /// Decodes a channel message.
    pub fn decode(mut bytes: Bytes) -> Result<Self, Malformed> {
        if bytes.is_empty() {
            return Err(Malformed("empty"));
        }
        let tag = bytes.get_u8();
        let mut r = Reader(bytes);
        let origin = r.text()?;
        let region = r.text()?;
        Ok(match tag {
            b'M' => Self::Member {
                origin,
                region,
                room: r.room()?,
                peer: r.peer()?,
                meta: r.meta()?,
            },
            b'L' => Self::Left {
                origin,
                region,
                room: r.room()?,
                peer: r.peer()?,
                reason: match &*r.text()? {
                    "left" => LeaveReason::Left,
                    "disconnected" => LeaveReason::Disconnected,
                    _ => return Err(Malformed("reason")),
                },
            },
            b'B' => Self::Broadcast {
                origin,
                region,
                room: r.room()?,
                from: r.peer()?,
                body: r.field()?,
            },
            b'D' => Self::Deliver {
                origin,
                region,
                room: r.room()?,
                to: r.peer()?,
                body: r.field()?,
                id: if r.0.has_remaining() { r.num()? } else { 0 },
            },
            b'X' => Self::Evict {
                origin,
                region,
                peer: r.peer()?,
            },
            b'V' => Self::Evicted {
                origin,
                region,
                peer: r.peer()?,
                ok: r.num()? == 1,
            },
            b'T' => Self::Takeover {
                origin,
                region,
                peer: r.peer()?,
                last_seq: r.num()?,
            },
            b'H' => {
                let peer = r.peer()?;
                let ok = r.num()? == 1;
                let next_seq = r.num()?;
                let n = r.num()?.min(100_000) as usize;
                let mut rooms = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    rooms.push((r.room()?, r.meta()?));
                }
                let n = r.num()?.min(10_000_000) as usize;
                let mut lines = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    lines.push(r.field()?);
                }
                Self::Handover {
                    origin,
                    region,
                    peer,
                    ok,
                    next_seq,
                    rooms,
                    lines,
                }
            }
            _ => return Err(Malformed("unknown tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(s: &str) -> Meta {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(s).unwrap();
        Meta::from_raw(&raw).unwrap()
    }

    #[test]
    fn round_trips() {
        let o: Arc<str> = "gw-1".into();
        let r: Arc<str> = "eu".into();
        let room = RoomName::new("r.1").unwrap();
        let peer = PeerId::new("p_1").unwrap();
        let all = [
            Wire::Member {
                origin: o.clone(),
                region: r.clone(),
                room: room.clone(),
                peer: peer.clone(),
                meta: meta(r#"{"a":1}"#),
            },
            Wire::Left {
                origin: o.clone(),
                region: r.clone(),
                room: room.clone(),
                peer: peer.clone(),
                reason: LeaveReason::Disconnected,
            },
            Wire::Broadcast {
                origin: o.clone(),
                region: r.clone(),
                room: room.clone(),
                from: peer.clone(),
                body: Bytes::from_static(b"{\"x\":\n1}"),
            },
            Wire::Deliver {
                origin: o.clone(),
                region: r.clone(),
                room: room.clone(),
                to: peer.clone(),
                body: Bytes::from_static(b"{}"),
                id: 7,
            },
            Wire::Takeover {
                origin: o.clone(),
                region: r.clone(),
                peer: peer.clone(),
                last_seq: 41,
            },
            Wire::Evict {
                origin: o.clone(),
                region: r.clone(),
                peer: peer.clone(),
            },
            Wire::Evicted {
                origin: o.clone(),
                region: r.clone(),
                peer: peer.clone(),
                ok: false,
            },
            Wire::Handover {
                origin: o,
                region: r,
                peer,
                ok: true,
                next_seq: 43,
                rooms: vec![(room, meta("{}"))],
                lines: vec![Bytes::from_static(b"{\"seq\":42}")],
            },
        ];
        for w in all {
            assert_eq!(Wire::decode(w.encode()).unwrap(), w);
        }
    }

    #[test]
    fn a_deliver_from_a_build_without_ids_reads_as_id_0() {
        let old = Writer::new(b'D')
            .field(b"gw-1")
            .field(b"eu")
            .field(b"r")
            .field(b"p_1")
            .field(b"{}")
            .0
            .freeze();
        match Wire::decode(old).unwrap() {
            Wire::Deliver { id, body, .. } => {
                assert_eq!(id, 0);
                assert_eq!(body.as_ref(), b"{}");
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn stamps_wrap_and_unwrap() {
        let inner = Bytes::from_static(b"D-payload");
        let (stamp, rest) = split_stamp(stamped(&inner, 1_234_567, 2234));
        let want = Stamp {
            sent_us: Some(1_234_567),
            expires_ms: 2234,
        };
        assert_eq!((stamp, rest), (Some(want), inner.clone()));
        assert_eq!(split_stamp(inner.clone()), (None, inner.clone()));
        // The deadline-only envelope of earlier builds.
        let mut old = BytesMut::new();
        old.put_u8(b'E');
        old.put_u64_le(99);
        old.put_slice(&inner);
        let (stamp, rest) = split_stamp(old.freeze());
        assert_eq!(stamp.map(|s| (s.sent_us, s.expires_ms)), Some((None, 99)));
        assert_eq!(rest, inner);
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [&b""[..], b"Z", b"M\x05\0\0\0ab", b"D\xff\xff\xff\xff"] {
            assert!(Wire::decode(Bytes::copy_from_slice(bytes)).is_err());
        }
    }
}
