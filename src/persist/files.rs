//! The data directory: its lock, its format file, and the connections to its state file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

/// The version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_NAME: &str = "session-pool-state";
/// The database file inside the data directory.
pub const STATE_FILE: &str = "state.sqlite";
/// The format file inside the data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The state file of format 1 (redb), which this build does not read.
pub(super) const FORMAT_1_STATE_FILE: &str = "state.redb";

#[derive(Debug, Serialize, Deserialize)]
struct FormatRecord {
    format: String,
    version: u32,
}

/// Makes `dir` if needed, and takes its lock.
pub(super) fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    if dir.exists() && !dir.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    lock_dir_existing(dir)
}

/// Takes the lock of `dir`, which must exist already (`check` never makes one).
pub(super) fn lock_dir_existing(dir: &Path) -> anyhow::Result<File> {
    if !dir.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another session-pool process (it holds the lock on {})",
            dir.display(),
            lock_path.display()
        ),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", lock_path.display())),
    }
}

/// Refuses a state whose format file is missing or names a format this build does not read.
pub(super) fn check_format(format_path: &Path, state_path: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(format_path).with_context(|| {
        format!(
            "cannot read the format file {} that must accompany the state file {}",
            format_path.display(),
            state_path.display()
        )
    })?;
    let record: FormatRecord = serde_json::from_str(&text)
        .with_context(|| format!("the format file {} is not valid", format_path.display()))?;
    if record.format != FORMAT_NAME || record.version != FORMAT_VERSION {
        bail!(
            "the state in {} has format {:?} version {}; this build reads {FORMAT_NAME:?} version {FORMAT_VERSION}",
            state_path.display(),
            record.format,
            record.version
        );
    }
    Ok(())
}

/// Writes the format file atomically: temporary file, fsync, rename, fsync of the directory.
pub(super) fn write_format(dir: &Path, format_path: &Path) -> anyhow::Result<()> {
    let record = FormatRecord { format: FORMAT_NAME.into(), version: FORMAT_VERSION };
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let context = || format!("cannot write the format file {}", format_path.display());
    let mut file = File::create(&tmp).with_context(context)?;
    file.write_all(&serde_json::to_vec(&record)?).with_context(context)?;
    file.sync_all().with_context(context)?;
    fs::rename(&tmp, format_path).with_context(context)?;
    File::open(dir).and_then(|d| d.sync_all()).with_context(context)?;
    Ok(())
}

/// Opens an existing state read-only, so that a state found damaged is left as it was. SQLite
/// reads a log left by a crash through a shared-memory index (`-shm`) it makes beside the file;
/// [`close_read_only`] removes it again.
pub(super) fn open_read_only(path: &Path, cache_kib: i64) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot read the state file {}", path.display()))?;
    configure(&conn, cache_kib).with_context(|| format!("cannot read the state file {}", path.display()))?;
    Ok(conn)
}

/// Closes a connection of [`open_read_only`] and removes the index it made, which the writer (in
/// exclusive mode) does not use.
pub(super) fn close_read_only(conn: Connection, path: &Path) {
    drop(conn);
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let _ = fs::remove_file(PathBuf::from(shm));
}

/// Opens the state for the writer (creating it if new): exclusive locking, WAL with full sync,
/// incremental vacuum.
pub(super) fn open_writable(path: &Path, cache_kib: i64) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the state file {}", path.display()))?;
    configure(&conn, cache_kib)
        // `auto_vacuum` only takes on a new file (before its first page), so it comes first.
        .and_then(|()| {
            conn.execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE; PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                 PRAGMA journal_size_limit = 67108864;",
            )
        })
        .with_context(|| format!("cannot open the state file {}", path.display()))?;
    Ok(conn)
}

/// Settings of every connection. The writer also takes `EXCLUSIVE` locking: the directory's lock
/// already keeps other processes out, so SQLite keeps its log index in memory, not in a file.
fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))
}
