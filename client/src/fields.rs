//! Conversions for the arguments of typed requests, so callers can pass
//! `&str` while hot loops pass already validated (cheaply cloned) values.

use crate::error::Error;
use pantheon_protocol::{Data, FieldError, Meta, PeerId, RoomName};
use serde_json::value::RawValue;

/// Something usable as a room name: `&str`/`String` (validated on each
/// call) or a [`RoomName`] (validated once, cloned for the price of a
/// reference count).
pub trait IntoRoom {
    /// Validates and converts.
    fn into_room(self) -> Result<RoomName, Error>;
}

impl IntoRoom for RoomName {
    fn into_room(self) -> Result<RoomName, Error> {
        Ok(self)
    }
}

impl IntoRoom for &RoomName {
    fn into_room(self) -> Result<RoomName, Error> {
        Ok(self.clone())
    }
}

impl IntoRoom for &str {
    fn into_room(self) -> Result<RoomName, Error> {
        Ok(RoomName::new(self)?)
    }
}

impl IntoRoom for &String {
    fn into_room(self) -> Result<RoomName, Error> {
        Ok(RoomName::new(self)?)
    }
}

impl IntoRoom for String {
    fn into_room(self) -> Result<RoomName, Error> {
        Ok(RoomName::new(&self)?)
    }
}

/// Something usable as a peer id: `&str`/`String` or a [`PeerId`].
pub trait IntoPeer {
    /// Validates and converts.
    fn into_peer(self) -> Result<PeerId, Error>;
}

impl IntoPeer for PeerId {
    fn into_peer(self) -> Result<PeerId, Error> {
        Ok(self)
    }
}

impl IntoPeer for &PeerId {
    fn into_peer(self) -> Result<PeerId, Error> {
        Ok(self.clone())
    }
}

impl IntoPeer for &str {
    fn into_peer(self) -> Result<PeerId, Error> {
        Ok(PeerId::new(self)?)
    }
}

impl IntoPeer for &String {
    fn into_peer(self) -> Result<PeerId, Error> {
        Ok(PeerId::new(self)?)
    }
}

impl IntoPeer for String {
    fn into_peer(self) -> Result<PeerId, Error> {
        Ok(PeerId::new(&self)?)
    }
}

/// Something usable as `data`: a [`Data`], a `serde_json::Value`, or raw
/// JSON text already validated as a [`RawValue`].
pub trait IntoData {
    /// Converts.
    fn into_data(self) -> Result<Data, Error>;
}

impl IntoData for Data {
    fn into_data(self) -> Result<Data, Error> {
        Ok(self)
    }
}

impl IntoData for &Data {
    fn into_data(self) -> Result<Data, Error> {
        Ok(self.clone())
    }
}

impl IntoData for &serde_json::Value {
    fn into_data(self) -> Result<Data, Error> {
        Data::from_value(self).map_err(|e| Error::InvalidInput(format!("data: {e}")))
    }
}

impl IntoData for serde_json::Value {
    fn into_data(self) -> Result<Data, Error> {
        (&self).into_data()
    }
}

impl IntoData for &RawValue {
    fn into_data(self) -> Result<Data, Error> {
        Ok(Data::from_raw(self))
    }
}

impl IntoData for Box<RawValue> {
    fn into_data(self) -> Result<Data, Error> {
        Ok(Data::from_raw(&self))
    }
}

/// `meta` from a JSON value, which must be an object of at most 1 024 bytes
/// of compact JSON.
pub(crate) fn meta(value: &serde_json::Value) -> Result<Meta, Error> {
    match value {
        serde_json::Value::Object(map) => Ok(Meta::from_map(map)?),
        _ => Err(FieldError::MetaNotObject.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rooms_and_peers_are_validated() {
        assert_eq!("r-1".into_room().unwrap().as_str(), "r-1");
        assert!(matches!(
            "bad room".into_room(),
            Err(Error::Field(FieldError::Room))
        ));
        assert!(matches!(
            String::new().into_peer(),
            Err(Error::Field(FieldError::Peer))
        ));
        let room = RoomName::new("r").unwrap();
        assert_eq!((&room).into_room().unwrap(), room);
    }

    #[test]
    fn data_keeps_json_text() {
        assert_eq!(
            json!({"a": [1, null]}).into_data().unwrap().as_str(),
            r#"{"a":[1,null]}"#
        );
        assert_eq!(
            serde_json::Value::Null.into_data().unwrap().as_str(),
            "null"
        );
        let raw = RawValue::from_string("[1, 2]".into()).unwrap();
        assert_eq!(raw.into_data().unwrap().as_str(), "[1, 2]");
    }

    #[test]
    fn meta_must_be_a_small_object() {
        assert_eq!(
            meta(&json!({"name": "a"})).unwrap().as_str(),
            r#"{"name":"a"}"#
        );
        assert!(matches!(
            meta(&json!([1])),
            Err(Error::Field(FieldError::MetaNotObject))
        ));
        assert!(matches!(
            meta(&json!({"k": "x".repeat(2000)})),
            Err(Error::Field(FieldError::MetaTooLarge))
        ));
    }
}
