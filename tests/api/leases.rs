//! Leases: exclusive hand-out, release, ending a lease by reports, expiry of the lease.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::eventually;
use crate::helpers::{
    assert_problem, assert_session_shape, expect_json, id_of, secs_to_nanos, spawn_app, ts, unique_pool, TestApp,
};

/// A pool of `size`, and one leased session of it: `(pool, id, lease_id)`.
async fn leased_one(app: &TestApp, size: u32, lease_secs: f64) -> (String, String, String) {
    let pool = unique_pool();
    app.configure(&pool, &json!({ "max_pool_size": size })).await;
    let s = app.leased(&pool, lease_secs).await;
    let lease_id = s["lease"]["id"].as_str().expect("lease.id").to_owned();
    (pool, id_of(&s), lease_id)
}

#[tokio::test]
async fn a_leased_acquire_carries_a_lease_object_and_leased_until() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2})).await;
    let s = app.leased(&pool, 30.0).await;
    assert_session_shape(&s, true);
    let lease = s["lease"].as_object().expect("lease object");
    assert_eq!(lease.len(), 2, "lease has id and expires_at: {s}");
    assert!(s["lease"]["id"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(s["lease"]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["leased_until"], s["lease"]["expires_at"]);
    assert!(
        ts(&s["leased_until"]) >= ts(&s["created_at"]) + secs_to_nanos(30.0),
        "a lease of 30 s taken after creation ends at least 30 s after it: {s}"
    );
    assert_eq!(s["usage_count"], 0, "a lease is not a use");
    let got = app.session(&pool, &id_of(&s)).await;
    assert_eq!(got["leased_until"], s["leased_until"]);
    assert_eq!(got["usage_count"], 0);
    assert_eq!(got["is_usable"], true);
    let status = app.pool_status(&pool).await;
    assert_eq!(status["leased_session_count"], 1);
    assert_eq!(status["usable_session_count"], 2);
}

#[tokio::test]
async fn two_leases_never_get_the_same_session_and_leases_block_plain_acquires() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2})).await;
    let a = app.leased(&pool, 30.0).await;
    let b = app.leased(&pool, 30.0).await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["lease"]["id"], b["lease"]["id"]);
    let resp = app.acquire_leased(&pool, 30.0).await;
    let retry_after = resp.headers().get("retry-after").expect("Retry-After on 503").to_str().unwrap().to_owned();
    assert!(retry_after.parse::<u64>().is_ok(), "Retry-After is seconds: {retry_after:?}");
    assert_problem(resp, 503, "no_session_available").await;
    let resp = app.acquire(&pool).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(resp, 503, "no_session_available").await;
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_leased_acquires_get_distinct_sessions_until_the_pool_is_exhausted() {
    let app = Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 20})).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, pool) = (app.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let s = app.leased(&pool, 60.0).await;
            (id_of(&s), s["lease"]["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut ids = BTreeSet::new();
    let mut lease_ids = BTreeSet::new();
    for t in tasks {
        let (id, lease_id) = t.await.unwrap();
        ids.insert(id);
        lease_ids.insert(lease_id);
    }
    assert_eq!(ids.len(), 20, "a session was leased twice");
    assert_eq!(lease_ids.len(), 20);
    let resp = app.acquire_leased(&pool, 60.0).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(resp, 503, "no_session_available").await;
    let status = app.pool_status(&pool).await;
    assert_eq!(status["leased_session_count"], 20);
    assert_eq!(status["session_count"], 20);
    assert_eq!(app.ids(&pool, "leased").await, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn more_concurrent_leased_acquires_than_sessions_hand_each_session_out_once() {
    let app = Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 5})).await;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (app, pool) = (app.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let resp = app.acquire_leased(&pool, 60.0).await;
            match resp.status().as_u16() {
                200 => Some(id_of(&expect_json(resp, 200).await)),
                _ => {
                    assert_problem(resp, 503, "no_session_available").await;
                    None
                }
            }
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            got.push(id);
        }
    }
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 5, "exactly the pool's sessions are leased: {got:?}");
    assert_eq!(distinct.len(), 5);
}

#[tokio::test]
async fn release_with_the_lease_id_ends_the_lease() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    assert_problem(app.acquire(&pool).await, 503, "no_session_available").await;
    let s = expect_json(app.release(&pool, &id, &lease_id).await, 200).await;
    assert_session_shape(&s, false);
    assert_eq!(s["leased_until"], Value::Null);
    assert_eq!(s["usage_count"], 0, "releasing is not a use");
    assert_eq!(s["is_usable"], true);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
    let again = app.leased(&pool, 60.0).await;
    assert_eq!(id_of(&again), id);
    assert_ne!(again["lease"]["id"].as_str().unwrap(), lease_id, "a new lease");
}

#[tokio::test]
async fn release_with_another_id_is_lease_mismatch_and_the_lease_stays() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    let before = app.session(&pool, &id).await;
    assert_problem(app.release(&pool, &id, "nope").await, 409, "lease_mismatch").await;
    assert_problem(app.release(&pool, &id, &format!("{lease_id}x")).await, 409, "lease_mismatch").await;
    assert_eq!(app.session(&pool, &id).await, before);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 1);
    assert_problem(app.acquire(&pool).await, 503, "no_session_available").await;
}

#[tokio::test]
async fn a_used_lease_id_is_stale_for_a_second_release_and_for_a_later_lease() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    expect_json(app.release(&pool, &id, &lease_id).await, 200).await;
    assert_problem(app.release(&pool, &id, &lease_id).await, 409, "lease_mismatch").await;
    let again = app.leased(&pool, 60.0).await;
    assert_problem(app.release(&pool, &id, &lease_id).await, 409, "lease_mismatch").await;
    // The old lease id does not end the new lease through a report either.
    let s = expect_json(app.mark_good(&pool, &id, Some(&lease_id)).await, 200).await;
    assert_eq!(s["usage_count"], 1, "a stale lease id still applies the mark");
    assert_eq!(s["leased_until"], again["leased_until"]);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 1);
}

#[tokio::test]
async fn release_of_a_session_that_is_not_leased_is_lease_mismatch() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "free"})).await;
    assert_problem(app.release(&pool, "free", "any").await, 409, "lease_mismatch").await;
}

#[tokio::test]
async fn release_requires_a_lease_id() {
    let app = spawn_app().await;
    let (pool, id, _) = leased_one(&app, 1, 60.0).await;
    let path = format!("/v1/pools/{pool}/sessions/{id}/release");
    for body in [None, Some(json!({})), Some(json!({"lease_id": null})), Some(json!({"lease_id": 5}))] {
        let resp = app.send_json(reqwest::Method::POST, &path, body.as_ref()).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 1);
}

#[tokio::test]
async fn release_on_a_retired_session_answers_200_with_any_id() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    let retired = expect_json(app.retire(&pool, &id, None).await, 200).await;
    for lease in ["whatever", lease_id.as_str()] {
        let s = expect_json(app.release(&pool, &id, lease).await, 200).await;
        assert_eq!(s, retired);
    }
    // Also on a session that was never leased.
    app.new_session(&pool, &json!({"id": "never-leased"})).await;
    let retired = expect_json(app.retire(&pool, "never-leased", None).await, 200).await;
    let s = expect_json(app.release(&pool, "never-leased", "x").await, 200).await;
    assert_eq!(s, retired);
}

#[tokio::test]
async fn reports_carrying_the_lease_id_end_the_lease() {
    let app = spawn_app().await;
    for verb in ["mark_good", "mark_bad", "status_code"] {
        let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
        let s = match verb {
            "mark_good" => expect_json(app.mark_good(&pool, &id, Some(&lease_id)).await, 200).await,
            "mark_bad" => expect_json(app.mark_bad(&pool, &id, Some(&lease_id)).await, 200).await,
            _ => {
                let body = json!({"status_code": 200, "lease_id": lease_id});
                expect_json(app.status_code(&pool, &id, &body).await, 200).await["session"].clone()
            }
        };
        assert_eq!(s["leased_until"], Value::Null, "{verb} with the lease id");
        assert_eq!(s["is_usable"], true);
        assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0, "{verb}");
        let again = app.leased(&pool, 60.0).await;
        assert_eq!(id_of(&again), id, "{verb}: the session is free again");
    }
}

#[tokio::test]
async fn retire_carrying_the_lease_id_ends_the_lease() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    let s = expect_json(app.retire(&pool, &id, Some(&lease_id)).await, 200).await;
    assert_eq!(s["leased_until"], Value::Null);
    assert_eq!(s["retired_reason"], "retired");
    let status = app.pool_status(&pool).await;
    assert_eq!(status["leased_session_count"], 0);
    // A replacement is created and can be leased.
    let next = app.leased(&pool, 60.0).await;
    assert_ne!(id_of(&next), id);
}

#[tokio::test]
async fn reports_without_the_lease_id_apply_but_the_lease_stays() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    let leased_until = app.session(&pool, &id).await["leased_until"].clone();
    assert!(leased_until.is_string());
    let s = expect_json(app.mark_good(&pool, &id, None).await, 200).await;
    assert_eq!(s["usage_count"], 1);
    assert_eq!(s["leased_until"], leased_until);
    let s = expect_json(app.mark_bad(&pool, &id, Some("stale-or-unknown")).await, 200).await;
    assert_eq!(s["usage_count"], 2);
    assert_eq!(s["error_score"], 1.0);
    assert_eq!(s["leased_until"], leased_until);
    let r = expect_json(app.status_code(&pool, &id, &json!({"status_code": 200, "mark": true})).await, 200).await;
    assert_eq!(r["session"]["usage_count"], 3);
    assert_eq!(r["session"]["leased_until"], leased_until);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 1);
    assert_problem(app.acquire(&pool).await, 503, "no_session_available").await;
    // The right id still releases it.
    expect_json(app.release(&pool, &id, &lease_id).await, 200).await;
}

#[tokio::test]
async fn retire_without_the_lease_id_still_ends_the_lease() {
    let app = spawn_app().await;
    let (pool, id, _) = leased_one(&app, 1, 60.0).await;
    let s = expect_json(app.retire(&pool, &id, None).await, 200).await;
    assert_eq!(s["leased_until"], Value::Null);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
    assert_eq!(app.ids(&pool, "leased").await.len(), 0);
}

#[tokio::test]
async fn retirement_by_marks_or_a_blocking_code_ends_the_lease() {
    let app = spawn_app().await;
    let (pool, id, _) = leased_one(&app, 1, 60.0).await;
    for _ in 0..3 {
        expect_json(app.mark_bad(&pool, &id, None).await, 200).await;
    }
    let s = app.session(&pool, &id).await;
    assert_eq!(s["retired_reason"], "blocked");
    assert_eq!(s["leased_until"], Value::Null);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);

    let (pool, id, _) = leased_one(&app, 1, 60.0).await;
    let r = expect_json(app.status_code(&pool, &id, &json!({"status_code": 403})).await, 200).await;
    assert_eq!(r["session"]["leased_until"], Value::Null);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
}

#[tokio::test]
async fn plain_acquires_never_hand_out_a_leased_session() {
    let app = spawn_app().await;
    let (pool, leased_id, _) = leased_one(&app, 3, 60.0).await;
    for _ in 0..60 {
        let s = app.acquired(&pool).await;
        assert_ne!(id_of(&s), leased_id);
        assert_eq!(s["leased_until"], Value::Null);
    }
}

#[tokio::test]
async fn a_lease_frees_the_session_when_it_runs_out() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 1.0).await;
    assert_problem(app.acquire(&pool).await, 503, "no_session_available").await;
    eventually(Duration::from_secs(10), "the lease runs out", || async {
        app.session(&pool, &id).await["leased_until"].is_null()
    })
    .await;
    let s = app.session(&pool, &id).await;
    assert_eq!(s["usage_count"], 0);
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
    assert_eq!(app.ids(&pool, "leased").await.len(), 0);
    // The ended lease's id is stale now.
    assert_problem(app.release(&pool, &id, &lease_id).await, 409, "lease_mismatch").await;
    let again = app.leased(&pool, 30.0).await;
    assert_eq!(id_of(&again), id);
}

#[tokio::test]
async fn a_fractional_lease_runs_out_too() {
    let app = spawn_app().await;
    let (pool, id, _) = leased_one(&app, 1, 0.5).await;
    let s = app.session(&pool, &id).await;
    assert!(ts(&s["leased_until"]) - ts(&s["created_at"]) >= secs_to_nanos(0.5));
    // Free before a whole second is over: the half second is not rounded up.
    eventually(Duration::from_millis(950), "the half-second lease runs out", || async {
        app.session(&pool, &id).await["leased_until"].is_null()
    })
    .await;
    assert_eq!(id_of(&app.acquired(&pool).await), id);
}

#[tokio::test]
async fn a_lease_ends_when_the_session_expires() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1, "session": {"max_age_secs": 1}})).await;
    let s = app.leased(&pool, 60.0).await;
    let id = id_of(&s);
    eventually(Duration::from_secs(10), "the leased session expires", || async {
        app.session(&pool, &id).await["retired_reason"] == "expired"
    })
    .await;
    let s = app.session(&pool, &id).await;
    assert_eq!(s["leased_until"], Value::Null);
    let status = app.pool_status(&pool).await;
    assert_eq!(status["leased_session_count"], 0);
    let next = app.leased(&pool, 60.0).await;
    assert_ne!(id_of(&next), id);
}

#[tokio::test]
async fn delete_pool_ends_its_leases() {
    let app = spawn_app().await;
    let (pool, id, lease_id) = leased_one(&app, 1, 60.0).await;
    assert_eq!(app.delete_pool(&pool).await.status().as_u16(), 204);
    let s = app.leased(&pool, 60.0).await;
    assert_ne!(id_of(&s), id);
    assert_ne!(s["lease"]["id"].as_str().unwrap(), lease_id);
}
