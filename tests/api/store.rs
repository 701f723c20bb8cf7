//! `--store`: `memory` (the default) or a Redis URL. A Redis store touches no data directory, waits
//! for a Redis it cannot reach instead of stopping (serving `/healthz`, answering 503 elsewhere),
//! and never shows the URL's password; any other value is refused naming the flag.

use std::process::Command;
use std::time::Duration;

use crate::common::{eventually, free_port, temp_dir, Server, TempDir, BIN};

/// The binary with `args`; its exit success and its stderr.
fn run_binary(args: &[&str]) -> (bool, String) {
    let data_dir = temp_dir("store");
    let mut command = Command::new(BIN);
    command.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(&data_dir).args(args);
    command.env_remove("SESSION_POOL_STORE");
    let output = command.output().expect("run the binary");
    assert!(!data_dir.exists(), "the data dir was touched: {}", data_dir.display());
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn any_other_store_is_refused_naming_the_flag() {
    for value in ["disk", "redis://host/not-a-db", "postgres://host/db"] {
        let (ok, stderr) = run_binary(&["--store", value]);
        assert!(!ok, "--store {value} was accepted");
        assert!(stderr.contains("--store"), "--store {value}: {stderr}");
    }
}

#[tokio::test]
async fn a_redis_store_that_cannot_be_reached_is_waited_for_without_a_data_dir_or_the_password_in_logs() {
    let dir = TempDir::new("store");
    // Nothing listens on this port.
    let url = format!("redis://app:secret@127.0.0.1:{}/2", free_port());
    let server = Server::on(&dir).args(["--store", &url]).logged().start_unready().await;
    let (status, problem) = server.call(reqwest::Method::GET, "/v1/pools", None).await;
    assert_eq!((status, problem["type"].as_str()), (503, Some("not_ready")), "{problem}");
    let (status, _) = server.call(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, 503);
    eventually(Duration::from_secs(20), "the wait for Redis is logged", || async {
        server.log_text().contains("cannot reach Redis")
    })
    .await;
    let (status, _) = server.call(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "the process still serves while it waits for Redis");
    assert!(!dir.exists(), "a Redis store must not touch --data-dir");
    let log = server.stop();
    assert!(log.contains("app:***@127.0.0.1"), "the URL is logged with its password hidden: {log}");
    assert!(!log.contains("secret"), "the password reached the log: {log}");
}
