//! Listing sessions: state filters, paging by cursor in id order, query validation.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, assert_session_shape, encode, expect_json, id_of, spawn_app, unique_pool, TestApp,
};

/// Every page of `state` with `limit`, checking each page's size and order; returns the ids.
async fn page_through(app: &TestApp, pool: &str, state: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut query = format!("state={state}&limit={limit}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = expect_json(app.list_sessions(pool, &query).await, 200).await;
        let keys: BTreeSet<&String> = page.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "a page is {{sessions, next_cursor}}: {page}");
        let sessions = page["sessions"].as_array().expect("sessions");
        assert!(sessions.len() <= limit, "limit ignored");
        for s in sessions {
            assert_session_shape(s, false);
            seen.push(id_of(s));
        }
        match &page["next_cursor"] {
            Value::Null => return seen,
            Value::String(c) => {
                assert!(!sessions.is_empty(), "an empty page with a next_cursor");
                cursor = Some(c.clone());
            }
            other => panic!("next_cursor {other}"),
        }
    }
    panic!("paging never ended");
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

#[tokio::test]
async fn list_filters_by_state() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    let ids: Vec<String> = (0..5).map(|i| format!("s{i:02}")).collect();
    for id in &ids {
        app.new_session(&pool, &json!({ "id": id })).await;
    }
    expect_json(app.retire(&pool, &ids[0], None).await, 200).await;
    for _ in 0..3 {
        expect_json(app.mark_bad(&pool, &ids[1], None).await, 200).await;
    }
    let leased = id_of(&app.leased(&pool, 60.0).await);
    assert!(ids[2..].contains(&leased));

    let usable = page_through(&app, &pool, "usable", 100).await;
    assert_eq!(usable, ids[2..].to_vec(), "usable includes leased ones");
    let retired = page_through(&app, &pool, "retired", 100).await;
    assert_eq!(retired, ids[..2].to_vec());
    let leased_list = page_through(&app, &pool, "leased", 100).await;
    assert_eq!(leased_list, vec![leased.clone()]);
    let all = page_through(&app, &pool, "all", 100).await;
    assert_eq!(all, ids);

    // Without a state the list is `all`.
    let page = expect_json(app.list_sessions(&pool, "").await, 200).await;
    let default_ids: Vec<String> = page["sessions"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(default_ids, ids);
    assert_eq!(page["next_cursor"], Value::Null);
    for s in page["sessions"].as_array().unwrap() {
        let retired = ids[..2].contains(&id_of(s));
        assert_eq!(s["is_usable"], !retired);
        assert_eq!(s["leased_until"].is_string(), id_of(s) == leased);
    }
}

#[tokio::test]
async fn paging_returns_every_session_once_in_id_order() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 11})).await;
    app.acquired(&pool).await;
    let mut ids: Vec<String> = Vec::new();
    for id in ["A", "a", "Z-1", "z.2", "m~3", "0_x"] {
        ids.push(id_of(&app.new_session(&pool, &json!({ "id": id })).await));
    }
    let all = page_through(&app, &pool, "all", 1000).await;
    assert_eq!(all.len(), 17);
    assert_eq!(all, sorted(&all), "id order");
    for limit in [1, 2, 3, 16, 17, 18] {
        let paged = page_through(&app, &pool, "all", limit).await;
        assert_eq!(paged, all, "limit {limit}");
    }
    for id in &ids {
        assert!(all.contains(id));
    }
}

#[tokio::test]
async fn paging_with_a_filter_loses_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    let ids: Vec<String> = (0..12).map(|i| format!("id{i:02}")).collect();
    for id in &ids {
        app.new_session(&pool, &json!({ "id": id })).await;
    }
    for id in ids.iter().step_by(3) {
        expect_json(app.retire(&pool, id, None).await, 200).await;
    }
    let retired: Vec<String> = ids.iter().step_by(3).cloned().collect();
    let usable: Vec<String> = ids.iter().filter(|i| !retired.contains(i)).cloned().collect();
    for limit in [1, 2, 5] {
        assert_eq!(page_through(&app, &pool, "retired", limit).await, retired);
        assert_eq!(page_through(&app, &pool, "usable", limit).await, usable);
    }
}

#[tokio::test]
async fn the_default_limit_is_100() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 105})).await;
    app.acquired(&pool).await;
    let page = expect_json(app.list_sessions(&pool, "").await, 200).await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 100);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let next = expect_json(app.list_sessions(&pool, &format!("cursor={}", encode(&cursor))).await, 200).await;
    assert_eq!(next["sessions"].as_array().unwrap().len(), 5);
    assert_eq!(next["next_cursor"], Value::Null);
    let page = expect_json(app.list_sessions(&pool, "limit=1000").await, 200).await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 105);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_session_deleted_at_the_page_boundary_does_not_make_paging_skip_the_next_one() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    for id in ["a", "b", "c", "d", "e", "f"] {
        app.new_session(&pool, &json!({ "id": id })).await;
    }
    let page = expect_json(app.list_sessions(&pool, "limit=2").await, 200).await;
    let first: Vec<String> = page["sessions"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(first, ["a", "b"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(app.delete_session(&pool, "b").await.status().as_u16(), 204);
    app.new_session(&pool, &json!({"id": "bb"})).await;
    let mut rest = Vec::new();
    let mut cursor = Some(cursor);
    while let Some(c) = cursor {
        let page = expect_json(app.list_sessions(&pool, &format!("limit=2&cursor={}", encode(&c))).await, 200).await;
        rest.extend(page["sessions"].as_array().unwrap().iter().map(id_of));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(rest, ["bb", "c", "d", "e", "f"]);
}

#[tokio::test]
async fn an_empty_pool_lists_no_sessions_and_no_cursor() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({})).await;
    let page = expect_json(app.list_sessions(&pool, "state=leased").await, 200).await;
    assert_eq!(page, json!({"sessions": [], "next_cursor": null}));
}

#[tokio::test]
async fn bad_state_or_limit_is_400() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    for query in [
        "state=bogus",
        "state=USABLE",
        "state=",
        "limit=0",
        "limit=1001",
        "limit=x",
        "limit=-1",
        "limit=1.5",
        "limit=99999999999999999999999",
    ] {
        let body = assert_problem(app.list_sessions(&pool, query).await, 400, "invalid_request").await;
        let detail = body["detail"].as_str().unwrap();
        let (field, value) = query.split_once('=').unwrap();
        assert!(
            detail.contains(field) || (!value.is_empty() && detail.contains(value)),
            "detail names {field} or {value:?}: {detail}"
        );
    }
    for query in ["limit=1", "limit=1000", "state=all", "state=usable&limit=7"] {
        expect_json(app.list_sessions(&pool, query).await, 200).await;
    }
}
