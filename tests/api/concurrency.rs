//! Every call on a pool is atomic: concurrent calls never overfill a pool, create a session or a pool
//! twice, or pass a limit.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;

use crate::helpers::{assert_problem, expect_json, spawn_app, spawn_app_with, unique_pool, TestApp};

/// Runs `n` copies of `f` at once and returns the status of each answer.
async fn concurrently<F, Fut>(app: &Arc<TestApp>, n: usize, f: F) -> Vec<u16>
where
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: Future<Output = reqwest::Response> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(app.clone(), i))).collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status().as_u16());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_first_acquires_fill_a_pool_exactly_to_max_pool_size() {
    let app = Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 5})).await;
    let p = pool.clone();
    let statuses = concurrently(&app, 30, move |app, _| {
        let p = p.clone();
        async move { app.acquire(&p).await }
    })
    .await;
    assert_eq!(count(&statuses, 200), 30, "{statuses:?}");
    let status = app.pool_status(&pool).await;
    assert_eq!(status["session_count"], 5);
    assert_eq!(status["usable_session_count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_acquires_in_a_missing_pool_create_it_once() {
    let app = Arc::new(spawn_app_with(|c| c.max_pool_size = 4).await);
    let pool = unique_pool();
    let p = pool.clone();
    let statuses = concurrently(&app, 20, move |app, _| {
        let p = p.clone();
        async move { app.acquire(&p).await }
    })
    .await;
    assert_eq!(count(&statuses, 200), 20, "{statuses:?}");
    assert_eq!(app.pool_status(&pool).await["session_count"], 4);
    let list = expect_json(app.list_pools().await, 200).await;
    let named = list["pools"].as_array().unwrap().iter().filter(|p| p["name"] == pool.as_str()).count();
    assert_eq!(named, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_with_one_id_make_exactly_one_session() {
    let app = Arc::new(spawn_app().await);
    let pool = unique_pool();
    let p = pool.clone();
    let statuses = concurrently(&app, 20, move |app, i| {
        let p = p.clone();
        async move { app.create_session(&p, &json!({"id": "only", "user_data": {"writer": i}})).await }
    })
    .await;
    assert_eq!(count(&statuses, 201), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 19, "{statuses:?}");
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
    assert_problem(app.create_session(&pool, &json!({"id": "only"})).await, 409, "session_exists").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_new_pools_never_pass_max_pools() {
    let app = Arc::new(spawn_app_with(|c| c.max_pools = 3).await);
    let statuses =
        concurrently(&app, 12, move |app, _| async move { app.put_pool(&unique_pool(), &json!({})).await }).await;
    assert_eq!(count(&statuses, 201), 2, "default counts: {statuses:?}");
    assert_eq!(count(&statuses, 409), 10, "{statuses:?}");
    let list = expect_json(app.list_pools().await, 200).await;
    assert_eq!(list["pools"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_never_pass_max_sessions() {
    let app = Arc::new(spawn_app_with(|c| c.max_sessions = 10).await);
    let (a, b) = (unique_pool(), unique_pool());
    let (pa, pb) = (a.clone(), b.clone());
    let statuses = concurrently(&app, 30, move |app, i| {
        let p = if i % 2 == 0 { pa.clone() } else { pb.clone() };
        async move { app.create_session(&p, &json!({})).await }
    })
    .await;
    assert_eq!(count(&statuses, 201), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 20, "{statuses:?}");
    let held = app.pool_status(&a).await["session_count"].as_u64().unwrap()
        + app.pool_status(&b).await["session_count"].as_u64().unwrap();
    assert_eq!(held, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_acquires_never_hand_out_a_session_retired_before_they_started() {
    let app = Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 4})).await;
    for _ in 0..5 {
        let victim = crate::helpers::id_of(&app.acquired(&pool).await);
        expect_json(app.retire(&pool, &victim, None).await, 200).await;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (app, pool) = (app.clone(), pool.clone());
                tokio::spawn(async move { app.acquired(&pool).await })
            })
            .collect();
        for t in tasks {
            let s = t.await.unwrap();
            assert_ne!(s["id"], victim.as_str());
            assert_eq!(s["is_usable"], true);
        }
    }
    let status = app.pool_status(&pool).await;
    assert_eq!(status["usable_session_count"], 4);
    assert_eq!(status["retired_session_count"], 5);
}
