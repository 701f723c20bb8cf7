//! The cookie jar of a session: Set-Cookie headers stored as a browser stores them, the Cookie
//! header a browser would send, and the scenarios of Crawlee for Python's own cookie tests
//! (tests/unit/sessions/test_cookies.py) in this API's terms.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, encode, expect_json, spawn_app, TestApp};

async fn store(app: &TestApp, pool: &str, id: &str, url: &str, headers: &[&str]) -> Value {
    let body = json!({"url": url, "set_cookie": headers});
    let path = format!("/v1/pools/{pool}/sessions/{id}/cookies");
    expect_json(app.send_json(Method::POST, &path, Some(&body)).await, 200).await
}

async fn sent(app: &TestApp, pool: &str, id: &str, url: &str) -> Value {
    let path = format!("/v1/pools/{pool}/sessions/{id}/cookies?url={}", encode(url));
    expect_json(app.get(&path).await, 200).await
}

async fn header(app: &TestApp, pool: &str, id: &str, url: &str) -> String {
    sent(app, pool, id, url).await["cookie_header"].as_str().expect("cookie_header").to_owned()
}

#[tokio::test]
async fn set_cookie_headers_are_stored_as_a_browser_stores_them() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let session = store(
        &app,
        &pool,
        &id,
        "https://www.example.com/account/login",
        &["sid=abc; HttpOnly; Secure; SameSite=Lax", "theme=dark; Domain=example.com; Path=/"],
    )
    .await;
    let cookies = session["cookies"].as_array().expect("cookies");
    assert_eq!(cookies.len(), 2, "{session}");
    assert_eq!(cookies[0]["domain"], "www.example.com", "host-only: the request host");
    assert_eq!(cookies[0]["path"], "/account", "the default path is the URL's directory");
    assert_eq!((cookies[0]["secure"].clone(), cookies[0]["http_only"].clone()), (json!(true), json!(true)));
    assert_eq!(cookies[0]["same_site"], "Lax");
    assert!(cookies[0].get("expires").is_none(), "a session cookie has no expires key");
    assert_eq!(cookies[1]["domain"], ".example.com", "a Domain cookie covers subdomains");
    assert_eq!(header(&app, &pool, &id, "https://www.example.com/account/x").await, "sid=abc; theme=dark");
    assert_eq!(header(&app, &pool, &id, "https://shop.example.com/").await, "theme=dark");
    assert_eq!(header(&app, &pool, &id, "http://www.example.com/account/x").await, "theme=dark", "Secure needs https");
    assert_eq!(header(&app, &pool, &id, "https://example.org/").await, "");
}

#[tokio::test]
async fn what_a_browser_refuses_is_not_stored() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let session = store(
        &app,
        &pool,
        &id,
        "https://www.example.com/",
        &["a=1; Domain=other.com", "b=1; Domain=com", "c=1; Domain=co.uk", "not a cookie", "d=1; Secure"],
    )
    .await;
    let names: Vec<&str> = session["cookies"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["d"], "foreign and public-suffix domains and garbage are ignored");
    let session = store(&app, &pool, &id, "http://www.example.com/", &["e=1; Secure"]).await;
    assert_eq!(session["cookies"].as_array().unwrap().len(), 1, "a Secure cookie from http is ignored");
}

#[tokio::test]
async fn max_age_wins_and_an_expired_cookie_deletes() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let session = store(
        &app,
        &pool,
        &id,
        "https://example.com/",
        &["a=1; Max-Age=3600; Expires=Thu, 01 Jan 2015 00:00:00 GMT", "b=2"],
    )
    .await;
    let expires = session["cookies"][0]["expires"].as_i64().expect("Max-Age makes it persistent");
    assert!(expires > chrono_now() + 3000, "Max-Age must win over the past Expires");
    assert_eq!(header(&app, &pool, &id, "https://example.com/").await, "a=1; b=2");
    let session = store(&app, &pool, &id, "https://example.com/", &["a=x; Max-Age=0"]).await;
    assert_eq!(session["cookies"].as_array().unwrap().len(), 1);
    assert_eq!(header(&app, &pool, &id, "https://example.com/").await, "b=2");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test]
async fn cookies_go_out_in_rfc_6265_order() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    store(&app, &pool, &id, "https://example.com/", &["z=1; Path=/", "y=2; Path=/a/b", "x=3; Path=/a"]).await;
    assert_eq!(header(&app, &pool, &id, "https://example.com/a/b/c").await, "y=2; x=3; z=1");
    let answer = sent(&app, &pool, &id, "https://example.com/a").await;
    let names: Vec<&str> = answer["cookies"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x", "z"]);
}

#[tokio::test]
async fn seeded_and_patched_cookies_live_in_the_same_jar() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"cookies": {"seed": "1"}})).await;
    store(&app, &pool, &id, "https://example.com/", &["server=2"]).await;
    let patch = json!({"cookies": [{"name": "patched", "value": "3", "domain": ".example.com"}]});
    expect_json(app.patch_session(&pool, &id, &patch).await, 200).await;
    assert_eq!(header(&app, &pool, &id, "https://example.com/").await, "seed=1; server=2; patched=3");
    assert_eq!(header(&app, &pool, &id, "https://elsewhere.net/").await, "seed=1", "a host-less cookie goes anywhere");
}

// Crawlee for Python, tests/unit/sessions/test_cookies.py, in this API's terms.

#[tokio::test]
async fn crawlee_a_basic_cookie_takes_the_defaults() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"cookies": [{"name": "test", "value": "value"}]})).await;
    let cookie = app.session(&pool, &id).await["cookies"][0].clone();
    assert_eq!(
        cookie,
        json!({"name": "test", "value": "value", "domain": "", "path": "/", "secure": false, "http_only": false})
    );
}

#[tokio::test]
async fn crawlee_a_cookie_with_all_attributes_comes_back_as_given() {
    let app = spawn_app().await;
    let given = json!({
        "name": "test_cookie", "value": "test_value", "domain": "example.com", "path": "/test",
        "expires": 1735689600, "http_only": true, "secure": true, "same_site": "Strict"
    });
    let (pool, id) = app.session_in_new_pool(&json!({"cookies": [given.clone()]})).await;
    assert_eq!(app.session(&pool, &id).await["cookies"], json!([given]));
    // It expired on 2025-01-01, so no browser would send it any more.
    assert_eq!(header(&app, &pool, &id, "https://example.com/test").await, "");
}

#[tokio::test]
async fn crawlee_cookies_of_one_name_for_different_domains_are_two_cookies() {
    let app = spawn_app().await;
    let cookies = json!([
        {"name": "a", "value": "1", "domain": "test.io"},
        {"name": "a", "value": "2", "domain": "notest.io"}
    ]);
    let (pool, id) = app.session_in_new_pool(&json!({"cookies": cookies})).await;
    assert_eq!(app.session(&pool, &id).await["cookies"].as_array().unwrap().len(), 2);
    assert_eq!(header(&app, &pool, &id, "https://test.io/").await, "a=1");
    assert_eq!(header(&app, &pool, &id, "https://notest.io/").await, "a=2");
}

#[tokio::test]
async fn bad_cookie_requests_are_invalid_and_change_nothing() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({"cookies": {"keep": "1"}})).await;
    let path = format!("/v1/pools/{pool}/sessions/{id}/cookies");
    for body in [
        json!({"url": "not a url", "set_cookie": ["a=1"]}),
        json!({"url": "ftp://example.com/", "set_cookie": ["a=1"]}),
        json!({"url": "https://example.com/"}),
        json!({"url": "https://example.com/", "set_cookie": "a=1"}),
        json!({"url": "https://example.com/", "set_cookie": ["a=1"], "extra": true}),
    ] {
        assert_problem(app.send_json(Method::POST, &path, Some(&body)).await, 400, "invalid_request").await;
    }
    assert_problem(app.get(&path).await, 400, "invalid_request").await;
    assert_problem(app.get(&format!("{path}?url=relative/path")).await, 400, "invalid_request").await;
    assert_eq!(app.session(&pool, &id).await["cookies"].as_array().unwrap().len(), 1);
    let missing = format!("/v1/pools/{pool}/sessions/nope/cookies");
    let body = json!({"url": "https://example.com/", "set_cookie": ["a=1"]});
    assert_problem(app.send_json(Method::POST, &missing, Some(&body)).await, 404, "session_not_found").await;
}
