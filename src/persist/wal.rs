//! The write-ahead log a crash left behind: what was cut short in it, for a warning.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The write-ahead log beside the state file `state`.
pub(super) fn wal_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Looks at the write-ahead log a crash left behind, before SQLite opens it: frames written after
/// the last complete commit (a write cut short) are dropped silently by SQLite's recovery, so this
/// says what they were. Follows SQLite's documented WAL format: a 32-byte header, then frames of a
/// 24-byte header and one page, each carrying a running checksum and the header's salts.
pub(super) fn unfinished_wal_tail(wal: &Path) -> anyhow::Result<Option<String>> {
    let mut bytes = Vec::new();
    match File::open(wal) {
        Ok(mut file) => file.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", wal.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", wal.display())),
    };
    if bytes.len() < 32 {
        return Ok((!bytes.is_empty())
            .then(|| format!("{}: a log of {} bytes, shorter than its header", wal.display(), bytes.len())));
    }
    let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let big_endian = match word(0) {
        0x377f_0682 => false,
        0x377f_0683 => true,
        _ => return Ok(Some(format!("{}: the log's header is not valid; the log is ignored", wal.display()))),
    };
    let page_size = word(8) as usize;
    let salts = (word(16), word(20));
    let mut sums = wal_checksum(big_endian, (0, 0), &bytes[..24]);
    if sums != (word(24), word(28)) {
        return Ok(Some(format!("{}: the log's header fails its checksum; the log is ignored", wal.display())));
    }
    let frame = 24 + page_size;
    let (mut at, mut frames_after_commit) = (32, 0usize);
    let mut torn = false;
    while at + frame <= bytes.len() {
        if (word(at + 8), word(at + 12)) != salts {
            break;
        }
        sums = wal_checksum(big_endian, sums, &bytes[at..at + 8]);
        sums = wal_checksum(big_endian, sums, &bytes[at + 24..at + frame]);
        if sums != (word(at + 16), word(at + 20)) {
            torn = true;
            break;
        }
        frames_after_commit = if word(at + 4) != 0 { 0 } else { frames_after_commit + 1 };
        at += frame;
    }
    let partial_frame = !torn && at < bytes.len() && bytes.len() - at < frame;
    if frames_after_commit == 0 && !torn && !partial_frame {
        return Ok(None);
    }
    let pages = frames_after_commit + usize::from(torn || partial_frame);
    Ok(Some(format!(
        "{}: the last write before the process stopped did not complete ({pages} page(s) of it reached the disk{}); it is rolled back",
        wal.display(),
        if torn || partial_frame { ", the last one torn" } else { "" }
    )))
}

/// SQLite's WAL checksum: over pairs of 32-bit words, in the byte order the log's magic names.
fn wal_checksum(big_endian: bool, (mut s0, mut s1): (u32, u32), data: &[u8]) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let read = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s0 = s0.wrapping_add(read(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(read(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}
