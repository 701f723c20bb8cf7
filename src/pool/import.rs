//! Importing sessions into a pool: all of them or none.

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
        return Err(PoolError::LimitReached(format!(
            "importing {wanted} sessions would pass --max-sessions ({left} more allowed); nothing was imported"
        )));
    }
    Ok(())
}

impl Pool {
    /// Puts in every session whose id the pool does not hold yet, with its settings resolved over
    /// the pool's; the others are skipped. All or nothing: should one not go in (settings out of
    /// range, or another pool took the last places of `--max-sessions` since the check), the ones
    /// already in are taken out again, so the import changes nothing.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] when they would not all fit; [`PoolError::Invalid`] for settings
    /// out of range.
    pub fn import<T: Incoming>(&mut self, sessions: Vec<T>, now: Timestamp) -> Result<Imported<T>, PoolError> {
        self.tick(now);
        let (fresh, skipped): (Vec<T>, Vec<T>) = sessions.into_iter().partition(|s| !self.contains(s.id()));
        check_room(fresh.len(), self.budget.left())?;
        let base = Arc::clone(&self.config().session);
        let mut shared = SharedSettings::new(Arc::clone(&base));
        let mut adopted = Vec::with_capacity(fresh.len());
        for incoming in fresh {
            let outcome = incoming.settings(&base).map_err(PoolError::from).and_then(|settings| {
                let session = incoming.into_session(shared.get(settings), now);
                let id = session.id.clone();
                self.adopt(session, true, now).map(|()| id)
            });
            match outcome {
                Ok(id) => adopted.push(id),
                Err(e) => {
                    for id in &adopted {
                        let _ = self.delete(id, now);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Imported { imported: adopted.len(), skipped })
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
