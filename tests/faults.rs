//! Faults an operator meets, injected against the real binary: a full disk, a large deletion, a
//! SIGKILL in the middle of a large write, a damaged state file, a write cut short by a crash.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, refuses_to_start, run, temp_dir, Server};
use serde_json::json;

const STATE: &str = "state.sqlite";

/// A tmpfs of `mib` MiB mounted on a new directory, unmounted when dropped. Needs root (CI runs as
/// root); elsewhere the test says loudly that it could not run, and fails in CI.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(name: &str, mib: u32) -> Option<SmallDisk> {
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs (it runs as root)");
            eprintln!("NOT RUN: mounting a tmpfs needs root; run this test as root to inject a full disk");
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// Fills the disk with a file until a write fails for lack of space.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.dir.join("filler")).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = filler.write_all(&block).and_then(|()| filler.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn create_sessions(server: &Server, pool: &str, range: std::ops::Range<u32>) {
    let padding = "x".repeat(2000);
    for i in range {
        server
            .post(&format!("/v1/pools/{pool}/sessions"), json!({"id": format!("s{i}"), "user_data": {"pad": padding}}))
            .await;
    }
}

async fn session_count(server: &Server, pool: &str) -> u64 {
    server.get(&format!("/v1/pools/{pool}")).await["session_count"].as_u64().expect("session_count")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_delays_persistence_and_loses_nothing_once_space_returns() {
    let Some(disk) = SmallDisk::mount("full-disk", 8) else { return };
    let data = disk.dir.join("data");
    let server = Server::start(&data, &["--persist-interval-secs", "0.2"]).await;
    create_sessions(&server, "p", 0..100).await;
    wait_until_written(&server, 100.0).await;

    disk.fill();
    create_sessions(&server, "p", 100..400).await;
    server.post("/v1/pools/p/sessions/s0/mark_bad", json!({})).await;
    eventually(Duration::from_secs(10), "a write fails for lack of space", || async {
        server.metric("session_pool_persist_errors_total").await > 0.0
    })
    .await;
    disk.free();
    let written = server.metric("session_pool_persist_sessions_written_total").await;
    eventually(Duration::from_secs(10), "the kept changes are written", || async {
        server.metric("session_pool_persist_sessions_written_total").await >= written + 300.0
    })
    .await;
    // Killed, not stopped: what survives was written by the cycles after space returned.
    server.kill9();

    let server = Server::start(&data, &[]).await;
    assert_eq!(session_count(&server, "p").await, 400, "acknowledged sessions were lost");
    assert_eq!(server.get("/v1/pools/p/sessions/s0").await["error_score"], 1.0);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_write_on_a_full_disk_is_retried_and_succeeds_once_space_returns() {
    let Some(disk) = SmallDisk::mount("full-disk-final", 8) else { return };
    let data = disk.dir.join("data");
    // The log lives off the small disk, or the line waited for could not be written.
    let log = temp_dir("full-disk-final").with_extension("log");
    let server = Server::on(&data).args(["--persist-interval-secs", "3600"]).log_to(log.clone()).start().await;
    disk.fill();
    create_sessions(&server, "p", 0..300).await;
    common::signal(server.pid(), "TERM");
    eventually(Duration::from_secs(20), "the final write fails and is retried", || async {
        server.log_text().contains("final write of the state failed; retrying")
    })
    .await;
    disk.free();
    let (status, stderr) = server.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "the retried final write should succeed: {status:?} {stderr}");

    let _ = std::fs::remove_file(&log);
    let server = Server::start(&data, &[]).await;
    assert_eq!(session_count(&server, "p").await, 300, "acknowledged sessions were lost");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_write_that_keeps_failing_exits_non_zero_saying_so() {
    let Some(disk) = SmallDisk::mount("full-disk-never", 8) else { return };
    let data = disk.dir.join("data");
    let server = Server::start(&data, &["--persist-interval-secs", "3600"]).await;
    disk.fill();
    create_sessions(&server, "p", 0..300).await;
    let started = Instant::now();
    let (status, stderr) = server.terminate_within(Duration::from_secs(40));
    assert!(!status.success(), "a lost final write must not exit 0");
    assert!(stderr.contains("final write"), "the message must say what failed: {stderr}");
    assert!(started.elapsed() >= Duration::from_secs(5), "it gave up without retrying");
}

/// Bytes the process has written through system calls so far (its whole I/O, logs included).
fn bytes_written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).expect("wchar")
}

fn state_size(dir: &Path) -> u64 {
    ["", "-wal"].iter().filter_map(|s| std::fs::metadata(dir.join(format!("{STATE}{s}"))).ok()).map(|m| m.len()).sum()
}

async fn fill_pool(server: &Server, pool: &str, size: u32) {
    server.put(&format!("/v1/pools/{pool}"), json!({"max_pool_size": size})).await;
    server.post(&format!("/v1/pools/{pool}/acquire"), json!({})).await;
    assert_eq!(session_count(server, pool).await, u64::from(size));
}

async fn wait_until_written(server: &Server, sessions: f64) {
    eventually(Duration::from_secs(120), "the pool is written", || async {
        server.metric("session_pool_persist_sessions_written_total").await >= sessions
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_large_pool_costs_io_in_proportion_once_and_the_file_shrinks() {
    let dir = temp_dir("big-delete");
    let server = Server::start(&dir, &["--persist-interval-secs", "0.2"]).await;
    fill_pool(&server, "big", 100_000).await;
    wait_until_written(&server, 100_000.0).await;
    server.post("/v1/pools/small/sessions", json!({"id": "keep"})).await;
    wait_until_written(&server, 100_001.0).await;
    let size_before = state_size(&dir);
    let written_before = bytes_written(server.pid());

    assert_eq!(server.call(reqwest::Method::DELETE, "/v1/pools/big", None).await.0, 204);
    eventually(Duration::from_secs(120), "the file gives the space back", || async {
        std::fs::metadata(dir.join(STATE)).map(|m| m.len()).unwrap_or(u64::MAX) < size_before / 4
    })
    .await;
    let written = bytes_written(server.pid()) - written_before;
    assert!(written <= 5 * size_before, "deleting {size_before} bytes of state wrote {written} bytes");
    assert!(server.terminate().success());
    let live = std::fs::metadata(dir.join(STATE)).expect("the state file").len();
    assert!(live < 2 * 1024 * 1024, "after the deletion the file still holds {live} bytes");

    let server = Server::start(&dir, &[]).await;
    assert_eq!(server.call(reqwest::Method::GET, "/v1/pools/big", None).await.0, 404);
    assert_eq!(session_count(&server, "small").await, 1);
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// When each mark was acknowledged, and the running count then.
type AckLog = Arc<std::sync::Mutex<Vec<(Instant, u64)>>>;

/// Marks one session of a small pool as fast as the server answers, recording when each mark was
/// acknowledged, until the server stops answering.
fn hammer(server: &Arc<Server>) -> (AckLog, tokio::task::JoinHandle<()>) {
    let log = AckLog::default();
    let (server, log2) = (Arc::clone(server), Arc::clone(&log));
    let task = tokio::spawn(async move {
        let url = format!("{}/v1/pools/small/sessions/hot/mark_good", server.base);
        let mut count = 0;
        while let Ok(r) = server.client.post(&url).json(&json!({})).send().await {
            if r.status() != 200 {
                break;
            }
            count += 1;
            log2.lock().unwrap().push((Instant::now(), count));
        }
    });
    (log, task)
}

/// How many marks had been acknowledged by `at`.
fn acknowledged_by(log: &std::sync::Mutex<Vec<(Instant, u64)>>, at: Instant) -> u64 {
    log.lock().unwrap().iter().filter(|(t, _)| *t <= at).map(|(_, n)| *n).max().unwrap_or(0)
}

/// The margin a kill may lose: the persist interval (0.2 s) plus one chunk's write time, taken
/// generously for an unoptimized build on a shared two-core machine (a chunk of 10k sessions takes
/// about 0.5 s there, twice that while other tests run; 60 ms in a release build).
const MAY_LOSE: Duration = Duration::from_millis(2000);

/// Starts a server, marks a session of a small pool without pause, does `big_work`, and kills the
/// server with SIGKILL `then` later, checking first that the large write is `still_busy`. After a
/// restart, every mark acknowledged [`MAY_LOSE`] before the kill must be there.
async fn kill_during(
    dir: &Path,
    big_work: impl AsyncFnOnce(&Server),
    then: Duration,
    still_busy: impl AsyncFnOnce(&Server) -> bool,
) -> Server {
    let server = Arc::new(Server::start(dir, &["--persist-interval-secs", "0.2"]).await);
    server.post("/v1/pools/small/sessions", json!({"id": "hot", "max_usage_count": 1_000_000})).await;
    let (log, hammering) = hammer(&server);
    big_work(&server).await;
    tokio::time::sleep(then).await;
    assert!(still_busy(&server).await, "the large write ended before the kill: make it larger");
    let killed_at = Instant::now();
    common::signal(server.pid(), "KILL");
    let _ = hammering.await;
    let must_have = acknowledged_by(&log, killed_at - MAY_LOSE);
    assert!(must_have > 0, "no mark was acknowledged during the large write");
    let Ok(server) = Arc::try_unwrap(server) else { panic!("the hammer is done with the server") };
    drop(server);
    let restarted = Server::start(dir, &[]).await;
    let usage = restarted.get("/v1/pools/small/sessions/hot").await["usage_count"].as_u64().expect("usage");
    assert!(usage >= must_have, "lost marks acknowledged long before the kill: {usage} < {must_have}");
    restarted
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_during_the_first_write_of_a_large_pool_loses_only_the_last_interval() {
    let dir = temp_dir("kill-first-write");
    let size = 400_000;
    let server = kill_during(
        &dir,
        async |server| fill_pool(server, "big", size).await,
        Duration::from_millis(3500),
        async |server| server.metric("session_pool_persist_sessions_written_total").await < f64::from(size),
    )
    .await;
    // What was written of the large pool is a consistent part of it; the rest went with the process.
    assert!(session_count(&server, "big").await <= u64::from(size));
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_during_a_large_deletion_loses_only_the_last_interval_and_the_pool_stays_deleted() {
    let dir = temp_dir("kill-delete");
    let size = 300_000;
    let server = kill_during(
        &dir,
        async |server| {
            fill_pool(server, "big", size).await;
            wait_until_written(server, f64::from(size)).await;
            assert_eq!(server.call(reqwest::Method::DELETE, "/v1/pools/big", None).await.0, 204);
        },
        Duration::from_millis(300),
        // The background work of the deletion (its sessions, then the space they held) goes on.
        async |_| std::fs::metadata(dir.join(STATE)).map(|m| m.len()).unwrap_or(0) > 10 * 1024 * 1024,
    )
    .await;
    assert_eq!(server.call(reqwest::Method::GET, "/v1/pools/big", None).await.0, 404, "the deleted pool came back");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stopped server's state with `sessions` sessions in pool `p`, cleanly written.
async fn a_state(name: &str, sessions: u32) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let server = Server::start(&dir, &[]).await;
    fill_pool(&server, "p", sessions).await;
    assert!(server.terminate().success());
    dir
}

fn assert_refused_in_one_line(dir: &Path) {
    let before = std::fs::read(dir.join(STATE)).expect("the state file");
    let stderr = refuses_to_start(dir);
    assert_eq!(stderr.trim().lines().count(), 1, "one line, please: {stderr}");
    assert!(stderr.contains(STATE), "the message must name the file: {stderr}");
    assert!(!stderr.contains("panicked"), "a damaged file must not panic: {stderr}");
    assert_eq!(std::fs::read(dir.join(STATE)).expect("the state file"), before, "the damaged file was changed");
    let (status, _, stderr) = run(&["check".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
    assert!(!status.success(), "check passed a damaged state");
    assert!(stderr.contains(STATE) && !stderr.contains("panicked"), "check: {stderr}");
    assert_eq!(std::fs::read(dir.join(STATE)).expect("the state file"), before, "check changed the file");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_record_is_refused_in_one_line_naming_the_file_and_left_as_it_was() {
    let dir = a_state("damaged-record", 500).await;
    let (status, stdout, _) = run(&["check".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
    assert!(status.success() && stdout.contains("sound"), "a sound state: {stdout}");
    // One digit of each record changes: still valid JSON, but not what was written. (Every one: the
    // file also holds stale copies of records in space SQLite freed, which nothing reads.)
    let mut bytes = std::fs::read(dir.join(STATE)).unwrap();
    let marker = b"\"usage_count\":";
    let places: Vec<usize> =
        bytes.windows(marker.len()).enumerate().filter(|(_, w)| w == marker).map(|(i, _)| i + marker.len()).collect();
    assert!(!places.is_empty(), "no session record found");
    for at in places {
        bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    }
    std::fs::write(dir.join(STATE), &bytes).unwrap();
    assert_refused_in_one_line(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_page_is_refused_in_one_line_naming_the_file_and_left_as_it_was() {
    let dir = a_state("damaged-page", 2000).await;
    let pristine = std::fs::read(dir.join(STATE)).unwrap();
    // Garbage over the head of B-tree pages at several places (page 1 holds the schema).
    for page in [2usize, pristine.len() / 4096 / 2, pristine.len() / 4096 - 1] {
        let mut bytes = pristine.clone();
        for b in &mut bytes[page * 4096..page * 4096 + 64] {
            *b = 0xA5;
        }
        std::fs::write(dir.join(STATE), &bytes).unwrap();
        assert_refused_in_one_line(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_cut_short_by_a_crash_is_rolled_back_and_said_so() {
    let dir = temp_dir("torn-wal");
    let server = Server::start(&dir, &["--persist-interval-secs", "0.1"]).await;
    server.post("/v1/pools/p/sessions", json!({"id": "first"})).await;
    wait_until_written(&server, 1.0).await;
    server.post("/v1/pools/p/sessions", json!({"id": "second"})).await;
    wait_until_written(&server, 2.0).await;
    server.kill9();
    // The crash tore the last commit: its final page never reached the disk.
    let wal = dir.join(format!("{STATE}-wal"));
    let length = std::fs::metadata(&wal).expect("a crash leaves the log").len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(length - 100).unwrap();

    let (status, stdout, _) = run(&["check".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
    assert!(status.success(), "the state before the torn commit is sound");
    assert!(stdout.contains("did not complete"), "check must mention the torn write: {stdout}");
    let server = Server::start_logged(&dir, &[]).await;
    eventually(Duration::from_secs(5), "the log says what was rolled back", || async {
        server.log_text().lines().any(|line| line.contains("WARN") && line.contains("did not complete"))
    })
    .await;
    assert_eq!(server.call(reqwest::Method::GET, "/v1/pools/p/sessions/first", None).await.0, 200);
    assert_eq!(server.call(reqwest::Method::GET, "/v1/pools/p/sessions/second", None).await.0, 404);
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
