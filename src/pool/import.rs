//! Importing sessions into a pool: all of them or none.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Pool, PoolError};
use crate::session::{self, Session, SessionSettings, Timestamp};

/// A session brought in from a document, made into a [`Session`] only once the pool it lands in is
/// locked: the settings it does not give come from that pool's.
pub trait Incoming {
    /// Its id.
    fn id(&self) -> &str;
    /// Its settings over `base`, the pool's.
    ///
    /// # Errors
    /// [`session::Error::InvalidSetting`] when the result is out of range.
    fn settings(&self, base: &SessionSettings) -> Result<SessionSettings, session::Error>;
    /// The session with `settings`, as of `now`.
    fn into_session(self, settings: Arc<SessionSettings>, now: Timestamp) -> Session;
}

/// What an import did.
#[derive(Debug)]
pub struct Imported<T> {
    /// How many sessions went in.
    pub imported: usize,
    /// The sessions left out because the pool already held their id, in the order given.
    pub skipped: Vec<T>,
}

/// `--max-sessions` would be passed by importing `wanted` sessions with `left` places left.
pub(super) fn check_room(wanted: usize, left: usize) -> Result<(), PoolError> {
    if wanted > left {
        return Err(no_room(wanted, left));
    }
    Ok(())
}

fn no_room(wanted: usize, left: usize) -> PoolError {
    PoolError::LimitReached(format!(
        "importing {wanted} sessions would pass --max-sessions ({left} more allowed); nothing was imported"
    ))
}

impl Pool {
    /// Puts in every session whose id the pool does not hold yet, with its settings resolved over
    /// the pool's; the others are skipped. All or nothing: every session's settings are checked and
    /// every place under `--max-sessions` reserved before the first one goes in, so a refused import
    /// changes nothing and leaves nothing to undo.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id given twice; [`PoolError::LimitReached`] when they
    /// would not all fit; [`PoolError::Invalid`] for settings out of range.
    pub fn import<T: Incoming>(&mut self, sessions: Vec<T>, now: Timestamp) -> Result<Imported<T>, PoolError> {
        self.tick(now);
        let mut seen = HashSet::with_capacity(sessions.len());
        if let Some(twice) = sessions.iter().find(|s| !seen.insert(s.id())) {
            return Err(PoolError::SessionExists(twice.id().to_owned()));
        }
        drop(seen);
        let (fresh, skipped): (Vec<T>, Vec<T>) = sessions.into_iter().partition(|s| !self.contains(s.id()));
        let base = Arc::clone(&self.config().session);
        let mut shared = SharedSettings::new(Arc::clone(&base));
        let settings = fresh
            .iter()
            .map(|incoming| Ok(shared.get(incoming.settings(&base)?)))
            .collect::<Result<Vec<_>, session::Error>>()?;
        if !self.budget.try_reserve_all(fresh.len()) {
            return Err(no_room(fresh.len(), self.budget.left()));
        }
        let imported = fresh.len();
        for (incoming, settings) in fresh.into_iter().zip(settings) {
            self.place(incoming.into_session(settings, now), now);
        }
        Ok(Imported { imported, skipped })
    }
}

/// Hands out one `Arc` per distinct settings seen recently, so a million imported sessions with the
/// pool's (or each other's) settings share them instead of holding a million copies.
struct SharedSettings {
    recent: Vec<Arc<SessionSettings>>,
}

impl SharedSettings {
    const KEEP: usize = 8;

    fn new(pool: Arc<SessionSettings>) -> Self {
        Self { recent: vec![pool] }
    }

    fn get(&mut self, settings: SessionSettings) -> Arc<SessionSettings> {
        if let Some(known) = self.recent.iter().find(|known| ***known == settings) {
            return Arc::clone(known);
        }
        let new = Arc::new(settings);
        if self.recent.len() >= Self::KEEP {
            self.recent.remove(1);
        }
        self.recent.push(Arc::clone(&new));
        new
    }
}
