//! `session-pool check`: verifies a state without changing it.

use std::path::Path;

use anyhow::{bail, Context};
use rusqlite::Connection;

use super::files::{check_format, close_read_only, lock_dir_existing, open_read_only};
use super::records::read_state;
use super::wal::{unfinished_wal_tail, wal_path};
use super::{FORMAT_FILE, STATE_FILE};

/// What [`check`] found in a sound state.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckStats {
    /// Pools stored.
    pub pools: usize,
    /// Sessions stored under a live pool.
    pub sessions: usize,
    /// Sessions of deleted pools not yet removed.
    pub orphans: usize,
}

/// Verifies the state in `dir` without changing it: SQLite's own integrity check of every page,
/// then every record's checksum and contents. For `session-pool check`.
///
/// # Errors
/// The directory is in use, or the state is damaged; the message names the file and what is wrong.
pub fn check(dir: &Path) -> anyhow::Result<CheckStats> {
    let _lock = lock_dir_existing(dir)?;
    let path = dir.join(STATE_FILE);
    anyhow::ensure!(path.exists(), "{} has no state file {STATE_FILE}", dir.display());
    check_format(&dir.join(FORMAT_FILE), &path)?;
    if let Some(tail) = unfinished_wal_tail(&wal_path(&path))? {
        println!("note: {tail}; a server started on it keeps the last complete commit");
    }
    let conn = open_read_only(&path, 16 * 1024)?;
    let checked = check_state(&conn, &path);
    close_read_only(conn, &path);
    checked
}

fn check_state(conn: &Connection, path: &Path) -> anyhow::Result<CheckStats> {
    let file = path.display();
    let mut problems = Vec::new();
    {
        let mut statement = conn.prepare("PRAGMA integrity_check").with_context(|| format!("{file} cannot be read"))?;
        let mut rows = statement.query([]).with_context(|| format!("{file} cannot be read"))?;
        while let Some(row) = rows.next().with_context(|| format!("{file} cannot be read"))? {
            let line: String = row.get(0)?;
            if line != "ok" {
                problems.push(line);
            }
        }
    }
    if !problems.is_empty() {
        bail!("{file} is damaged: {}", problems.join("; "));
    }
    let (mut pools, mut sessions) = (0, 0);
    let dead = read_state(
        conn,
        path,
        |_, _, _| {
            pools += 1;
            Ok(())
        },
        |_, _, _, record| {
            record.retirement()?;
            sessions += 1;
            Ok(())
        },
    )?;
    let mut stats = CheckStats { pools, sessions, orphans: 0 };
    for key in dead {
        let count: i64 = conn.query_row("SELECT count(*) FROM sessions WHERE pool = ?1", [key], |row| row.get(0))?;
        stats.orphans += usize::try_from(count).unwrap_or(0);
    }
    Ok(stats)
}
