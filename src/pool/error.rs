//! The errors of pool and registry operations.

use crate::session;

/// Errors of pool operations; the API layer maps each to its problem code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PoolError {
    /// No pool of that name.
    #[error("pool {0:?} does not exist")]
    PoolNotFound(String),
    /// No session of that id in the pool.
    #[error("session {0:?} does not exist")]
    SessionNotFound(String),
    /// Create with an id the pool already holds.
    #[error("session {0:?} already exists")]
    SessionExists(String),
    /// Release with a lease id that is not the session's current lease.
    #[error("lease {0:?} is not the session's current lease")]
    LeaseMismatch(String),
    /// Every usable session is leased and the pool cannot grow.
    #[error("no session is available")]
    NoSessionAvailable,
    /// `--max-pools` or `--max-sessions` reached.
    #[error("{0}")]
    LimitReached(String),
    /// Input the domain rejects.
    #[error(transparent)]
    Invalid(#[from] session::Error),
    /// The store cannot be reached (Redis down or not connected yet): worth a retry.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// What the store holds or answered does not read: a server-side fault, never the client's.
    #[error("the store holds damaged data: {0}")]
    Damaged(String),
    /// A compare-and-set lost to another call: the store retries it, a client never sees it.
    #[error("another call changed the state first")]
    Conflict,
}

impl PoolError {
    /// `--max-sessions` reached, for a call that needed one more session.
    pub(super) fn no_session_left(max: usize) -> Self {
        Self::LimitReached(format!("the server holds its maximum of {max} sessions (--max-sessions)"))
    }
}
