//! `--store`: `memory` (the default) is the store this build has; a Redis URL is understood but
//! stops the server at start with one clear line, before anything is bound or locked, and any other
//! value is refused naming the flag.

use std::process::Command;

use session_pool::config::Store;
use session_pool::Config;

use crate::common::{temp_dir, BIN};

/// The binary with `args` and `env`; its exit success and its stderr.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let data_dir = temp_dir("store");
    let mut command = Command::new(BIN);
    command.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(&data_dir).args(args);
    command.env_remove("SESSION_POOL_STORE").envs(env.iter().copied());
    let output = command.output().expect("run the binary");
    assert!(!data_dir.exists(), "the data dir was touched: {}", data_dir.display());
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_redis_store_stops_the_binary_at_start_with_one_line_that_hides_the_password() {
    let expected = "session-pool: --store redis://app:***@127.0.0.1:6379/2: the Redis store is not available in \
                    this build yet\n";
    let by_flag = run_binary(&["--store", "redis://app:secret@127.0.0.1:6379/2"], &[]);
    assert_eq!(by_flag, (false, expected.to_owned()));
    let by_env = run_binary(&[], &[("SESSION_POOL_STORE", "redis://app:secret@127.0.0.1:6379/2")]);
    assert_eq!(by_env, (false, expected.to_owned()));
    let (ok, stderr) = run_binary(&["--store", "rediss://cache.example"], &[]);
    assert!(!ok && stderr.contains("--store rediss://cache.example"), "{stderr}");
}

#[test]
fn any_other_store_is_refused_naming_the_flag() {
    for value in ["disk", "redis://host/not-a-db", "postgres://host/db"] {
        let (ok, stderr) = run_binary(&["--store", value], &[]);
        assert!(!ok, "--store {value} was accepted");
        assert!(stderr.contains("--store"), "--store {value}: {stderr}");
    }
}

#[tokio::test]
async fn run_refuses_a_redis_store_before_it_locks_the_data_dir() {
    let data_dir = temp_dir("store");
    let store: Store = "redis://127.0.0.1:6379/0".parse().expect("a Redis URL");
    let config = Config { data_dir: data_dir.clone(), store, ..Config::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let refused = session_pool::run(listener, config, std::future::pending()).await;
    let message = refused.expect_err("a Redis store in this build").to_string();
    assert_eq!(message, "--store redis://127.0.0.1:6379/0: the Redis store is not available in this build yet");
    assert!(!data_dir.exists());
}
