//! The JSON rules every input of the service shares, whether it comes in a request body or an
//! import document: strict parsing (no duplicate keys, bounded depth, objects where a struct is
//! expected, errors that name the field) and integers as JSON Schema counts them.
//!
//! Plain serde and serde_json, no HTTP, so the domain conversions (`interop`) and the API layer use
//! the same rules without the domain importing from `api`.

pub mod int;
pub mod strict;
