//! Expiry: at `expires_at` a session is retired with reason `expired`, without any call touching it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::eventually;
use crate::helpers::{expect_json, id_of, secs_to_nanos, spawn_app, spawn_app_with, ts, unique_pool, TestApp};

/// Waits until a read of the session shows it retired as expired.
async fn expired(app: &TestApp, pool: &str, id: &str) {
    eventually(Duration::from_secs(10), "the session expires", || async {
        app.session(pool, id).await["retired_reason"] == "expired"
    })
    .await;
}

#[tokio::test]
async fn expiry_is_visible_on_get_at_expires_at_without_any_call() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let created = app.new_session(&pool, &json!({"max_age_secs": 1})).await;
    let id = id_of(&created);
    assert_eq!(ts(&created["expires_at"]) - ts(&created["created_at"]), secs_to_nanos(1.0));
    expired(&app, &pool, &id).await;
    let s = app.session(&pool, &id).await;
    assert_eq!(s["is_expired"], true);
    assert_eq!(s["is_usable"], false);
    assert_eq!(s["retired"], true);
    assert_eq!(s["retired_reason"], "expired");
    assert_eq!(s["retired_at"], s["expires_at"], "for expiry retired_at is expires_at");
    assert_eq!(s["expires_at"], created["expires_at"]);
    assert_eq!(s["usage_count"], 0);
    assert_eq!(s["error_score"], 0.0, "expiry does not touch the score");
    assert_eq!(s["is_blocked"], false);
    // The pool counts and the list agree.
    let status = app.pool_status(&pool).await;
    assert_eq!(status["usable_session_count"], 0);
    assert_eq!(status["retired_session_count"], 1);
    assert!(app.ids(&pool, "retired").await.contains(&id));
    assert!(app.ids(&pool, "usable").await.is_empty());
    // Reports after expiry change nothing.
    let after = expect_json(app.mark_good(&pool, &id, None).await, 200).await;
    assert_eq!(after, s);
    let r = expect_json(app.status_code(&pool, &id, &json!({"status_code": 500, "mark": true})).await, 200).await;
    assert_eq!(r["session"], s);
    assert_eq!(r["blocked"], false);
}

#[tokio::test]
async fn a_fractional_max_age_expires_too() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let created = app.new_session(&pool, &json!({"max_age_secs": 0.5})).await;
    assert_eq!(created["max_age_secs"], 0.5);
    assert_eq!(ts(&created["expires_at"]) - ts(&created["created_at"]), secs_to_nanos(0.5));
    expired(&app, &pool, &id_of(&created)).await;
    let s = app.session(&pool, &id_of(&created)).await;
    assert_eq!(s["retired_reason"], "expired");
    assert_eq!(s["retired_at"], created["expires_at"]);
}

#[tokio::test]
async fn acquire_replaces_expired_sessions_and_never_returns_them() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2, "session": {"max_age_secs": 0.5}})).await;
    let first = app.acquired(&pool).await;
    assert_eq!(first["max_age_secs"], 0.5);
    let old = app.ids(&pool, "all").await;
    assert_eq!(old.len(), 2);
    expired(&app, &pool, &id_of(&first)).await;
    for _ in 0..10 {
        let s = app.acquired(&pool).await;
        assert!(!old.contains(&id_of(&s)), "handed out an expired session");
        assert_eq!(s["is_usable"], true);
    }
    let status = app.pool_status(&pool).await;
    assert_eq!(status["retired_session_count"], 2);
    assert_eq!(status["usable_session_count"], 2);
    for id in &old {
        let s = app.session(&pool, id).await;
        assert_eq!(s["retired_reason"], "expired");
        assert_eq!(s["retired_at"], s["expires_at"]);
        assert_eq!(s["leased_until"], Value::Null);
    }
}

#[tokio::test]
async fn a_session_used_up_before_expiry_keeps_its_first_reason() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app.new_session(&pool, &json!({"max_age_secs": 0.5, "max_usage_count": 1})).await;
    let id = id_of(&s);
    let used = expect_json(app.mark_good(&pool, &id, None).await, 200).await;
    assert_eq!(used["retired_reason"], "max_usage_count");
    eventually(Duration::from_secs(10), "the session's max age passes", || async {
        app.session(&pool, &id).await["is_expired"] == true
    })
    .await;
    let later = app.session(&pool, &id).await;
    assert_eq!(later["retired_reason"], "max_usage_count", "retirement is terminal");
    assert_eq!(later["retired_at"], used["retired_at"]);
    assert_eq!(later["is_expired"], true, "derived flags are computed at the read");
}

/// Sleeps until `at` (nanoseconds since the epoch, as [`ts`] gives) is `margin_ms` past.
async fn sleep_past(at: i128, margin_ms: i128) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    let wait = (at + margin_ms * 1_000_000 - now as i128).max(0);
    tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
}

/// Creates `old0`..`old{n-1}` in `pool` together, living `max_age_secs`; returns the last to expire
/// and its expiry.
async fn many_sessions(app: &std::sync::Arc<TestApp>, pool: &str, n: usize, max_age_secs: f64) -> (String, i128) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (app, pool) = (app.clone(), pool.to_owned());
            let body = json!({"id": format!("old{i}"), "max_age_secs": max_age_secs});
            tokio::spawn(async move {
                let s = app.new_session(&pool, &body).await;
                (ts(&s["expires_at"]), id_of(&s))
            })
        })
        .collect();
    let mut last = (0, String::new());
    for task in tasks {
        last = last.max(task.await.expect("a create"));
    }
    (last.1, last.0)
}

// More sessions expire at once than one call of the Redis store applies (it handles at most 64 due
// timers a call). The sessions are created together and the call comes right after the last
// expiry, so the background sweep (once a second) rarely gets there first; when it does, a test
// passes without having probed the bound.

/// Acquire must still drop them all first, fill the pool and hand one out (SEMANTICS.md, acquire),
/// not pick among the stale candidates until none is left and answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_after_more_expiries_at_once_than_one_call_applies_still_fills_and_hands_one_out() {
    let app = std::sync::Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2})).await;
    sleep_past(many_sessions(&app, &pool, 100, 1.0).await.1, 20).await;

    let s = app.acquired(&pool).await;
    assert_eq!(s["is_usable"], true, "{s}");
    assert!(!id_of(&s).starts_with("old"), "handed out an expired session: {s}");
    let status = app.pool_status(&pool).await;
    let counts = ["session_count", "usable_session_count", "retired_session_count", "leased_session_count"]
        .map(|key| status[key].as_u64().unwrap_or_else(|| panic!("{key} in {status}")));
    assert_eq!(counts, [102, 2, 100, 0], "session, usable, retired, leased counts: {status}");
}

/// Past their expiry and the retention, every one of them is purged for the very first call, the
/// one that expired last included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_read_after_more_expiries_than_one_call_applies_finds_them_all_purged() {
    let app = std::sync::Arc::new(spawn_app_with(|c| c.retired_retention_secs = 0.05).await);
    let pool = unique_pool();
    let (last, expiry) = many_sessions(&app, &pool, 100, 1.0).await;
    sleep_past(expiry + secs_to_nanos(0.05), 20).await;
    let resp = app.get_session(&pool, &last).await;
    let (status, body) = (resp.status().as_u16(), resp.text().await.unwrap_or_default());
    assert_eq!(status, 404, "{last}, the last to expire, is still there past the retention: {body}");
    assert_eq!(app.pool_status(&pool).await["session_count"], 0);
}

/// A server with a retention of 0.05 s and a new pool in which the session `short` lived 0.1 s;
/// returns once its expiry and the retention are past, with the session as created.
async fn a_session_past_its_expiry_and_the_retention() -> (TestApp, String, Value) {
    let app = spawn_app_with(|c| c.retired_retention_secs = 0.05).await;
    let pool = unique_pool();
    let s = app.new_session(&pool, &json!({"id": "short", "max_age_secs": 0.1})).await;
    sleep_past(ts(&s["expires_at"]) + secs_to_nanos(0.05), 20).await;
    (app, pool, s)
}

/// `GET /v1/pools` applies the clock as `GET /v1/pools/{pool}` does: a session past its expiry and
/// the retention is purged, not counted as retired.
#[tokio::test]
async fn the_list_of_pools_counts_no_session_past_its_expiry_and_the_retention() {
    let (app, pool, _) = a_session_past_its_expiry_and_the_retention().await;
    let pools = expect_json(app.list_pools().await, 200).await;
    let entry = pools["pools"].as_array().expect("pools").iter().find(|p| p["name"] == pool.as_str());
    let entry = entry.unwrap_or_else(|| panic!("no {pool} in {pools}"));
    assert_eq!((&entry["session_count"], &entry["retired_session_count"]), (&json!(0), &json!(0)), "{entry}");
    assert_eq!(app.pool_status(&pool).await["session_count"], 0);
}

/// An import finds a session past its expiry and the retention purged, as any other call does, and
/// brings the document's session in under that id rather than skipping it as existing.
#[tokio::test]
async fn an_import_brings_in_an_id_whose_session_is_past_its_expiry_and_the_retention() {
    let (app, pool, s) = a_session_past_its_expiry_and_the_retention().await;
    let document = json!({"config": {}, "sessions": [{"id": "short", "created_at": s["created_at"],
        "user_data": {"from": "import"}}]});
    let path = format!("/v1/pools/{pool}/import");
    let answer = expect_json(app.send_json(reqwest::Method::POST, &path, Some(&document)).await, 200).await;
    assert_eq!(answer, json!({"imported": 1, "skipped": []}));
    let imported = app.session(&pool, "short").await;
    assert_eq!((&imported["user_data"], &imported["is_usable"]), (&json!({"from": "import"}), &json!(true)));
}
