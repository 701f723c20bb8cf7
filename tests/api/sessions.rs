//! Sessions: their shape and defaults, create, read, delete and PATCH.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::eventually;
use crate::helpers::{
    assert_problem, assert_session_shape, expect_json, id_of, num, secs_to_nanos, spawn_app, spawn_app_with, ts,
    unique_pool,
};

fn is_simple_uuid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Asserts the defaults of docs/semantics.md on a fresh session.
fn assert_fresh_with_defaults(s: &Value, pool: &str) {
    assert_session_shape(s, false);
    assert!(is_simple_uuid(s["id"].as_str().unwrap()), "id {}", s["id"]);
    assert_eq!(s["pool"], pool);
    assert_eq!(s["max_age_secs"], 3000.0);
    assert_eq!(s["max_usage_count"], 50);
    assert_eq!(s["max_error_score"], 3.0);
    assert_eq!(s["error_score_decrement"], 0.5);
    assert_eq!(s["blocked_status_codes"], json!([401, 403, 429]));
    assert_eq!(s["usage_count"], 0);
    assert_eq!(s["error_score"], 0.0);
    assert_eq!(s["user_data"], json!({}));
    assert_eq!(s["cookies"], json!([]));
    assert_eq!(s["proxy_url"], Value::Null);
    for flag in ["is_blocked", "is_expired", "is_max_usage_count_reached", "retired"] {
        assert_eq!(s[flag], false, "{flag} of {s}");
    }
    assert_eq!(s["is_usable"], true);
    assert_eq!(s["retired_reason"], Value::Null);
    assert_eq!(s["retired_at"], Value::Null);
    assert_eq!(s["leased_until"], Value::Null);
    for key in ["created_at", "expires_at"] {
        assert!(s[key].as_str().unwrap().ends_with('Z'), "{key} of {s}");
    }
    assert_eq!(
        ts(&s["expires_at"]) - ts(&s["created_at"]),
        secs_to_nanos(3000.0),
        "expires_at = created_at + max_age_secs in {s}"
    );
}

#[tokio::test]
async fn acquire_returns_a_full_session_with_crawlee_defaults() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app.acquired(&pool).await;
    assert_fresh_with_defaults(&s, &pool);
}

#[tokio::test]
async fn create_without_a_body_returns_a_full_session_with_defaults() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let resp = app.request(reqwest::Method::POST, &format!("/v1/pools/{pool}/sessions"), None, None).await;
    let s = expect_json(resp, 201).await;
    assert_fresh_with_defaults(&s, &pool);
    assert_eq!(app.session(&pool, &id_of(&s)).await, s);
}

#[tokio::test]
async fn generated_ids_are_distinct_simple_uuids() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let s = app.new_session(&pool, &json!({})).await;
        let id = id_of(&s);
        assert!(is_simple_uuid(&id), "{id}");
        assert!(ids.insert(id), "a generated id repeated");
    }
}

#[tokio::test]
async fn create_with_an_own_id_answers_201_with_a_location_header() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let resp = app.create_session(&pool, &json!({"id": "test_session", "user_data": {"user_key": "user_value"}})).await;
    let location = resp.headers().get("location").expect("a Location header").to_str().unwrap().to_owned();
    assert!(location.ends_with(&format!("/v1/pools/{pool}/sessions/test_session")), "Location {location}");
    let created = expect_json(resp, 201).await;
    assert_eq!(created["id"], "test_session");
    assert_eq!(created["pool"], pool.as_str());
    assert_eq!(created["user_data"], json!({"user_key": "user_value"}));
    assert_eq!(app.session(&pool, "test_session").await, created);
}

#[tokio::test]
async fn session_ids_with_every_allowed_character_and_128_long_are_accepted() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for id in ["a~b.c_d-E9", "x", &"z".repeat(128)] {
        let s = app.new_session(&pool, &json!({ "id": id })).await;
        assert_eq!(s["id"], id);
        assert_eq!(app.session(&pool, id).await["id"], id);
    }
}

#[tokio::test]
async fn create_with_an_existing_id_is_409_and_overwrites_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "dup", "user_data": {"v": 1}})).await;
    let resp = app.create_session(&pool, &json!({"id": "dup", "user_data": {"v": 2}, "max_usage_count": 2})).await;
    assert_problem(resp, 409, "session_exists").await;
    let s = app.session(&pool, "dup").await;
    assert_eq!(s["user_data"], json!({"v": 1}));
    assert_eq!(s["max_usage_count"], 50);
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
}

#[tokio::test]
async fn the_same_id_may_exist_in_two_pools() {
    let app = spawn_app().await;
    let (a, b) = (unique_pool(), unique_pool());
    app.new_session(&a, &json!({"id": "same", "user_data": {"p": "a"}})).await;
    app.new_session(&b, &json!({"id": "same", "user_data": {"p": "b"}})).await;
    assert_eq!(app.session(&a, "same").await["user_data"], json!({"p": "a"}));
    assert_eq!(app.session(&b, "same").await["user_data"], json!({"p": "b"}));
}

#[tokio::test]
async fn seed_style_cookies_object_gets_the_documented_defaults() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app
        .new_session(
            &pool,
            &json!({
                "id": "test_session",
                "user_data": {"user_key": "user_value"},
                "cookies": {"cookie_key": "cookie_value"},
                "max_usage_count": 10,
                "max_age_secs": 1800,
            }),
        )
        .await;
    assert_eq!(s["max_usage_count"], 10);
    assert_eq!(s["max_age_secs"], 1800.0);
    assert_eq!(ts(&s["expires_at"]) - ts(&s["created_at"]), secs_to_nanos(1800.0));
    assert_eq!(
        s["cookies"],
        json!([{
            "name": "cookie_key", "value": "cookie_value", "domain": "", "path": "/",
            "secure": false, "http_only": false,
        }]),
        "expires and same_site must be absent, not null"
    );
}

#[tokio::test]
async fn cookie_list_form_fills_defaults_and_keeps_every_given_field() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app
        .new_session(
            &pool,
            &json!({"cookies": [
                {"name": "plain", "value": "1"},
                {"name": "full", "value": "2", "domain": ".example.com", "path": "/app",
                 "secure": true, "http_only": true, "expires": 1_900_000_000_i64, "same_site": "Lax"},
                {"name": "strict", "value": "3", "domain": "example.com", "same_site": "Strict"},
                {"name": "none", "value": "4", "secure": true, "same_site": "None"},
            ]}),
        )
        .await;
    let cookies = cookie_map(&s);
    assert_eq!(
        cookies[&key("", "/", "plain")],
        json!({"name": "plain", "value": "1", "domain": "", "path": "/", "secure": false, "http_only": false})
    );
    assert_eq!(
        cookies[&key(".example.com", "/app", "full")],
        json!({"name": "full", "value": "2", "domain": ".example.com", "path": "/app",
               "secure": true, "http_only": true, "expires": 1_900_000_000_i64, "same_site": "Lax"})
    );
    assert_eq!(cookies[&key("example.com", "/", "strict")]["same_site"], "Strict");
    assert_eq!(cookies[&key("", "/", "none")]["same_site"], "None");
    assert!(cookies[&key("example.com", "/", "strict")].get("expires").is_none());
    assert_eq!(cookies.len(), 4);
}

#[tokio::test]
async fn per_session_settings_override_the_pool_settings() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(
        &pool,
        &json!({"session": {"max_usage_count": 7, "max_error_score": 5.0,
                            "error_score_decrement": 0.25, "blocked_status_codes": [500]}}),
    )
    .await;
    let own =
        app.new_session(&pool, &json!({"max_usage_count": 10, "max_age_secs": 1800, "blocked_status_codes": []})).await;
    assert_eq!(own["max_usage_count"], 10);
    assert_eq!(own["max_age_secs"], 1800.0);
    assert_eq!(own["max_error_score"], 5.0, "not given: from the pool");
    assert_eq!(own["error_score_decrement"], 0.25, "not given: from the pool");
    assert_eq!(own["blocked_status_codes"], json!([]));
    let inherited = app.new_session(&pool, &json!({})).await;
    assert_eq!(inherited["max_usage_count"], 7);
    assert_eq!(inherited["max_age_secs"], 3000.0);
    assert_eq!(inherited["blocked_status_codes"], json!([500]));
}

#[tokio::test]
async fn fractional_max_age_secs_is_accepted_and_sets_expires_at() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app.new_session(&pool, &json!({"max_age_secs": 0.25})).await;
    assert_eq!(s["max_age_secs"], 0.25);
    assert_eq!(ts(&s["expires_at"]) - ts(&s["created_at"]), secs_to_nanos(0.25));
}

#[tokio::test]
async fn boundary_settings_are_accepted() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let s = app
        .new_session(
            &pool,
            &json!({"max_age_secs": 315_576_000, "max_usage_count": 1, "max_error_score": 0.25,
                    "error_score_decrement": 0, "blocked_status_codes": [100, 599]}),
        )
        .await;
    assert_eq!(s["max_age_secs"], 315_576_000.0);
    assert_eq!(s["max_usage_count"], 1);
    assert_eq!(s["error_score_decrement"], 0.0);
    assert_eq!(s["blocked_status_codes"], json!([100, 599]));
    assert_eq!(s["is_usable"], true);
    let big = app.new_session(&pool, &json!({"max_usage_count": 4_294_967_295_u64})).await;
    assert_eq!(big["max_usage_count"], 4_294_967_295_u64);
}

#[tokio::test]
async fn create_refuses_counters_and_state_as_input() {
    let app = spawn_app().await;
    let pool = unique_pool();
    // Counters are not input: trying to set them is an unknown field.
    for field in ["usage_count", "error_score", "retired", "leased_until", "pool"] {
        let resp = app.create_session(&pool, &json!({ field: 1 })).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    let s = app.new_session(&pool, &json!({"id": "fresh"})).await;
    assert_eq!(s["usage_count"], 0);
    assert_eq!(s["error_score"], 0.0);
    assert_eq!(s["leased_until"], Value::Null);
}

#[tokio::test]
async fn a_retired_session_stays_readable_with_is_usable_false() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(&app.new_session(&pool, &json!({})).await);
    expect_json(app.retire(&pool, &id, None).await, 200).await;
    let s = app.session(&pool, &id).await;
    assert_eq!(s["is_usable"], false);
    assert_eq!(s["retired"], true);
}

#[tokio::test]
async fn retired_sessions_are_purged_after_the_retention() {
    let app = spawn_app_with(|c| c.retired_retention_secs = 0.2).await;
    let pool = unique_pool();
    let id = id_of(&app.new_session(&pool, &json!({})).await);
    let keep = id_of(&app.new_session(&pool, &json!({})).await);
    expect_json(app.retire(&pool, &id, None).await, 200).await;
    eventually(Duration::from_secs(10), "the retired session is purged", || async {
        app.get_session(&pool, &id).await.status() == 404
    })
    .await;
    assert_problem(app.get_session(&pool, &id).await, 404, "session_not_found").await;
    let status = app.pool_status(&pool).await;
    assert_eq!(status["session_count"], 1);
    assert_eq!(status["retired_session_count"], 0);
    assert_eq!(app.session(&pool, &keep).await["is_usable"], true);
}

#[tokio::test]
async fn delete_session_answers_204_then_404() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(&app.new_session(&pool, &json!({})).await);
    let resp = app.delete_session(&pool, &id).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
    assert_problem(app.get_session(&pool, &id).await, 404, "session_not_found").await;
    assert_problem(app.delete_session(&pool, &id).await, 404, "session_not_found").await;
    assert_eq!(app.pool_status(&pool).await["session_count"], 0);
}

#[tokio::test]
async fn deleting_a_leased_or_retired_session_works_and_the_id_can_be_reused() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1})).await;
    let leased = app.leased(&pool, 60.0).await;
    let id = id_of(&leased);
    assert_eq!(app.delete_session(&pool, &id).await.status().as_u16(), 204);
    let status = app.pool_status(&pool).await;
    assert_eq!(status["leased_session_count"], 0);
    assert_eq!(status["session_count"], 0);
    app.new_session(&pool, &json!({"id": "reuse"})).await;
    expect_json(app.retire(&pool, "reuse", None).await, 200).await;
    assert_eq!(app.delete_session(&pool, "reuse").await.status().as_u16(), 204);
    let again = app.new_session(&pool, &json!({"id": "reuse"})).await;
    assert_eq!(again["retired"], false, "a new session under an old id");
}

fn key(domain: &str, path: &str, name: &str) -> (String, String, String) {
    (domain.to_owned(), path.to_owned(), name.to_owned())
}

fn cookie_map(session: &Value) -> BTreeMap<(String, String, String), Value> {
    let mut map = BTreeMap::new();
    for c in session["cookies"].as_array().expect("cookies list") {
        let k = key(c["domain"].as_str().unwrap(), c["path"].as_str().unwrap(), c["name"].as_str().unwrap());
        assert!(map.insert(k, c.clone()).is_none(), "duplicate cookie key in {session}");
    }
    map
}

#[tokio::test]
async fn patch_merges_user_data_as_a_json_merge_patch() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(
        &app.new_session(
            &pool,
            &json!({"user_data": {"a": 1, "b": {"c": 2, "e": [1, 2]}, "keep": true, "s": {"t": 1}}}),
        )
        .await,
    );
    let s = expect_json(
        app.patch_session(
            &pool,
            &id,
            &json!({"user_data": {"a": null, "b": {"d": 3, "e": [3]}, "n": {"x": null, "y": 1},
                                  "s": "scalar", "missing": null}}),
        )
        .await,
        200,
    )
    .await;
    let expected = json!({"b": {"c": 2, "d": 3, "e": [3]}, "keep": true, "n": {"y": 1}, "s": "scalar"});
    assert_eq!(s["user_data"], expected);
    assert_eq!(app.session(&pool, &id).await["user_data"], expected);
    // An object replaces a scalar, and a nested null deletes a nested key.
    let s =
        expect_json(app.patch_session(&pool, &id, &json!({"user_data": {"s": {"u": 1}, "b": {"c": null}}})).await, 200)
            .await;
    assert_eq!(s["user_data"], json!({"b": {"d": 3, "e": [3]}, "keep": true, "n": {"y": 1}, "s": {"u": 1}}));
}

#[tokio::test]
async fn patch_upserts_cookies_by_domain_path_and_name() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(
        &app.new_session(
            &pool,
            &json!({"cookies": [
                {"name": "sid", "value": "1", "domain": "example.com"},
                {"name": "sid", "value": "2", "domain": ".example.com"},
                {"name": "theme", "value": "dark"},
            ]}),
        )
        .await,
    );
    let s = expect_json(
        app.patch_session(
            &pool,
            &id,
            &json!({"cookies": [
                {"name": "sid", "value": "3", "domain": "example.com", "secure": true},
                {"name": "sid", "value": "9", "domain": "example.com", "path": "/app"},
                {"name": "new", "value": "x"},
            ]}),
        )
        .await,
        200,
    )
    .await;
    let cookies = cookie_map(&s);
    assert_eq!(cookies.len(), 5, "{s}");
    assert_eq!(cookies[&key("example.com", "/", "sid")]["value"], "3");
    assert_eq!(cookies[&key("example.com", "/", "sid")]["secure"], true);
    assert_eq!(cookies[&key(".example.com", "/", "sid")]["value"], "2");
    assert_eq!(cookies[&key("example.com", "/app", "sid")]["value"], "9");
    assert_eq!(cookies[&key("", "/", "theme")]["value"], "dark");
    assert_eq!(cookies[&key("", "/", "new")]["value"], "x");

    // The object form upserts host-less cookies.
    let s =
        expect_json(app.patch_session(&pool, &id, &json!({"cookies": {"theme": "light", "lang": "en"}})).await, 200)
            .await;
    let cookies = cookie_map(&s);
    assert_eq!(cookies.len(), 6, "{s}");
    assert_eq!(cookies[&key("", "/", "theme")]["value"], "light");
    assert_eq!(cookies[&key("", "/", "lang")]["value"], "en");
    assert_eq!(cookies[&key("example.com", "/", "sid")]["value"], "3");
    assert_eq!(app.session(&pool, &id).await["cookies"], s["cookies"]);
}

#[tokio::test]
async fn patch_leaves_counters_lease_and_settings_alone() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1})).await;
    let leased = app.leased(&pool, 60.0).await;
    let id = id_of(&leased);
    expect_json(app.mark_bad(&pool, &id, None).await, 200).await;
    let before = app.session(&pool, &id).await;
    let after = expect_json(app.patch_session(&pool, &id, &json!({"user_data": {"k": "v"}})).await, 200).await;
    let mut expected = before.clone();
    expected["user_data"] = json!({"k": "v"});
    assert_eq!(after, expected);
    // An empty patch changes nothing.
    let same = expect_json(app.patch_session(&pool, &id, &json!({})).await, 200).await;
    assert_eq!(same, expected);
}

#[tokio::test]
async fn patch_of_an_unknown_session_or_pool_is_404() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    let body = json!({"user_data": {"a": 1}});
    assert_problem(app.patch_session(&pool, "nope", &body).await, 404, "session_not_found").await;
    assert_problem(app.patch_session(&unique_pool(), "nope", &body).await, 404, "pool_not_found").await;
}

#[tokio::test]
async fn patch_rejects_bad_cookies_and_unknown_fields_and_changes_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(&app.new_session(&pool, &json!({"user_data": {"a": 1}, "cookies": {"c": "1"}})).await);
    let before = app.session(&pool, &id).await;
    for body in [
        json!({"user_data": {"a": 2}, "bogus": 1}),
        json!({"cookies": [{"name": "x"}]}),
        json!({"cookies": [{"value": "x"}]}),
        json!({"cookies": [{"name": "x", "value": "y", "color": "red"}]}),
        json!({"cookies": [{"name": "x", "value": "y", "same_site": "Sometimes"}]}),
        json!({"cookies": [{"name": "x", "value": "y", "secure": "yes"}]}),
        json!({"cookies": {"x": 1}}),
        json!({"cookies": "x=y"}),
        json!({"user_data": {"b": 1}, "cookies": [{"name": "x", "value": "y", "expires": 1.5}]}),
        json!({"user_data": "not an object"}),
    ] {
        let resp = app.patch_session(&pool, &id, &body).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.session(&pool, &id).await, before);
}

#[tokio::test]
async fn get_session_answers_the_same_session_that_create_returned() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let created = app
        .new_session(
            &pool,
            &json!({"id": "s1", "user_data": {"nested": {"list": [1, "two", null, 3.5]}},
                    "cookies": {"a": "b"}, "proxy_url": "socks5h://proxy.example:1080"}),
        )
        .await;
    let got = app.session(&pool, "s1").await;
    assert_eq!(got, created);
    assert_eq!(got["proxy_url"], "socks5h://proxy.example:1080");
    assert_eq!(num(&got["error_score"]), 0.0);
}
