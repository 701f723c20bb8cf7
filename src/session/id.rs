//! [`SessionId`]: a session's id, stored inline when it is short.
//!
//! Most ids are the pool's own 32-character simple UUIDs. Keeping them inside the session record,
//! not behind a pointer, means reading an id (to answer an acquire, or to check that a recent-slot
//! hint names the right session) touches no memory but the record's own: in a pool of a million
//! sessions that is one DRAM line less per call.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use arrayvec::ArrayString;

/// The longest id kept inline: a simple UUID.
const INLINE: usize = 32;

/// A session id. It behaves as the `str` it holds: it hashes, compares and orders as that string,
/// so maps keyed by it can be searched with a `&str`.
#[derive(Clone)]
pub struct SessionId(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<INLINE>),
    Shared(Arc<str>),
}

impl SessionId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(id) => id.as_str(),
            Repr::Shared(id) => id,
        }
    }
}

impl Default for SessionId {
    /// The empty id, which no session has (ids are validated non-empty).
    fn default() -> Self {
        Self(Repr::Inline(ArrayString::new()))
    }
}

impl From<&str> for SessionId {
    fn from(id: &str) -> Self {
        match ArrayString::from(id) {
            Ok(inline) => Self(Repr::Inline(inline)),
            Err(_) => Self(Repr::Shared(Arc::from(id))),
        }
    }
}

impl From<String> for SessionId {
    fn from(id: String) -> Self {
        if id.len() <= INLINE {
            Self::from(id.as_str())
        } else {
            Self(Repr::Shared(Arc::from(id)))
        }
    }
}

impl Deref for SessionId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SessionId {}

impl PartialEq<str> for SessionId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Hash for SessionId {
    /// As the `str`, which `Borrow<str>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for SessionId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SessionId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::hash::BuildHasher;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_simple_uuid_is_inline_and_a_longer_id_is_shared() {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        assert!(matches!(SessionId::from(uuid.as_str()).0, Repr::Inline(_)));
        assert!(matches!(SessionId::from(uuid.clone()).0, Repr::Inline(_)));
        let long = format!("{uuid}-x");
        assert!(matches!(SessionId::from(long.as_str()).0, Repr::Shared(_)));
        assert!(matches!(SessionId::from(long.clone()).0, Repr::Shared(_)));
        assert_eq!(SessionId::from(long.as_str()).as_str(), long);
    }

    #[test]
    fn the_record_keeps_an_inline_id_in_forty_bytes() {
        assert_eq!(std::mem::size_of::<SessionId>(), 40);
    }

    proptest! {
        /// Whatever its representation, an id is its string: equal, ordered, hashed and looked up
        /// as that string.
        #[test]
        fn an_id_behaves_as_its_string(a in "[a-z0-9_-]{1,40}", b in "[a-z0-9_-]{1,40}") {
            let (ia, ib) = (SessionId::from(a.as_str()), SessionId::from(b.clone()));
            prop_assert_eq!(ia.as_str(), a.as_str());
            prop_assert_eq!(&*ib, b.as_str());
            prop_assert_eq!(ia == ib, a == b);
            prop_assert_eq!(ia.cmp(&ib), a.cmp(&b));
            let hasher = std::collections::hash_map::RandomState::new();
            prop_assert_eq!(hasher.hash_one(&ia), hasher.hash_one(a.as_str()));
            let map: HashMap<SessionId, u8> = [(ia.clone(), 1)].into();
            prop_assert_eq!(map.get(a.as_str()), Some(&1));
            let set: BTreeSet<SessionId> = [ia, ib].into();
            prop_assert!(set.contains(a.as_str()) && set.contains(b.as_str()));
            prop_assert_eq!(format!("{:?}", SessionId::from(a.as_str())), format!("{a:?}"));
        }
    }
}
