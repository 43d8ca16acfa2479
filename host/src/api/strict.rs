//! Strict JSON for request bodies: a key given twice in one object is an error, at any depth.
//!
//! serde_json keeps the last of duplicate keys silently, so `{"count": 1, "count": 9}` or two
//! node groups of one name would be read as something the client may not have meant. Struct
//! fields are already checked by serde; these helpers cover the free-form maps (attributes,
//! node groups).
//!
//! And a record must be a JSON object: serde's derived structs also accept an array of their
//! fields in order (`["c1", "m1"]` for a deprovision request), which no client means and the
//! API's document does not allow. [`Object`] and [`object`] accept objects only.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value read with duplicate keys refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// `attributes`: absent, `null`, or an object without duplicate keys at any depth.
pub fn attributes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Strict>::deserialize(deserializer)? {
        None | Some(Strict(Value::Null)) => Ok(None),
        Some(Strict(Value::Object(object))) => Ok(Some(object)),
        Some(Strict(other)) => Err(de::Error::invalid_type(
            unexpected(&other),
            &"a JSON object",
        )),
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
        Value::Null => de::Unexpected::Unit,
    }
}

/// A record `T` that must be written as a JSON object (not as an array of its fields).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Object)
    }
}

/// A record field that must be a JSON object (see [`Object`]).
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Object::deserialize(deserializer).map(|Object(value)| value)
}

/// A map of records whose keys are unique (node groups by ID), each a JSON object.
pub fn unique_records<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let records: BTreeMap<String, Object<T>> = unique_keys(deserializer)?;
    Ok(records
        .into_iter()
        .map(|(key, Object(value))| (key, value))
        .collect())
}

/// A map whose keys are unique.
pub fn unique_keys<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Unique<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Unique<T> {
        type Value = BTreeMap<String, T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(Unique(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "attributes")]
        attributes: Option<Map<String, Value>>,
        #[serde(default, deserialize_with = "unique_keys")]
        groups: BTreeMap<String, u32>,
    }

    fn parse(text: &str) -> Result<Body, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = parse(r#"{"attributes": {"a": 1, "a": 2}}"#).unwrap_err();
        assert!(err.contains("duplicate key `a`"), "{err}");
        let err = parse(r#"{"attributes": {"x": [{"b": {"c": 1, "c": 1}}]}}"#).unwrap_err();
        assert!(err.contains("duplicate key `c`"), "{err}");
        let err = parse(r#"{"groups": {"data": 1, "data": 2}}"#).unwrap_err();
        assert!(err.contains("duplicate key `data`"), "{err}");
        let body = parse(r#"{"groups": {"data": 1, "arbiter": 2}}"#).unwrap();
        assert_eq!(body.groups.len(), 2);
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Record {
        a: u32,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Outer {
        #[serde(deserialize_with = "object")]
        inner: Record,
    }

    #[test]
    fn records_are_objects_not_arrays_of_their_fields() {
        let read = |text: &str| serde_json::from_str::<Object<Outer>>(text).map(|o| o.0);
        assert_eq!(
            read(r#"{"inner": {"a": 2}}"#).unwrap(),
            Outer {
                inner: Record { a: 2 }
            }
        );
        // serde's derived decoder alone reads a record from an array of its fields.
        assert!(serde_json::from_str::<Record>("[2]").is_ok());
        let err = read(r#"[{"a": 2}]"#).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
        let err = read(r#"{"inner": [2]}"#).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
        #[derive(serde::Deserialize, Debug)]
        struct Groups {
            #[serde(deserialize_with = "unique_records")]
            #[allow(dead_code)]
            groups: BTreeMap<String, Record>,
        }
        let groups = |text: &str| serde_json::from_str::<Groups>(text).map_err(|e| e.to_string());
        assert!(groups(r#"{"groups": {"data": {"a": 1}}}"#).is_ok());
        let err = groups(r#"{"groups": {"data": [1]}}"#).unwrap_err();
        assert!(err.contains("expected a JSON object"), "{err}");
        let err = groups(r#"{"groups": {"data": {"a": 1}, "data": {"a": 2}}}"#).unwrap_err();
        assert!(err.contains("duplicate key `data`"), "{err}");
    }

    #[test]
    fn attributes_may_be_absent_null_or_an_object() {
        assert!(parse("{}").unwrap().attributes.is_none());
        assert!(
            parse(r#"{"attributes": null}"#)
                .unwrap()
                .attributes
                .is_none()
        );
        let body = parse(r#"{"attributes": {"a": [1, 2.5, "x", true, null, {}]}}"#).unwrap();
        assert_eq!(
            Value::Object(body.attributes.unwrap()),
            serde_json::json!({"a": [1, 2.5, "x", true, null, {}]})
        );
        let err = parse(r#"{"attributes": [1]}"#).unwrap_err();
        assert!(err.contains("expected a JSON object"), "{err}");
    }
}
