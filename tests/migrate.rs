//! `session-pool migrate --from SOURCE --to TARGET`: every pool, config and sessions, copied from a
//! data directory to Redis and back, equal at each step; a target that already holds a pool is
//! refused; an import that fails midway leaves the target as it was. Needs redis-server on `PATH`
//! (skipped without it, unless `CI` is set).

mod common;

use std::ffi::OsStr;

use common::redis::Redis;
use common::{run, Server, TempDir};
use serde_json::{json, Value};

const PREFIX: &str = "migrate-test";
const POOLS: [&str; 2] = ["alpha", "beta"];
/// The counts of a pool's status.
const COUNTS: [&str; 4] = ["session_count", "usable_session_count", "retired_session_count", "leased_session_count"];

/// What must survive a migration: each pool's config and counts, and its sessions as listed.
async fn snapshot(server: &Server) -> Value {
    let mut pools = serde_json::Map::new();
    for pool in ["default", POOLS[0], POOLS[1]] {
        let info = server.get(&format!("/v1/pools/{pool}")).await;
        let sessions = server.get(&format!("/v1/pools/{pool}/sessions?limit=1000")).await;
        assert!(sessions["next_cursor"].is_null(), "one page holds them all: {sessions}");
        let counts: serde_json::Map<String, Value> = COUNTS
            .iter()
            .map(|count| {
                assert!(info[count].is_u64(), "{pool}: {count} is a count: {info}");
                (count.to_string(), info[count].clone())
            })
            .collect();
        pools.insert(
            pool.to_owned(),
            json!({"config": info["config"], "counts": counts, "sessions": sessions["sessions"]}),
        );
    }
    Value::Object(pools)
}

fn migrate(extra: &[&str], from: &OsStr, to: &OsStr) -> (bool, String, String) {
    let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    if !extra.contains(&"--redis-key-prefix") {
        args.extend([OsStr::new("--redis-key-prefix"), OsStr::new(PREFIX)]);
    }
    args.push(OsStr::new("migrate"));
    args.extend([OsStr::new("--from"), from, OsStr::new("--to"), to]);
    let (status, stdout, stderr) = run(&args);
    (status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_go_to_redis_and_back_unchanged() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let source = TempDir::new("migrate-source");

    let server = Server::start(&source, &[]).await;
    server.put("/v1/pools/alpha", json!({"max_pool_size": 7, "session": {"max_usage_count": 9}})).await;
    for (pool, n) in [("alpha", 3), ("beta", 2)] {
        for i in 0..n {
            let id = format!("{pool}-{i}");
            server
                .post(
                    &format!("/v1/pools/{pool}/sessions"),
                    json!({"id": id, "user_data": {"login": {"n": i, "who": pool}}, "cookies": [
                        {"name": "sid", "value": format!("v{i}"), "domain": "example.com", "secure": true,
                         "same_site": "Lax", "expires": 4102444800u64}
                    ]}),
                )
                .await;
            for _ in 0..i {
                server.post(&format!("/v1/pools/{pool}/sessions/{id}/mark_bad"), json!({})).await;
            }
            server.post(&format!("/v1/pools/{pool}/sessions/{id}/mark_good"), json!({})).await;
        }
    }
    server.post("/v1/pools/beta/sessions/beta-1/retire", json!({})).await;
    let before = snapshot(&server).await;
    assert_eq!(before["alpha"]["sessions"].as_array().map(Vec::len), Some(3), "{before}");
    assert_eq!(before["beta"]["counts"]["retired_session_count"], 1, "{before}");
    assert!(server.terminate().success(), "SIGTERM ends the server with exit 0");

    // Directory -> Redis.
    let (ok, stdout, stderr) = migrate(&[], source.as_os_str(), OsStr::new(&url));
    assert!(ok, "migrate to Redis failed: {stderr}");
    assert_eq!(stdout.trim(), "migrated 3 pools, 5 sessions", "{stdout}");
    let on_redis = Server::start(&source, &["--store", &url, "--redis-key-prefix", PREFIX]).await;
    let after = snapshot(&on_redis).await;
    assert_eq!(after, before, "the pools on Redis differ from those of the directory");
    let alice = on_redis.get("/v1/pools/alpha/sessions/alpha-2").await;
    assert_eq!(alice["usage_count"], 3, "{alice}");
    assert_eq!(alice["user_data"], json!({"login": {"n": 2, "who": "alpha"}}));
    assert_eq!(alice["cookies"][0]["value"], "v2");
    assert!(alice["error_score"].as_f64().is_some_and(|s| s > 0.0), "{alice}");
    drop(on_redis);

    // A target that already holds the pools with sessions is refused, and left as it was.
    let (ok, stdout, stderr) = migrate(&[], source.as_os_str(), OsStr::new(&url));
    assert!(!ok, "a second migration onto the same pools must fail: {stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("\"alpha\""), "the refusal names the pool: {stderr}");

    // Redis -> a fresh directory.
    let back = TempDir::new("migrate-back");
    let (ok, stdout, stderr) = migrate(&[], OsStr::new(&url), back.as_os_str());
    assert!(ok, "migrate from Redis failed: {stderr}");
    assert_eq!(stdout.trim(), "migrated 3 pools, 5 sessions", "{stdout}");
    let on_disk = Server::start(&back, &[]).await;
    assert_eq!(snapshot(&on_disk).await, before, "the pools back on disk differ");
    assert!(on_disk.terminate().success());

    // ... and the same directory again is refused.
    let (ok, _, stderr) = migrate(&[], OsStr::new(&url), back.as_os_str());
    assert!(!ok && stderr.contains("already holds the pool"), "{stderr}");

    // An import that fails midway (beta does not fit under --max-sessions) undoes alpha.
    let partial = TempDir::new("migrate-partial");
    let (ok, _, stderr) = migrate(&["--max-sessions", "4"], source.as_os_str(), partial.as_os_str());
    assert!(!ok, "beta cannot fit under --max-sessions 4");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("\"beta\""), "{stderr}");
    let empty = Server::start(&partial, &[]).await;
    let pools = empty.get("/v1/pools").await;
    let names: Vec<&str> =
        pools["pools"].as_array().expect("pools").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["default"], "{pools}");
    assert!(empty.terminate().success());

    // The same onto Redis under another prefix: alpha is deleted again.
    let (ok, _, stderr) =
        migrate(&["--max-sessions", "4", "--redis-key-prefix", "other"], source.as_os_str(), OsStr::new(&url));
    assert!(!ok && stderr.contains("\"beta\""), "{stderr}");
    let other = Server::start(&partial, &["--store", &url, "--redis-key-prefix", "other"]).await;
    let pools = other.get("/v1/pools").await;
    let names: Vec<&str> =
        pools["pools"].as_array().expect("pools").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(!names.contains(&"alpha") && !names.contains(&"beta"), "{pools}");
}
