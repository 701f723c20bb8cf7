//! JSON written by hand for the answers every hot call sends (a session): the same bytes serde_json
//! writes, without its per-field machinery. Anything that is not a plain string, number or literal
//! is still handed to serde_json.

use serde::Serialize;

use crate::error::{ApiError, Result};

/// `,"name":` as one constant, for this crate's own ASCII field names (which JSON never escapes).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}
pub(crate) use key;

/// A JSON string: copied as is when nothing in it needs escaping (ids and names never do), else
/// escaped by serde_json.
pub fn string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// A number as serde_json writes it (`3000.0`, `0.5`; `null` for what JSON cannot hold).
pub fn write_f64(out: &mut Vec<u8>, number: f64) {
    // Writing a number into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

/// Anything else, through serde_json.
///
/// # Errors
/// `Internal` if serialization fails (it cannot for the types passed here).
pub fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(|e| ApiError::Internal(e.into()))
}
