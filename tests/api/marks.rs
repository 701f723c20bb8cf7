//! mark_good, mark_bad, retire and status_code over HTTP, and the rule that a retired session never
//! changes. The formulas themselves are unit-tested in `src/session`; here one representative of
//! each shows that the API applies them, with the settings a session was created with.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, expect_json, id_of, spawn_app, ts, unique_pool, TestApp};

async fn good(app: &TestApp, pool: &str, id: &str) -> Value {
    expect_json(app.mark_good(pool, id, None).await, 200).await
}

async fn bad(app: &TestApp, pool: &str, id: &str) -> Value {
    expect_json(app.mark_bad(pool, id, None).await, 200).await
}

async fn status(app: &TestApp, pool: &str, id: &str, body: Value) -> Value {
    let r = expect_json(app.status_code(pool, id, &body).await, 200).await;
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "status_code answers {{blocked, session}}: {r}");
    assert!(r["blocked"].is_boolean(), "{r}");
    r
}

#[tokio::test]
async fn bad_bad_good_good_gives_error_score_one() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    bad(&app, &pool, &id).await;
    bad(&app, &pool, &id).await;
    assert_eq!(good(&app, &pool, &id).await["error_score"], 1.5);
    let s = good(&app, &pool, &id).await;
    assert_eq!(s["error_score"], 1.0);
    assert_eq!(s["usage_count"], 4);
    assert_eq!(s["is_usable"], true);
}

#[tokio::test]
async fn reaching_max_error_score_retires_with_reason_blocked_and_a_further_good_changes_nothing() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    bad(&app, &pool, &id).await;
    bad(&app, &pool, &id).await;
    let s = bad(&app, &pool, &id).await;
    assert_eq!(s["error_score"], 3.0);
    assert_eq!(s["usage_count"], 3);
    assert_eq!(s["is_blocked"], true);
    assert_eq!(s["is_usable"], false);
    assert_eq!(s["retired"], true);
    assert_eq!(s["retired_reason"], "blocked");
    let retired_at = ts(&s["retired_at"]);
    assert!(retired_at >= ts(&s["created_at"]));
    let after = good(&app, &pool, &id).await;
    assert_eq!(after, s, "a retired session must not change");
}

#[tokio::test]
async fn usage_count_reaching_the_maximum_with_mark_good_retires_with_reason_max_usage_count() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_usage_count": 5})).await;
    for _ in 0..4 {
        good(&app, &pool, &id).await;
    }
    let s = app.session(&pool, &id).await;
    assert_eq!(s["usage_count"], 4);
    assert_eq!(s["is_usable"], true);
    let s = good(&app, &pool, &id).await;
    assert_eq!(s["usage_count"], 5);
    assert_eq!(s["error_score"], 0.0);
    assert_eq!(s["is_max_usage_count_reached"], true);
    assert_eq!(s["is_usable"], false);
    assert_eq!(s["retired"], true);
    assert_eq!(s["retired_reason"], "max_usage_count");
    assert!(s["retired_at"].is_string());
}

#[tokio::test]
async fn blocked_wins_over_max_usage_count_as_the_reason() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_usage_count": 3})).await;
    bad(&app, &pool, &id).await;
    bad(&app, &pool, &id).await;
    let s = bad(&app, &pool, &id).await;
    assert_eq!(s["usage_count"], 3);
    assert_eq!(s["is_max_usage_count_reached"], true);
    assert_eq!(s["is_blocked"], true);
    assert_eq!(s["retired_reason"], "blocked");
}

#[tokio::test]
async fn a_fractional_max_error_score_blocks_on_the_first_bad() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_error_score": 0.5})).await;
    let s = bad(&app, &pool, &id).await;
    assert_eq!(s["error_score"], 1.0, "the score is left as computed");
    assert_eq!(s["retired_reason"], "blocked");
}

#[tokio::test]
async fn retire_raises_error_score_to_the_maximum_and_keeps_usage_count() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_error_score": 4})).await;
    bad(&app, &pool, &id).await;
    good(&app, &pool, &id).await;
    let s = expect_json(app.retire(&pool, &id, None).await, 200).await;
    assert_eq!(s["error_score"], 4.0);
    assert_eq!(s["usage_count"], 2);
    assert_eq!(s["is_blocked"], true);
    assert_eq!(s["is_usable"], false);
    assert_eq!(s["retired"], true);
    assert_eq!(s["retired_reason"], "retired");
    assert!(s["retired_at"].is_string());
    assert_eq!(app.session(&pool, &id).await, s);
}

#[tokio::test]
async fn marks_accept_no_body_an_empty_object_and_json_with_charset() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_usage_count": 100})).await;
    let path = format!("/v1/pools/{pool}/sessions/{id}/mark_good");
    let no_body = app.request(reqwest::Method::POST, &path, None, None).await;
    expect_json(no_body, 200).await;
    let empty_object = app.request(reqwest::Method::POST, &path, Some("application/json"), Some(b"{}".to_vec())).await;
    expect_json(empty_object, 200).await;
    let charset =
        app.request(reqwest::Method::POST, &path, Some("application/json; charset=utf-8"), Some(b"{ }".to_vec())).await;
    expect_json(charset, 200).await;
    let empty_json = app.request(reqwest::Method::POST, &path, Some("application/json"), Some(Vec::new())).await;
    let s = expect_json(empty_json, 200).await;
    assert_eq!(s["usage_count"], 4);
}

#[tokio::test]
async fn a_retired_session_never_changes_whatever_is_reported() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1})).await;
    let leased = app.leased(&pool, 60.0).await;
    let id = id_of(&leased);
    let lease_id = leased["lease"]["id"].as_str().unwrap().to_owned();
    bad(&app, &pool, &id).await;
    let retired = expect_json(app.retire(&pool, &id, None).await, 200).await;
    assert_eq!(retired["retired_reason"], "retired");
    assert_eq!(retired["leased_until"], Value::Null, "retirement ends the lease");

    for resp in [
        app.mark_good(&pool, &id, None).await,
        app.mark_bad(&pool, &id, None).await,
        app.retire(&pool, &id, None).await,
        app.mark_good(&pool, &id, Some(&lease_id)).await,
        app.retire(&pool, &id, Some("stale")).await,
        app.release(&pool, &id, "any").await,
        app.release(&pool, &id, &lease_id).await,
    ] {
        assert_eq!(expect_json(resp, 200).await, retired);
    }
    for (code, mark, blocked) in [(200, true, false), (500, true, false), (403, false, true)] {
        let r = status(&app, &pool, &id, json!({"status_code": code, "mark": mark})).await;
        assert_eq!(r["session"], retired, "status_code {code}");
        assert_eq!(r["blocked"], blocked, "blocked as computed for {code}");
    }
    let r = status(&app, &pool, &id, json!({"status_code": 500, "additional_blocked_status_codes": [500]})).await;
    assert_eq!(r["blocked"], true);
    assert_eq!(r["session"]["retired_reason"], "retired");
    assert_eq!(app.session(&pool, &id).await, retired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mark_bad_calls_lose_no_update() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (pool, id) = app.session_in_new_pool(&json!({"max_error_score": 1000, "max_usage_count": 1000})).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, pool, id) = (app.clone(), pool.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let resp = app.mark_bad(&pool, &id, None).await;
                assert_eq!(resp.status().as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = app.session(&pool, &id).await;
    assert_eq!(s["error_score"], 160.0);
    assert_eq!(s["usage_count"], 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_marks_past_the_limit_retire_exactly_once_at_the_limit() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (pool, id) = app.session_in_new_pool(&json!({"max_error_score": 5, "max_usage_count": 1000})).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, pool, id) = (app.clone(), pool.clone(), id.clone());
        tasks.push(tokio::spawn(async move { expect_json(app.mark_bad(&pool, &id, None).await, 200).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = app.session(&pool, &id).await;
    assert_eq!(s["error_score"], 5.0, "marks after retirement change nothing");
    assert_eq!(s["usage_count"], 5);
    assert_eq!(s["retired_reason"], "blocked");
}

// status_code

#[tokio::test]
async fn every_default_blocked_status_code_retires_with_reason_blocked_status_code() {
    let app = spawn_app().await;
    for (code, mark) in [(401, false), (403, false), (429, true)] {
        let (pool, id) = app.session_in_new_pool(&json!({})).await;
        bad(&app, &pool, &id).await;
        let r = status(&app, &pool, &id, json!({"status_code": code, "mark": mark})).await;
        assert_eq!(r["blocked"], true, "{code}");
        let s = &r["session"];
        assert_eq!(s["retired"], true);
        assert_eq!(s["retired_reason"], "blocked_status_code");
        assert_eq!(s["error_score"], 3.0);
        assert_eq!(s["usage_count"], 1, "a block is not a use, even with mark");
        assert_eq!(s["is_usable"], false);
        assert_eq!(&app.session(&pool, &id).await, s);
    }
}

#[tokio::test]
async fn mark_true_counts_200_to_399_as_good_and_every_other_code_as_bad() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"max_error_score": 1000, "max_usage_count": 1000})).await;
    let mut expected_usage = 0;
    let mut expected_score = 0.0;
    for code in [400, 404, 500, 599, 100, 199, 418, 200, 204, 299, 301, 399, 400, 200] {
        let r = status(&app, &pool, &id, json!({"status_code": code, "mark": true})).await;
        expected_usage += 1;
        if (200..=399).contains(&code) {
            expected_score = f64::max(0.0, expected_score - 0.5);
        } else {
            expected_score += 1.0;
        }
        assert_eq!(r["blocked"], false);
        assert_eq!(r["session"]["usage_count"], expected_usage, "after {code}");
        assert_eq!(r["session"]["error_score"], expected_score, "after {code}");
    }
}

#[tokio::test]
async fn additional_blocked_status_codes_block_and_win_over_ignore() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let r = status(
        &app,
        &pool,
        &id,
        json!({"status_code": 500, "additional_blocked_status_codes": [500],
               "ignore_http_error_status_codes": [500]}),
    )
    .await;
    assert_eq!(r["blocked"], true);
    assert_eq!(r["session"]["retired_reason"], "blocked_status_code");
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let r = status(&app, &pool, &id, json!({"status_code": 418, "additional_blocked_status_codes": [418]})).await;
    assert_eq!(r["blocked"], true);
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let r = status(
        &app,
        &pool,
        &id,
        json!({"status_code": 403, "additional_blocked_status_codes": [403],
               "ignore_http_error_status_codes": [403]}),
    )
    .await;
    assert_eq!(r["blocked"], true, "additional wins over ignore for a default code too");
}

#[tokio::test]
async fn a_pool_with_an_empty_blocked_list_creates_sessions_that_never_block() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1, "session": {"blocked_status_codes": []}})).await;
    let s = app.acquired(&pool).await;
    assert_eq!(s["blocked_status_codes"], json!([]));
    let r = status(&app, &pool, &id_of(&s), json!({"status_code": 403})).await;
    assert_eq!(r["blocked"], false);
}

#[tokio::test]
async fn status_codes_outside_100_to_599_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let before = app.session(&pool, &id).await;
    for body in [
        json!({"status_code": 99}),
        json!({"status_code": 600}),
        json!({"status_code": 0}),
        json!({"status_code": -403}),
        json!({"status_code": 65_939}),
        json!({"status_code": 1e23}),
        json!({"status_code": 403.5}),
        json!({"status_code": "403"}),
        json!({"status_code": null}),
        json!({}),
        json!({"mark": true}),
        json!({"status_code": 200, "additional_blocked_status_codes": [600]}),
        json!({"status_code": 200, "ignore_http_error_status_codes": [99]}),
        json!({"status_code": 200, "mark": "yes"}),
        json!({"status_code": 200, "bogus": 1}),
    ] {
        let resp = app.status_code(&pool, &id, &body).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.session(&pool, &id).await, before);
    for code in [100, 599] {
        let r = status(&app, &pool, &id, json!({"status_code": code, "mark": true})).await;
        assert_eq!(r["blocked"], false);
    }
}

#[tokio::test]
async fn a_status_code_out_of_range_in_settings_is_refused() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for codes in [json!([99]), json!([600]), json!([403, 1000]), json!(["403"])] {
        let resp = app.create_session(&pool, &json!({ "blocked_status_codes": codes })).await;
        assert_problem(resp, 400, "invalid_request").await;
        let resp = app.put_pool(&pool, &json!({"session": { "blocked_status_codes": codes }})).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
}
