//! JSON parsing stricter than serde's defaults: duplicate keys anywhere in the document are an error
//! (serde_json keeps the last one silently inside maps), and so is nesting past 128 levels
//! (serde_json's own recursion limit).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses `bytes` into `T` after checking the whole document for duplicate keys.
///
/// # Errors
/// A message for the client: serde's, which names the field and position.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates::deserialize_from(&mut checker).map_err(describe)?;
    serde_json::from_slice(bytes).map_err(describe)
}

fn describe(e: serde_json::Error) -> String {
    if e.to_string().starts_with("recursion limit exceeded") {
        format!("JSON nested deeper than 128 levels ({e})")
    } else {
        format!("invalid JSON body: {e}")
    }
}

struct NoDuplicates;

impl NoDuplicates {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

impl<'de> de::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::deserialize_from(d).map(|()| NoDuplicates)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
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
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(from_slice::<Value>(br#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate key \"a\""));
        assert!(from_slice::<Value>(br#"{"u":{"x":{"b":1,"b":1}}}"#).is_err());
        assert!(from_slice::<Value>(br#"[{"a":1},{"a":1}]"#).is_ok());
    }

    #[test]
    fn nesting_is_limited_to_128_levels() {
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(from_slice::<Value>(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(from_slice::<Value>(deep.as_bytes()).unwrap_err().contains("128"));
    }
}
