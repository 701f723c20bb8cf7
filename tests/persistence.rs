//! Durability, end to end: the real binary on a real data directory, stopped gracefully, killed with
//! SIGKILL mid-burst, started on unreadable state and on a directory already in use.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, refuses_to_start, temp_dir, Server};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn everything_survives_a_graceful_restart() {
    let dir = temp_dir("restart");
    let server = Server::start(&dir, &["--retired-retention-secs", "3600"]).await;
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            "/v1/pools/shop",
            Some(json!({"max_pool_size": 3, "session": {"max_usage_count": 9}, "proxy_urls": ["http://p:1"]})),
        )
        .await;
    assert_eq!(status, 201);
    server
        .post(
            "/v1/pools/shop/sessions",
            json!({"id": "alice", "user_data": {"login": {"done": true}}, "cookies": [
                {"name": "sid", "value": "abc", "domain": "example.com", "secure": true, "same_site": "Lax", "expires": 4102444800u64}
            ], "max_error_score": 5.0}),
        )
        .await;
    server.post("/v1/pools/shop/sessions/alice/mark_bad", json!({})).await;
    server.post("/v1/pools/shop/sessions/alice/mark_good", json!({})).await;
    let leased = server.post("/v1/pools/shop/acquire", json!({"lease_secs": 600})).await;
    let leased_id = leased["id"].as_str().expect("an id").to_owned();
    server.post("/v1/pools/shop/sessions", json!({"id": "gone"})).await;
    server.post("/v1/pools/shop/sessions/gone/retire", json!({})).await;
    server.post("/v1/pools/default/sessions", json!({"id": "in-default"})).await;
    let before = server.get("/v1/pools/shop/sessions?limit=1000").await;
    let pools_before = server.get("/v1/pools").await;

    let status = server.terminate();
    assert!(status.success(), "SIGTERM must end in exit 0, got {status:?}");

    let server = Server::start(&dir, &["--retired-retention-secs", "3600"]).await;
    let after = server.get("/v1/pools/shop/sessions?limit=1000").await;
    assert_eq!(after, before, "sessions differ after the restart");
    let pools_after = server.get("/v1/pools").await;
    assert_eq!(pools_after, pools_before, "pools differ after the restart");
    // The lease survived: the leased session is not handed out again.
    let status = server.get(&format!("/v1/pools/shop/sessions/{leased_id}")).await;
    assert!(status["leased_until"].is_string(), "lease lost: {status}");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_survive_a_restart() {
    let dir = temp_dir("deletions");
    let server = Server::start(&dir, &["--persist-interval-secs", "0.2"]).await;
    server.post("/v1/pools/a/sessions", json!({"id": "x"})).await;
    server.post("/v1/pools/a/sessions", json!({"id": "y"})).await;
    server.post("/v1/pools/b/sessions", json!({"id": "z"})).await;
    server.post("/v1/pools/default/sessions", json!({"id": "d"})).await;
    // Once a cycle has written them, the deletions below are deletions on disk.
    eventually(Duration::from_secs(20), "the four sessions are written", || async {
        server.metric("session_pool_persist_sessions_written_total").await >= 4.0
    })
    .await;
    assert_eq!(server.call(reqwest::Method::DELETE, "/v1/pools/a/sessions/x", None).await.0, 204);
    assert_eq!(server.call(reqwest::Method::DELETE, "/v1/pools/b", None).await.0, 204);
    assert_eq!(server.call(reqwest::Method::DELETE, "/v1/pools/default", None).await.0, 204);
    assert!(server.terminate().success());

    let server = Server::start(&dir, &[]).await;
    let ids = |v: Value| -> Vec<String> {
        v["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(server.get("/v1/pools/a/sessions").await), ["y"]);
    assert_eq!(server.call(reqwest::Method::GET, "/v1/pools/b", None).await.0, 404);
    assert_eq!(server.get("/v1/pools/default").await["session_count"], 0);
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_during_a_burst_of_writes_loses_at_most_the_last_interval() {
    let dir = temp_dir("sigkill");
    let server = Arc::new(Server::start(&dir, &["--persist-interval-secs", "0.2"]).await);
    server.post("/v1/pools/p/sessions", json!({"id": "hot", "max_usage_count": 1000000, "max_error_score": 1e9})).await;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (server, acknowledged) = (Arc::clone(&server), Arc::clone(&acknowledged));
        writers.push(tokio::spawn(async move {
            let url = format!("{}/v1/pools/p/sessions/hot/mark_good", server.base);
            while let Ok(r) = server.client.post(&url).json(&json!({})).send().await {
                if r.status() != 200 {
                    break;
                }
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    eventually(Duration::from_secs(20), "the burst is under way", || async {
        acknowledged.load(Ordering::SeqCst) >= 200
    })
    .await;
    let safely_persisted = acknowledged.load(Ordering::SeqCst);
    // Two cycles that began after this point have written the session: everything acknowledged up
    // to now is on disk.
    let written = server.metric("session_pool_persist_sessions_written_total").await;
    eventually(Duration::from_secs(20), "two more cycles write the session", || async {
        server.metric("session_pool_persist_sessions_written_total").await >= written + 2.0
    })
    .await;
    Command::new("kill").args(["-KILL", &server.child.id().to_string()]).status().expect("send SIGKILL");
    for writer in writers {
        let _ = writer.await;
    }
    let Ok(mut server) = Arc::try_unwrap(server) else { panic!("the writers are done with the server") };
    let _ = server.child.wait();
    assert!(safely_persisted > 0, "the burst made no writes");

    let server = Server::start(&dir, &[]).await;
    let usage = server.get("/v1/pools/p/sessions/hot").await["usage_count"].as_u64().expect("usage_count");
    assert!(usage >= safely_persisted, "lost more than the last interval: {usage} < {safely_persisted}");
    assert!(usage <= acknowledged.load(Ordering::SeqCst) + 4, "more uses than were ever made");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_state_file_stops_the_server_and_is_left_as_it_was() {
    let dir = temp_dir("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("FORMAT"), br#"{"format":"session-pool-state","version":2}"#).unwrap();
    let garbage = b"this is not a database, and it must still be here afterwards".repeat(100);
    std::fs::write(dir.join("state.sqlite"), &garbage).unwrap();
    let stderr = refuses_to_start(&dir);
    assert!(stderr.contains("state.sqlite"), "the message must name the file: {stderr}");
    assert_eq!(std::fs::read(dir.join("state.sqlite")).unwrap(), garbage, "the file was changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_of_another_format_version_stops_the_server() {
    let dir = temp_dir("version");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("FORMAT"), br#"{"format":"session-pool-state","version":99}"#).unwrap();
    std::fs::write(dir.join("state.sqlite"), b"whatever").unwrap();
    let stderr = refuses_to_start(&dir);
    assert!(stderr.contains("version 99"), "the message must say why: {stderr}");
    assert_eq!(std::fs::read(dir.join("state.sqlite")).unwrap(), b"whatever");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_a_data_dir_in_use_exits_saying_so() {
    let dir = temp_dir("locked");
    let first = Server::start(&dir, &[]).await;
    let stderr = refuses_to_start(&dir);
    assert!(stderr.contains("in use"), "the message must say the directory is in use: {stderr}");
    // The first one is unharmed.
    first.post("/v1/pools/p/acquire", json!({})).await;
    assert!(first.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_saying_so_before_anything_is_served() {
    let dir = temp_dir("a-file");
    std::fs::write(&dir, b"not a directory").unwrap();
    let stderr = refuses_to_start(&dir);
    assert!(stderr.contains("is not a directory"), "the message must say why: {stderr}");
    assert_eq!(std::fs::read(&dir).unwrap(), b"not a directory");
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn an_invalid_rust_log_stops_the_start_naming_the_variable() {
    let dir = temp_dir("rust-log");
    let output = std::process::Command::new(common::BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "info,session_pool=loud")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the server started with a RUST_LOG it cannot read: {stderr}");
    assert!(stderr.contains("RUST_LOG=\"info,session_pool=loud\" is not a log filter"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line says what is wrong: {stderr}");
    assert!(!dir.exists(), "nothing was created before the refusal");
}
