//! Pools: implicit and explicit creation, PUT replaces, listing, deletion, counts, sizes, proxies.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, expect_json, id_of, spawn_app, spawn_app_with, ts, unique_pool};

fn default_config() -> Value {
    json!({
        "max_pool_size": 1000,
        "session": {"max_age_secs": 3000.0, "max_usage_count": 50, "max_error_score": 3.0,
                    "error_score_decrement": 0.5, "blocked_status_codes": [401, 403, 429]},
        "proxy_urls": [],
        "proxy_url_template": null,
    })
}

/// Asserts the PoolStatus shape and that its counts add up; returns it.
fn assert_pool_status(status: &Value, name: &str) {
    let keys: BTreeSet<&str> =
        status.as_object().expect("PoolStatus is an object").keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "name",
        "config",
        "session_count",
        "usable_session_count",
        "retired_session_count",
        "leased_session_count",
        "created_at",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "PoolStatus keys of {status}");
    assert_eq!(status["name"], name);
    let count = |k: &str| status[k].as_u64().unwrap_or_else(|| panic!("{k} in {status}"));
    assert_eq!(
        count("session_count"),
        count("usable_session_count") + count("retired_session_count"),
        "counts add up in {status}"
    );
    assert!(count("leased_session_count") <= count("usable_session_count"));
    ts(&status["created_at"]);
}

/// Compares a config with `expected`, numbers by value (3000 and 3000.0 alike).
fn assert_config(got: &Value, expected: &Value) {
    assert_eq!(got["max_pool_size"], expected["max_pool_size"], "{got}");
    for k in ["max_age_secs", "max_usage_count", "max_error_score", "error_score_decrement"] {
        assert_eq!(got["session"][k].as_f64(), expected["session"][k].as_f64(), "session.{k} of {got}");
    }
    assert_eq!(got["session"]["blocked_status_codes"], expected["session"]["blocked_status_codes"]);
    assert_eq!(got["proxy_urls"], expected["proxy_urls"]);
    assert_eq!(got["proxy_url_template"], expected["proxy_url_template"]);
    let session_keys: BTreeSet<&String> = got["session"].as_object().unwrap().keys().collect();
    assert_eq!(session_keys.len(), 5, "SessionSettings keys of {got}");
    assert_eq!(got.as_object().unwrap().len(), 4, "PoolConfig keys of {got}");
}

#[tokio::test]
async fn the_default_pool_exists_at_start_with_the_server_defaults() {
    let app = spawn_app().await;
    let list = expect_json(app.list_pools().await, 200).await;
    let pools = list["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 1, "{list}");
    assert_pool_status(&pools[0], "default");
    assert_config(&pools[0]["config"], &default_config());
    assert_eq!(pools[0]["session_count"], 0);
    let got = app.pool_status("default").await;
    assert_pool_status(&got, "default");
}

#[tokio::test]
async fn server_flags_are_the_default_pool_config() {
    let app = spawn_app_with(|c| {
        c.max_pool_size = 3;
        c.max_age_secs = 60.5;
        c.max_usage_count = 9;
        c.max_error_score = 4.0;
        c.error_score_decrement = 0.25;
        c.blocked_status_codes = session_pool::config::StatusCodes(vec![418]);
    })
    .await;
    let expected = json!({
        "max_pool_size": 3,
        "session": {"max_age_secs": 60.5, "max_usage_count": 9, "max_error_score": 4.0,
                    "error_score_decrement": 0.25, "blocked_status_codes": [418]},
        "proxy_urls": [], "proxy_url_template": null,
    });
    assert_config(&app.pool_status("default").await["config"], &expected);
    let pool = unique_pool();
    let s = app.acquired(&pool).await;
    assert_eq!(s["max_age_secs"], 60.5);
    assert_eq!(s["max_usage_count"], 9);
    assert_eq!(s["max_error_score"], 4.0);
    assert_eq!(s["error_score_decrement"], 0.25);
    assert_eq!(s["blocked_status_codes"], json!([418]));
    let status = app.pool_status(&pool).await;
    assert_config(&status["config"], &expected);
    assert_eq!(status["session_count"], 3);
    // PUT with an empty body takes these defaults too.
    let other = unique_pool();
    assert_config(&app.configure(&other, &json!({})).await["config"], &expected);
}

#[tokio::test]
async fn acquire_creates_a_missing_pool_with_the_default_config() {
    let app = spawn_app().await;
    let pool = unique_pool();
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    app.acquired(&pool).await;
    let status = app.pool_status(&pool).await;
    assert_pool_status(&status, &pool);
    assert_config(&status["config"], &default_config());
}

#[tokio::test]
async fn create_session_creates_a_missing_pool_with_the_default_config() {
    let app = spawn_app().await;
    let pool = unique_pool();
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    app.new_session(&pool, &json!({"id": "s"})).await;
    let status = app.pool_status(&pool).await;
    assert_pool_status(&status, &pool);
    assert_config(&status["config"], &default_config());
    assert_eq!(status["session_count"], 1);
    assert_eq!(status["usable_session_count"], 1);
}

#[tokio::test]
async fn reads_and_reports_never_create_a_pool() {
    let app = spawn_app().await;
    let pool = unique_pool();
    assert_problem(app.list_sessions(&pool, "").await, 404, "pool_not_found").await;
    assert_problem(app.get_session(&pool, "x").await, 404, "pool_not_found").await;
    assert_problem(app.mark_good(&pool, "x", None).await, 404, "pool_not_found").await;
    assert_problem(app.mark_bad(&pool, "x", None).await, 404, "pool_not_found").await;
    assert_problem(app.retire(&pool, "x", None).await, 404, "pool_not_found").await;
    assert_problem(app.release(&pool, "x", "l").await, 404, "pool_not_found").await;
    assert_problem(app.status_code(&pool, "x", &json!({"status_code": 200})).await, 404, "pool_not_found").await;
    assert_problem(app.delete_session(&pool, "x").await, 404, "pool_not_found").await;
    assert_problem(app.delete_pool(&pool).await, 404, "pool_not_found").await;
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    let list = expect_json(app.list_pools().await, 200).await;
    assert_eq!(list["pools"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn put_pool_answers_201_when_created_then_200() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let created = expect_json(app.put_pool(&pool, &json!({"max_pool_size": 5})).await, 201).await;
    assert_pool_status(&created, &pool);
    assert_eq!(created["config"]["max_pool_size"], 5);
    assert_eq!(created["session_count"], 0);
    let again = expect_json(app.put_pool(&pool, &json!({"max_pool_size": 6})).await, 200).await;
    assert_eq!(again["config"]["max_pool_size"], 6);
    assert_eq!(again["created_at"], created["created_at"], "still the same pool");
    assert_eq!(app.pool_status(&pool).await, again);
}

#[tokio::test]
async fn put_pool_on_an_implicitly_created_pool_answers_200() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    let resp = app.put_pool(&pool, &json!({"max_pool_size": 2})).await;
    assert_eq!(expect_json(resp, 200).await["session_count"], 1);
    let resp = app.put_pool("default", &json!({})).await;
    expect_json(resp, 200).await;
}

#[tokio::test]
async fn put_pool_replaces_and_a_missing_field_takes_the_server_default() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(
        &pool,
        &json!({
            "max_pool_size": 5,
            "session": {"max_usage_count": 7, "max_age_secs": 10, "blocked_status_codes": []},
            "proxy_urls": ["http://a.example:1"],
            "proxy_url_template": "http://u-{session_id}:p@gate.example:7000",
        }),
    )
    .await;
    let replaced = expect_json(app.put_pool(&pool, &json!({"session": {"max_age_secs": 60}})).await, 200).await;
    let mut expected = default_config();
    expected["session"]["max_age_secs"] = json!(60.0);
    assert_config(&replaced["config"], &expected);
    // And an empty body resets everything.
    let reset = expect_json(app.put_pool(&pool, &json!({})).await, 200).await;
    assert_config(&reset["config"], &default_config());
}

#[tokio::test]
async fn put_pool_without_a_body_configures_defaults() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let resp = app.request(reqwest::Method::PUT, &format!("/v1/pools/{pool}"), None, None).await;
    let status = expect_json(resp, 201).await;
    assert_config(&status["config"], &default_config());
}

#[tokio::test]
async fn pool_names_like_host_names_and_128_characters_are_valid() {
    let app = spawn_app().await;
    let long = format!("a{}", "b".repeat(127));
    for name in ["www.example.com", "A_b-c.9", "0", long.as_str()] {
        let resp = app.put_pool(name, &json!({})).await;
        let status = expect_json(resp, 201).await;
        assert_eq!(status["name"], name);
        let s = app.acquired(name).await;
        assert_eq!(s["pool"], name);
    }
}

#[tokio::test]
async fn list_pools_is_sorted_by_name() {
    let app = spawn_app().await;
    let names = ["zeta", "a-1", "a.1", "a1", "0z", "b", "a_1"];
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            app.configure(name, &json!({})).await;
        } else {
            app.acquired(name).await;
        }
    }
    let list = expect_json(app.list_pools().await, 200).await;
    let got: Vec<String> =
        list["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    let mut expected: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    expected.push("default".to_owned());
    expected.sort();
    assert_eq!(got, expected);
    for p in list["pools"].as_array().unwrap() {
        assert_pool_status(p, p["name"].as_str().unwrap());
    }
}

#[tokio::test]
async fn delete_pool_answers_204_then_404_and_removes_its_sessions() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2})).await;
    let old = id_of(&app.acquired(&pool).await);
    app.new_session(&pool, &json!({"id": "explicit"})).await;
    let resp = app.delete_pool(&pool).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_problem(app.delete_pool(&pool).await, 404, "pool_not_found").await;
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    assert_problem(app.get_session(&pool, &old).await, 404, "pool_not_found").await;
    let list = expect_json(app.list_pools().await, 200).await;
    assert!(!list["pools"].as_array().unwrap().iter().any(|p| p["name"] == pool.as_str()));
    // Acquire makes a brand-new pool with the defaults and none of the old sessions.
    app.acquired(&pool).await;
    let status = app.pool_status(&pool).await;
    assert_eq!(status["config"]["max_pool_size"], 1000);
    assert_eq!(status["session_count"], 1000);
    assert_problem(app.get_session(&pool, &old).await, 404, "session_not_found").await;
    assert_problem(app.get_session(&pool, "explicit").await, 404, "session_not_found").await;
}

#[tokio::test]
async fn deleting_default_empties_and_resets_it_but_it_still_exists() {
    let app = spawn_app().await;
    app.configure("default", &json!({"max_pool_size": 2, "session": {"max_usage_count": 3}})).await;
    let acquired = id_of(&app.acquired("default").await);
    app.new_session("default", &json!({"id": "mine"})).await;
    assert_eq!(app.pool_status("default").await["session_count"], 3);
    assert_eq!(app.delete_pool("default").await.status().as_u16(), 204);
    let status = app.pool_status("default").await;
    assert_pool_status(&status, "default");
    assert_eq!(status["session_count"], 0);
    assert_config(&status["config"], &default_config());
    assert_problem(app.get_session("default", &acquired).await, 404, "session_not_found").await;
    assert_problem(app.get_session("default", "mine").await, 404, "session_not_found").await;
    let list = expect_json(app.list_pools().await, 200).await;
    assert!(list["pools"].as_array().unwrap().iter().any(|p| p["name"] == "default"));
    // Deleting it again is still a 204: it always exists.
    assert_eq!(app.delete_pool("default").await.status().as_u16(), 204);
}

#[tokio::test]
async fn counts_add_up_across_usable_retired_and_leased_sessions() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 4})).await;
    let leased = id_of(&app.leased(&pool, 60.0).await);
    let status = app.pool_status(&pool).await;
    assert_pool_status(&status, &pool);
    assert_eq!(
        (
            &status["session_count"],
            &status["usable_session_count"],
            &status["retired_session_count"],
            &status["leased_session_count"]
        ),
        (&json!(4), &json!(4), &json!(0), &json!(1))
    );
    let all = app.ids(&pool, "all").await;
    let other = all.iter().find(|id| **id != leased).unwrap().clone();
    expect_json(app.retire(&pool, &other, None).await, 200).await;
    app.new_session(&pool, &json!({"id": "explicit"})).await;
    let status = app.pool_status(&pool).await;
    assert_pool_status(&status, &pool);
    assert_eq!(status["session_count"], 5);
    assert_eq!(status["usable_session_count"], 4);
    assert_eq!(status["retired_session_count"], 1);
    assert_eq!(status["leased_session_count"], 1);
    // Retiring the leased one ends its lease: it is retired, not leased.
    expect_json(app.retire(&pool, &leased, None).await, 200).await;
    let status = app.pool_status(&pool).await;
    assert_pool_status(&status, &pool);
    assert_eq!(status["usable_session_count"], 3);
    assert_eq!(status["retired_session_count"], 2);
    assert_eq!(status["leased_session_count"], 0);
    // The list filters agree with the counts.
    assert_eq!(app.ids(&pool, "usable").await.len(), 3);
    assert_eq!(app.ids(&pool, "retired").await.len(), 2);
    assert_eq!(app.ids(&pool, "leased").await.len(), 0);
    assert_eq!(app.ids(&pool, "all").await.len(), 5);
}

#[tokio::test]
async fn lowering_max_pool_size_destroys_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 5})).await;
    app.acquired(&pool).await;
    let before = app.ids(&pool, "usable").await;
    assert_eq!(before.len(), 5);
    let status = expect_json(app.put_pool(&pool, &json!({"max_pool_size": 2})).await, 200).await;
    assert_eq!(status["session_count"], 5);
    assert_eq!(status["usable_session_count"], 5);
    for _ in 0..20 {
        let s = app.acquired(&pool).await;
        assert!(before.contains(&id_of(&s)));
    }
    assert_eq!(app.ids(&pool, "usable").await, before);
}

#[tokio::test]
async fn new_pool_settings_apply_only_to_sessions_created_afterwards() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"session": {"max_usage_count": 7, "max_age_secs": 100}})).await;
    let first = app.new_session(&pool, &json!({"id": "first"})).await;
    assert_eq!(first["max_usage_count"], 7);
    app.configure(
        &pool,
        &json!({"max_pool_size": 2, "session": {"max_usage_count": 9, "blocked_status_codes": [500]}}),
    )
    .await;
    let second = app.new_session(&pool, &json!({"id": "second"})).await;
    assert_eq!(second["max_usage_count"], 9);
    assert_eq!(second["max_age_secs"], 3000.0);
    assert_eq!(second["blocked_status_codes"], json!([500]));
    let first_now = app.session(&pool, "first").await;
    assert_eq!(first_now, first, "an existing session keeps its settings");
    // A blocked code of the new settings does not block the old session.
    let r = expect_json(app.status_code(&pool, "first", &json!({"status_code": 500})).await, 200).await;
    assert_eq!(r["blocked"], false);
    let r = expect_json(app.status_code(&pool, "first", &json!({"status_code": 403})).await, 200).await;
    assert_eq!(r["blocked"], true);
}

#[tokio::test]
async fn explicitly_created_sessions_may_exceed_max_pool_size_and_then_acquire_creates_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 2})).await;
    let mut made = BTreeSet::new();
    for i in 0..3 {
        made.insert(id_of(&app.new_session(&pool, &json!({"id": format!("p{i}")})).await));
    }
    assert_eq!(app.pool_status(&pool).await["usable_session_count"], 3);
    for _ in 0..30 {
        let s = app.acquired(&pool).await;
        assert!(made.contains(&id_of(&s)), "acquire created {}", s["id"]);
    }
    assert_eq!(app.pool_status(&pool).await["session_count"], 3);
    // Once the usable count falls below max_pool_size, acquire creates again.
    expect_json(app.retire(&pool, "p0", None).await, 200).await;
    expect_json(app.retire(&pool, "p1", None).await, 200).await;
    app.acquired(&pool).await;
    let status = app.pool_status(&pool).await;
    assert_eq!(status["usable_session_count"], 2);
    assert_eq!(status["session_count"], 4);
}

#[tokio::test]
async fn a_pool_with_max_pool_size_zero_only_hands_out_produced_sessions() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    let resp = app.acquire(&pool).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(resp, 503, "no_session_available").await;
    assert_eq!(app.pool_status(&pool).await["session_count"], 0);
    let made = app.new_session(&pool, &json!({"id": "warm-1", "user_data": {"login": "done"}})).await;
    for _ in 0..5 {
        let s = app.acquired(&pool).await;
        assert_eq!(s["id"], made["id"]);
        assert_eq!(s["user_data"], json!({"login": "done"}));
    }
    let leased = app.leased(&pool, 30.0).await;
    assert_eq!(leased["id"], "warm-1");
    assert_problem(app.acquire(&pool).await, 503, "no_session_available").await;
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
}

#[tokio::test]
async fn proxy_url_template_gives_each_new_session_its_sticky_url() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let template = "http://user-session-{session_id}:pass@gate.example:7000";
    app.configure(
        &pool,
        &json!({"max_pool_size": 3, "proxy_url_template": template,
                "proxy_urls": ["http://ignored.example:1"]}),
    )
    .await;
    let s = app.acquired(&pool).await;
    let id = id_of(&s);
    assert_eq!(s["proxy_url"], template.replace("{session_id}", &id));
    let made = app.new_session(&pool, &json!({"id": "mine"})).await;
    assert_eq!(made["proxy_url"], "http://user-session-mine:pass@gate.example:7000");
    let own = app.new_session(&pool, &json!({"id": "own", "proxy_url": "socks5://own.example:1080"})).await;
    assert_eq!(own["proxy_url"], "socks5://own.example:1080");
    // Reconfiguring does not move existing sessions to new proxies.
    app.configure(&pool, &json!({"proxy_urls": ["https://other.example:2"]})).await;
    assert_eq!(app.session(&pool, "mine").await["proxy_url"], "http://user-session-mine:pass@gate.example:7000");
    assert_eq!(app.new_session(&pool, &json!({})).await["proxy_url"], "https://other.example:2");
}

#[tokio::test]
async fn proxy_urls_are_handed_out_round_robin() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let urls = ["http://a.example:1", "socks5h://b.example:2", "https://c.example:3"];
    app.configure(&pool, &json!({"proxy_urls": urls})).await;
    let mut got = Vec::new();
    for i in 0..6 {
        let s = app.new_session(&pool, &json!({"id": format!("s{i}")})).await;
        got.push(s["proxy_url"].as_str().unwrap().to_owned());
    }
    let first = urls.iter().position(|u| *u == got[0]).expect("one of the urls");
    for (i, url) in got.iter().enumerate() {
        assert_eq!(url, urls[(first + i) % 3], "round robin: {got:?}");
    }
}

#[tokio::test]
async fn proxy_urls_with_other_schemes_are_refused() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for body in [
        json!({"proxy_urls": ["ftp://a.example:1"]}),
        json!({"proxy_urls": ["not a url"]}),
        json!({"proxy_url_template": "file:///{session_id}"}),
    ] {
        assert_problem(app.put_pool(&pool, &body).await, 400, "invalid_request").await;
    }
    assert_problem(app.create_session(&pool, &json!({"proxy_url": "ftp://x.example"})).await, 400, "invalid_request")
        .await;
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
}

#[tokio::test]
async fn a_pool_created_at_is_fixed_and_in_utc() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let created = app.configure(&pool, &json!({})).await;
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    app.acquired(&pool).await;
    let later = app.pool_status(&pool).await;
    assert_eq!(later["created_at"], created["created_at"]);
}
