//! One round trip each way per page: acquire with a `url` answers the `Cookie` header for it, and
//! mark_good, mark_bad, retire and status_code store the response's `Set-Cookie` headers (with its
//! `url`) and parsed `cookies` in the same call as the mark; a malformed one changes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, assert_session_shape, expect_json, num, spawn_app, unique_pool, TestApp};

const VERBS: [&str; 4] = ["mark_good", "mark_bad", "retire", "status_code"];

/// A pool that hands out only what was created in it, holding one session `s` with `cookies`.
async fn pool_with_one_session(app: &TestApp, cookies: Value) -> String {
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    app.new_session(&pool, &json!({"id": "s", "cookies": cookies})).await;
    pool
}

/// `POST .../{verb}` of session `s` with `extra` merged into the body status_code needs.
async fn report(app: &TestApp, pool: &str, id: &str, verb: &str, extra: Value) -> reqwest::Response {
    let mut body = if verb == "status_code" { json!({"status_code": 200}) } else { json!({}) };
    for (key, value) in extra.as_object().expect("an object") {
        body[key] = value.clone();
    }
    app.send_json(Method::POST, &format!("/v1/pools/{pool}/sessions/{id}/{verb}"), Some(&body)).await
}

/// The session of a report's answer (status_code nests it).
fn session_of(verb: &str, answer: Value) -> Value {
    if verb == "status_code" {
        answer["session"].clone()
    } else {
        answer
    }
}

async fn cookie_header(app: &TestApp, pool: &str, url: &str) -> Value {
    let path = format!("/v1/pools/{pool}/sessions/s/cookies?url={}", crate::helpers::encode(url));
    expect_json(app.get(&path).await, 200).await["cookie_header"].clone()
}

fn names(session: &Value) -> Vec<String> {
    let cookies = session["cookies"].as_array().expect("cookies");
    cookies.iter().map(|c| format!("{}={}", c["name"].as_str().unwrap(), c["value"].as_str().unwrap())).collect()
}

#[tokio::test]
async fn acquire_with_a_url_answers_the_cookie_header_the_cookies_endpoint_computes() {
    let app = spawn_app().await;
    let cookies = json!([
        {"name": "sid", "value": "1", "domain": "shop.example", "secure": true},
        {"name": "deep", "value": "2", "domain": ".shop.example", "path": "/p"},
        {"name": "any", "value": "3"},
        {"name": "other", "value": "4", "domain": "elsewhere.example"}]);
    let pool = pool_with_one_session(&app, cookies).await;
    let url = "https://www.shop.example/p/1";
    for body in [json!({"url": url}), json!({"url": url, "lease_secs": 30})] {
        let acquired =
            expect_json(app.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&body)).await, 200)
                .await;
        assert_eq!(acquired["cookie_header"], "deep=2; any=3");
        assert_eq!(acquired["cookie_header"], cookie_header(&app, &pool, url).await);
        let mut session = acquired.clone();
        session.as_object_mut().expect("an object").remove("cookie_header");
        assert_session_shape(&session, body.get("lease_secs").is_some());
        if let Some(lease) = acquired["lease"]["id"].as_str() {
            expect_json(app.release(&pool, "s", lease).await, 200).await;
        }
    }
    for url in ["https://shop.example/", "http://shop.example/"] {
        let body = json!({ "url": url });
        let acquired =
            expect_json(app.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&body)).await, 200)
                .await;
        assert_eq!(acquired["cookie_header"], cookie_header(&app, &pool, url).await, "{url}");
    }
    let none = json!({"url": "https://nothing.example/"});
    let acquired =
        expect_json(app.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&none)).await, 200).await;
    assert_eq!(acquired["cookie_header"], "any=3");
    let empty_pool = pool_with_one_session(&app, json!([])).await;
    let path = format!("/v1/pools/{empty_pool}/acquire");
    let acquired = expect_json(app.send_json(Method::POST, &path, Some(&none)).await, 200).await;
    assert_eq!(acquired["cookie_header"], "", "no cookie: an empty header, not a missing one");
    assert_session_shape(&app.acquired(&pool).await, false);
}

#[tokio::test]
async fn acquire_with_a_malformed_url_is_refused_and_leases_nothing() {
    let app = spawn_app().await;
    let pool = pool_with_one_session(&app, json!({})).await;
    for url in [
        json!("not a url"),
        json!("/relative"),
        json!("ftp://shop.example/"),
        json!("mailto:a@b.c"),
        json!(null),
        json!(5),
    ] {
        let body = json!({"url": url, "lease_secs": 30});
        let resp = app.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&body)).await;
        let problem = assert_problem(resp, 400, "invalid_request").await;
        assert!(problem["detail"].as_str().unwrap_or_default().contains("url"), "{url}: {problem}");
    }
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 0);
}

#[tokio::test]
async fn every_report_stores_the_responses_set_cookie_headers_in_the_same_call() {
    let app = spawn_app().await;
    for verb in VERBS {
        let pool = pool_with_one_session(&app, json!([{"name": "old", "value": "x", "domain": "shop.example"}])).await;
        let extra = json!({"url": "https://shop.example/account/login", "set_cookie": [
            "sid=abc; HttpOnly", "old=y; Path=/", "wide=1; Domain=shop.example; Path=/", "foreign=1; Domain=other.example"]});
        let session = session_of(verb, expect_json(report(&app, &pool, "s", verb, extra).await, 200).await);
        assert_eq!(names(&session), ["old=y", "sid=abc", "wide=1"], "{verb}: stored as POST .../cookies stores them");
        assert_eq!(session["cookies"][1]["path"], "/account", "{verb}: the default path of the URL");
        assert_eq!(session, app.session(&pool, "s").await, "{verb}");
        let marked = match verb {
            "mark_good" => num(&session["usage_count"]) == 1.0,
            "mark_bad" => num(&session["error_score"]) == 1.0,
            "retire" => session["retired_reason"] == "retired",
            _ => session["usage_count"] == 0 && session["is_usable"] == true,
        };
        assert!(marked, "{verb}: the mark applied too: {session}");
        assert_eq!(cookie_header(&app, &pool, "https://shop.example/account/x").await, "sid=abc; old=y; wide=1");
    }
}

#[tokio::test]
async fn every_report_upserts_parsed_cookies_as_patch_does() {
    let app = spawn_app().await;
    for verb in VERBS {
        let pool = pool_with_one_session(&app, json!([{"name": "a", "value": "1", "domain": "shop.example"}])).await;
        let extra = json!({"cookies": [
            {"name": "a", "value": "2", "domain": "shop.example"},
            {"name": "a", "value": "3", "domain": "shop.example", "path": "/p"},
            {"name": "b", "value": "4", "secure": true, "http_only": true, "expires": 4102444800u64, "same_site": "Lax"}]});
        let session = session_of(verb, expect_json(report(&app, &pool, "s", verb, extra).await, 200).await);
        assert_eq!(names(&session), ["a=2", "a=3", "b=4"], "{verb}: replaced by (domain, path, name)");
        assert_eq!(
            session["cookies"][2],
            json!({"name": "b", "value": "4", "domain": "", "path": "/", "secure": true, "http_only": true,
                   "expires": 4102444800u64, "same_site": "Lax"}),
            "{verb}"
        );
        // The seed's simple form, as PATCH takes it, and both kinds together: headers first.
        let extra = json!({"url": "https://shop.example/", "set_cookie": ["c=header"], "cookies": {"c": "parsed"}});
        let session = session_of(verb, expect_json(report(&app, &pool, "s", verb, extra).await, 200).await);
        assert!(names(&session).contains(&"c=parsed".to_owned()), "{verb}: {session}");
        assert!(names(&session).contains(&"c=header".to_owned()), "{verb}: another (domain, path): {session}");
    }
}

#[tokio::test]
async fn cookies_are_stored_on_a_retired_session_and_nothing_else_changes() {
    let app = spawn_app().await;
    let pool = pool_with_one_session(&app, json!([])).await;
    let retired = expect_json(app.retire(&pool, "s", None).await, 200).await;
    for (i, verb) in VERBS.into_iter().enumerate() {
        let extra = json!({"url": "https://shop.example/", "set_cookie": [format!("h{i}=1")],
                           "cookies": [{"name": format!("c{i}"), "value": "1"}]});
        let session = session_of(verb, expect_json(report(&app, &pool, "s", verb, extra).await, 200).await);
        assert!(names(&session).contains(&format!("h{i}=1")) && names(&session).contains(&format!("c{i}=1")), "{verb}");
        for key in ["usage_count", "error_score", "retired_reason", "retired_at"] {
            assert_eq!(session[key], retired[key], "{verb}: {key}");
        }
    }
    assert_eq!(app.session(&pool, "s").await["cookies"].as_array().map(Vec::len), Some(8));
}

#[tokio::test]
async fn a_malformed_report_is_refused_and_changes_nothing_the_mark_included() {
    let app = spawn_app().await;
    let pool = pool_with_one_session(&app, json!([{"name": "keep", "value": "1"}])).await;
    let leased = app.leased(&pool, 60.0).await;
    let lease_id = leased["lease"]["id"].as_str().expect("a lease").to_owned();
    let before = app.session(&pool, "s").await;
    let url = "https://shop.example/";
    let bad = [
        json!({"url": "not a url", "set_cookie": ["a=1"]}),
        json!({"url": "ftp://shop.example/", "set_cookie": ["a=1"]}),
        json!({"url": url, "set_cookie": "a=1"}),
        json!({"url": url, "set_cookie": [1]}),
        json!({"url": url, "set_cookie": [["a=1"]]}),
        json!({"url": url, "set_cookie": null}),
        json!({"url": url}),
        json!({"set_cookie": ["a=1"]}),
        json!({"url": null, "set_cookie": ["a=1"]}),
        json!({"cookies": [{"name": "", "value": "1"}]}),
        json!({"cookies": [{"name": "a"}]}),
        json!({"cookies": "a=1"}),
        json!({"url": url, "set_cookie": ["a=1"], "cookies": [{"name": "a", "value": "x;y"}]}),
    ];
    for verb in VERBS {
        for extra in &bad {
            let mut extra = extra.clone();
            extra["lease_id"] = json!(lease_id);
            let resp = report(&app, &pool, "s", verb, extra.clone()).await;
            assert_problem(resp, 400, "invalid_request").await;
            assert_eq!(app.session(&pool, "s").await, before, "{verb} {extra} changed the session");
        }
    }
    assert_eq!(app.pool_status(&pool).await["leased_session_count"], 1, "the lease is still there");
}

/// A report whose session id is percent-encoded is decoded and takes the same fields as any other.
#[tokio::test]
async fn a_percent_encoded_session_id_takes_the_same_report_fields() {
    let app = spawn_app().await;
    for verb in VERBS {
        let pool = pool_with_one_session(&app, json!([])).await;
        let extra =
            json!({"url": "https://shop.example/", "set_cookie": ["h=1"], "cookies": [{"name": "c", "value": "1"}]});
        let session = session_of(verb, expect_json(report(&app, &pool, "%73", verb, extra).await, 200).await);
        assert_eq!(names(&session), ["h=1", "c=1"], "{verb}");
        let bad = report(&app, &pool, "%73", verb, json!({"url": "https://shop.example/"})).await;
        assert_problem(bad, 400, "invalid_request").await;
    }
}

/// Each call stores and marks in one locked step: concurrent reports lose neither a cookie nor a
/// mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_reports_keep_every_cookie_and_every_mark() {
    let app = std::sync::Arc::new(spawn_app().await);
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s", "max_error_score": 100})).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (app, pool) = (app.clone(), pool.clone());
            let extra = json!({"url": "https://shop.example/", "set_cookie": [format!("h{i}=1")],
                               "cookies": [{"name": format!("c{i}"), "value": "1"}]});
            tokio::spawn(async move { report(&app, &pool, "s", "mark_bad", extra).await.status().as_u16() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("the call"), 200);
    }
    let session = app.session(&pool, "s").await;
    assert_eq!((num(&session["usage_count"]), num(&session["error_score"])), (20.0, 20.0));
    assert_eq!(session["cookies"].as_array().map(Vec::len), Some(40));
}
