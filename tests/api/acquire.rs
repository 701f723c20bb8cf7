//! Acquire: filling the pool, picking among free sessions, never handing out an unusable one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, assert_session_shape, expect_json, id_of, spawn_app, spawn_app_with, unique_pool,
};

#[tokio::test]
async fn the_first_acquire_fills_the_pool_to_max_pool_size() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 7})).await;
    let s = app.acquired(&pool).await;
    assert_session_shape(&s, false);
    let status = app.pool_status(&pool).await;
    assert_eq!(status["session_count"], 7);
    assert_eq!(status["usable_session_count"], 7);
    assert_eq!(status["retired_session_count"], 0);
    assert_eq!(status["leased_session_count"], 0);
    assert!(app.ids(&pool, "all").await.contains(&id_of(&s)));
}

#[tokio::test]
async fn acquire_picks_among_all_free_sessions() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 3})).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        *seen.entry(id_of(&app.acquired(&pool).await)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "every free session is a candidate: {seen:?}");
    assert_eq!(app.pool_status(&pool).await["session_count"], 3);
}

#[tokio::test]
async fn acquire_is_not_a_use_and_takes_no_lease_without_lease_secs() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1})).await;
    for _ in 0..5 {
        let s = app.acquired(&pool).await;
        assert_session_shape(&s, false);
        assert_eq!(s["usage_count"], 0);
        assert_eq!(s["error_score"], 0.0);
        assert_eq!(s["leased_until"], Value::Null);
        assert!(s.get("lease").is_none());
    }
    // An explicit empty object is the same as no body.
    let resp = app.send_json(reqwest::Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&json!({}))).await;
    let s = expect_json(resp, 200).await;
    assert!(s.get("lease").is_none());
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
}

#[tokio::test]
async fn acquire_never_returns_a_retired_session_and_replaces_it() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 3})).await;
    let first = id_of(&app.acquired(&pool).await);
    let ids: Vec<String> = app.ids(&pool, "all").await.into_iter().collect();
    let second = ids.iter().find(|id| **id != first).unwrap().clone();
    let third = ids.iter().find(|id| **id != first && **id != second).unwrap().clone();
    // One retired explicitly, one blocked by marks, one used up.
    expect_json(app.retire(&pool, &first, None).await, 200).await;
    for _ in 0..3 {
        expect_json(app.mark_bad(&pool, &second, None).await, 200).await;
    }
    assert_eq!(app.session(&pool, &second).await["retired_reason"], "blocked");
    expect_json(app.status_code(&pool, &third, &json!({"status_code": 429})).await, 200).await;
    let dead: BTreeSet<String> = [first, second, third].into_iter().collect();
    for _ in 0..60 {
        let s = app.acquired(&pool).await;
        assert!(!dead.contains(&id_of(&s)), "handed out a retired session: {s}");
        assert_eq!(s["is_usable"], true);
        assert_eq!(s["retired"], false);
    }
    let status = app.pool_status(&pool).await;
    assert_eq!(status["usable_session_count"], 3);
    assert_eq!(status["retired_session_count"], 3);
    assert_eq!(status["session_count"], 6);
}

#[tokio::test]
async fn acquire_never_returns_a_session_that_used_up_its_usage_count() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2, "session": {"max_usage_count": 1}})).await;
    let mut used = BTreeSet::new();
    for _ in 0..10 {
        let s = app.acquired(&pool).await;
        let id = id_of(&s);
        assert!(!used.contains(&id), "handed out a used-up session {id}");
        let after = expect_json(app.mark_good(&pool, &id, None).await, 200).await;
        assert_eq!(after["retired_reason"], "max_usage_count");
        used.insert(id);
    }
    assert_eq!(app.pool_status(&pool).await["retired_session_count"], 10);
}

#[tokio::test]
async fn lease_secs_must_be_in_range() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 5})).await;
    for bad in [
        json!({"lease_secs": 0}),
        json!({"lease_secs": -1}),
        json!({"lease_secs": 3600.5}),
        json!({"lease_secs": 1e23}),
        json!({"lease_secs": "30"}),
        json!({"lease_secs": true}),
        json!({"lease": 30}),
    ] {
        let resp = app.send_json(reqwest::Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&bad)).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
    for good in [3600.0, 0.5, 30.0] {
        let s = app.leased(&pool, good).await;
        assert_session_shape(&s, true);
    }
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 3);
}

#[tokio::test]
async fn acquire_past_max_sessions_answers_no_session_available() {
    let app = spawn_app_with(|c| c.max_sessions = 2).await;
    let pool = unique_pool();
    let a = app.leased(&pool, 60.0).await;
    let b = app.leased(&pool, 60.0).await;
    assert_ne!(a["id"], b["id"]);
    let resp = app.acquire_leased(&pool, 60.0).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(resp, 503, "no_session_available").await;
    let status = app.pool_status(&pool).await;
    assert_eq!(status["session_count"], 2);
}
