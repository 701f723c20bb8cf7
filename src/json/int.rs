//! Integers as JSON Schema (and so OpenAPI 3.1) sees them: `403` and `403.0` are the same integer,
//! `1.5` is not an integer, and `1e23` is an integer out of range for every field here. serde alone
//! refuses `403.0` for a `u16`; the `deserialize_with` helpers below accept it and refuse the rest.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// An integer field that also accepts a whole JSON float within its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<T>(pub T);

impl<'de, T: TryFrom<i128>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor<T>(PhantomData<T>);

        impl<T: TryFrom<i128>> IntVisitor<T> {
            fn fit<E: de::Error>(&self, value: i128, shown: Unexpected<'_>) -> Result<Int<T>, E> {
                T::try_from(value).map(Int).map_err(|_| E::invalid_value(shown, &"an integer in the field's range"))
            }
        }

        impl<T: TryFrom<i128>> Visitor<'_> for IntVisitor<T> {
            type Value = Int<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                self.fit(i128::from(v), Unexpected::Unsigned(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                self.fit(i128::from(v), Unexpected::Signed(v))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int<T>, E> {
                // 2^100 is beyond every field here, so the cast below never saturates into range.
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 2f64.powi(100) {
                    self.fit(v as i128, Unexpected::Float(v))
                } else {
                    Err(E::invalid_type(Unexpected::Float(v), &self))
                }
            }
        }

        d.deserialize_any(IntVisitor(PhantomData))
    }
}

/// For an `Option<T>` integer field (use with `#[serde(default, deserialize_with = ...)]`).
///
/// # Errors
/// Not an integer, or out of `T`'s range.
pub fn opt<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Int<T>>::deserialize(d).map(|v| v.map(|Int(v)| v))
}

/// For a `T` integer field.
///
/// # Errors
/// Not an integer, or out of `T`'s range.
pub fn one<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    Int::<T>::deserialize(d).map(|Int(v)| v)
}

/// For a `Vec<T>` of integers.
///
/// # Errors
/// Not a list of integers in `T`'s range.
pub fn list<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Int<T>>::deserialize(d).map(|v| v.into_iter().map(|Int(v)| v).collect())
}

/// For an `Option<Vec<T>>` of integers.
///
/// # Errors
/// Not a list of integers in `T`'s range.
pub fn opt_list<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Int<T>>>::deserialize(d).map(|v| v.map(|v| v.into_iter().map(|Int(v)| v).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_floats_are_integers_and_the_rest_is_refused() {
        assert_eq!(serde_json::from_value::<Int<u16>>(json!(403.0)).unwrap(), Int(403));
        assert_eq!(serde_json::from_value::<Int<u16>>(json!(403)).unwrap(), Int(403));
        assert_eq!(serde_json::from_value::<Int<i64>>(json!(-5.0)).unwrap(), Int(-5));
        for bad in [json!(1.5), json!(1e23), json!(-1), json!(70000), json!("7"), json!(null)] {
            assert!(serde_json::from_value::<Int<u16>>(bad.clone()).is_err(), "{bad} was accepted");
        }
        assert!(serde_json::from_value::<Int<u32>>(json!(1e23)).is_err());
    }
}
