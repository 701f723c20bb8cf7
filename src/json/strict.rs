//! JSON parsing stricter than serde's defaults: duplicate keys anywhere in the document are an error
//! (serde_json keeps the last one silently inside maps), and so is nesting deeper than
//! [`MAX_DEPTH`] levels (openapi.yaml). serde_json's own recursion limit stops one level short of that,
//! so it is replaced by an exact check made in the same pass as the duplicate check; the typed
//! parse then runs only on documents known to be at most [`MAX_DEPTH`] deep.
//!
//! Inside a document: [`Obj`] insists on an object where a struct is expected, [`Split`] reads one
//! object as two structs (fields several inputs share at their top level), [`Lenient`] ignores the
//! keys a struct does not list (documents other systems write). Each names the offending field.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting accepted: the top-level object or array is level 1.
pub const MAX_DEPTH: usize = 128;

/// Parses `bytes` into `T` after checking the whole document for duplicate keys and depth.
///
/// # Errors
/// A message for the client: serde's, with the path of the offending field in front of it
/// (`session.max_usage_count: invalid type: ...`) when the document is well-formed JSON.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    checker.disable_recursion_limit();
    Checked { depth: 0 }.deserialize(&mut checker).map_err(describe)?;
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    parser.disable_recursion_limit();
    match T::deserialize(&mut parser).and_then(|value| parser.end().map(|()| value)) {
        Ok(value) => Ok(value),
        Err(e) => Err(locate::<T>(bytes).unwrap_or_else(|| describe(e))),
    }
}

fn describe(e: serde_json::Error) -> String {
    format!("invalid JSON body: {e}")
}

/// Parses the refused document again, tracking where the parse is, for a message that names the
/// field. Only refused requests pay for the tracking; `None` when it finds no field to name.
fn locate<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    parser.disable_recursion_limit();
    let e = serde_path_to_error::deserialize::<_, T>(&mut parser).err()?;
    field_of(&e).map(|path| format!("invalid JSON body: {path}: {}", e.inner()))
}

/// The path of the field a tracked error is about (`session.max_usage_count`, `cookies[1].value`),
/// or `None` for the document itself (which the tracker writes as `.`).
pub(crate) fn field_of<E>(e: &serde_path_to_error::Error<E>) -> Option<String> {
    let path = e.path().to_string();
    (path != ".").then_some(path)
}

/// A struct that must arrive as a JSON object: serde's derive also reads a struct from a list of its
/// field values (`[30]` as `{"lease_secs": 30}`), which this API must refuse as a wrong type.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_object(Map::deserialize(d)?).map(Obj)
    }
}

/// A struct whose field names are listed, so that its fields can be told apart from others in one
/// JSON object ([`Split`], [`split_off`]).
pub trait Fields {
    /// The names of the struct's fields as JSON spells them.
    const FIELDS: &'static [&'static str];
}

/// One JSON object read as two structs: the keys `B` lists ([`Fields`]) go to `B`, the others to
/// `A`. For a group of fields several inputs carry at their top level (session settings); serde's
/// `flatten` would lose the field in its errors and cannot refuse unknown fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<A, B>(pub A, pub B);

impl<'de, A: DeserializeOwned, B: DeserializeOwned + Fields> Deserialize<'de> for Split<A, B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut rest = Map::deserialize(d)?;
        let own = split_off::<B>(&mut rest);
        Ok(Split(from_object(rest)?, from_object(own)?))
    }
}

/// A struct read from a JSON object whose keys it does not list are ignored: for documents other
/// systems write, where `T` itself (an API input) refuses unknown fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub T);

impl<'de, T: DeserializeOwned + Fields> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_object(split_off::<T>(&mut Map::deserialize(d)?)).map(Lenient)
    }
}

/// The fields serde knows of `T`, read from its unknown-field message: tests compare them with
/// [`Fields::FIELDS`], so the list cannot drift from the struct.
#[cfg(test)]
pub(crate) fn serde_fields<T: DeserializeOwned>() -> Vec<String> {
    let message = serde_json::from_str::<T>(r#"{"\u0000": 0}"#).err().map(|e| e.to_string()).unwrap_or_default();
    message.split('`').skip(3).step_by(2).map(str::to_owned).collect()
}

/// Moves the keys `B` lists out of `object` into an object of their own.
pub fn split_off<B: Fields>(object: &mut Map<String, Value>) -> Map<String, Value> {
    B::FIELDS.iter().filter_map(|name| object.remove_entry(*name)).collect()
}

/// `T` from a JSON object, the error naming the field inside it.
fn from_object<T: DeserializeOwned, E: de::Error>(object: Map<String, Value>) -> Result<T, E> {
    let value = Value::Object(object);
    T::deserialize(&value).map_err(|plain| {
        // Again through the path tracker, so the message names the field inside this object.
        let tracked = serde_path_to_error::deserialize::<_, T>(&value).err();
        match tracked.as_ref().and_then(|e| Some((field_of(e)?, e.inner()))) {
            Some((path, inner)) => de::Error::custom(format_args!("{path}: {inner}")),
            None => de::Error::custom(plain),
        }
    })
}

/// Accepts any JSON value whose maps have distinct keys and whose nesting stays within the limit.
struct Checked {
    depth: usize,
}

impl Checked {
    fn enter<E: de::Error>(&self) -> Result<Checked, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(format_args!("JSON nested deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(Checked { depth: self.depth + 1 })
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(Checked { depth: inner.depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value_seed(Checked { depth: inner.depth })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(from_slice::<Value>(br#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate key \"a\""));
        assert!(from_slice::<Value>(br#"{"u":{"x":{"b":1,"b":1}}}"#).is_err());
        assert!(from_slice::<Value>(br#"[{"a":1},{"a":1}]"#).is_ok());
    }

    #[test]
    fn nesting_of_exactly_128_levels_is_accepted_and_deeper_is_not() {
        assert!(from_slice::<Value>(nested(128).as_bytes()).is_ok());
        assert!(from_slice::<Value>(nested(129).as_bytes()).unwrap_err().contains("deeper than 128"));
        assert!(from_slice::<Value>(nested(100_000).as_bytes()).is_err(), "no stack overflow");
    }

    #[test]
    fn a_struct_must_be_an_object() {
        #[derive(Debug, serde::Deserialize)]
        struct S {
            #[allow(dead_code)]
            a: Option<u32>,
        }
        assert!(from_slice::<Obj<S>>(b"[1]").is_err());
        assert!(from_slice::<Obj<S>>(br#"{"a": 1}"#).is_ok());
    }

    #[test]
    fn a_refusal_names_the_path_of_the_offending_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            n: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[allow(dead_code)]
            list: Vec<u32>,
            #[allow(dead_code)]
            inner: Option<Obj<Inner>>,
        }
        let detail = |raw: &str| from_slice::<Outer>(raw.as_bytes()).unwrap_err();
        assert!(detail(r#"{"list": [1, "2"]}"#).starts_with("invalid JSON body: list[1]: invalid type: string"));
        assert!(detail(r#"{"list": [], "inner": {"n": -1}}"#).starts_with("invalid JSON body: inner: n: invalid value"));
        // Nothing to name: serde's own message, with its position.
        assert_eq!(detail("{"), "invalid JSON body: EOF while parsing an object at line 1 column 1");
        assert!(detail("{}").contains("missing field `list`"));
    }

    #[test]
    fn a_split_object_gives_each_struct_its_keys_and_names_the_bad_field() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rest {
            id: Option<String>,
        }
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Group {
            n: Option<u32>,
        }
        impl Fields for Group {
            const FIELDS: &'static [&'static str] = &["n"];
        }
        let parse = |raw: &str| from_slice::<Split<Rest, Group>>(raw.as_bytes());
        let both = parse(r#"{"id": "a", "n": 2}"#).unwrap();
        assert_eq!(both, Split(Rest { id: Some("a".into()) }, Group { n: Some(2) }));
        assert!(parse(r#"{"n": "2"}"#).unwrap_err().starts_with("invalid JSON body: n: invalid type: string"));
        assert!(parse(r#"{"id": "a", "m": 1}"#).unwrap_err().contains("unknown field `m`"));
        assert!(parse("[1]").is_err());
        let lenient = from_slice::<Lenient<Group>>(br#"{"n": 1, "other": true}"#).unwrap();
        assert_eq!(lenient, Lenient(Group { n: Some(1) }));
        assert_eq!(serde_fields::<Group>(), Group::FIELDS);
        let Value::Object(mut object) = serde_json::json!({"id": "a", "n": 1, "other": true}) else { unreachable!() };
        assert_eq!(Value::Object(split_off::<Group>(&mut object)), serde_json::json!({"n": 1}));
        assert_eq!(Value::Object(object), serde_json::json!({"id": "a", "other": true}));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(from_slice::<Value>(b"{} x").is_err());
    }
}
