//! Every error code of openapi.yaml that this release has, and that a refused request changes
//! nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::eventually;
use crate::helpers::{assert_problem, expect_json, spawn_app, spawn_app_with, unique_pool, TestApp};

/// Sends `raw` as an `application/json` body.
async fn send_raw(app: &TestApp, method: Method, path: &str, raw: &str) -> reqwest::Response {
    app.request(method, path, Some("application/json"), Some(raw.as_bytes().to_vec())).await
}

/// `depth` nested arrays, e.g. 2 -> `[[]]`.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for raw in
        ["{not json", "{\"id\": \"x\"", "[]", "null", "42", "\"string\"", "{\"id\": \"x\"} trailing", "{\"id\": 'x'}"]
    {
        let resp = send_raw(&app, Method::POST, &format!("/v1/pools/{pool}/sessions"), raw).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
}

#[tokio::test]
async fn unknown_fields_are_refused_everywhere_and_the_detail_names_them() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let s = format!("/v1/pools/{pool}/sessions/{id}");
    let cases: Vec<(Method, String, Value)> = vec![
        (Method::POST, format!("/v1/pools/{pool}/acquire"), json!({"bogus_field": 1})),
        (Method::POST, format!("/v1/pools/{pool}/sessions"), json!({"bogus_field": 1})),
        (Method::PUT, format!("/v1/pools/{pool}"), json!({"bogus_field": 1})),
        (Method::PUT, format!("/v1/pools/{pool}"), json!({"session": {"bogus_field": 1}})),
        (Method::PATCH, s.clone(), json!({"bogus_field": 1})),
        (Method::POST, format!("{s}/mark_good"), json!({"bogus_field": 1})),
        (Method::POST, format!("{s}/mark_bad"), json!({"bogus_field": 1})),
        (Method::POST, format!("{s}/retire"), json!({"bogus_field": 1})),
        (Method::POST, format!("{s}/release"), json!({"lease_id": "x", "bogus_field": 1})),
        (Method::POST, format!("{s}/status_code"), json!({"status_code": 200, "bogus_field": 1})),
        (
            Method::POST,
            format!("/v1/pools/{pool}/sessions"),
            json!({"cookies": [{"name": "a", "value": "b", "bogus_field": 1}]}),
        ),
    ];
    for (method, path, body) in cases {
        let resp = app.send_json(method.clone(), &path, Some(&body)).await;
        let problem = assert_problem(resp, 400, "invalid_request").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("bogus_field"),
            "{method} {path}: the detail names the field: {problem}"
        );
    }
    let after = app.session(&pool, &id).await;
    assert_eq!(after["usage_count"], 0);
    assert_eq!(after["retired"], false);
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_with_the_path_of_its_field() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let s = format!("/v1/pools/{pool}/sessions/{id}");
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, format!("/v1/pools/{pool}/acquire"), json!({"lease_secs": "30"}), "lease_secs"),
        (Method::PUT, format!("/v1/pools/{pool}"), json!({"max_pool_size": "x"}), "max_pool_size"),
        (
            Method::PUT,
            format!("/v1/pools/{pool}"),
            json!({"session": {"max_usage_count": 1.5}}),
            "session: max_usage_count",
        ),
        (Method::PUT, format!("/v1/pools/{pool}"), json!({"proxy_urls": ["http://p.example:1", 7]}), "proxy_urls[1]"),
        (Method::POST, format!("/v1/pools/{pool}/sessions"), json!({"max_error_score": true}), "max_error_score"),
        (
            Method::POST,
            format!("/v1/pools/{pool}/sessions"),
            json!({"cookies": [{"name": "a", "value": "b"}, {"name": "c", "value": 3}]}),
            "cookies[1]: value",
        ),
        (Method::PATCH, s.clone(), json!({"user_data": []}), "user_data"),
        (
            Method::POST,
            format!("{s}/status_code"),
            json!({"status_code": 403, "ignore_http_error_status_codes": [403, "429"]}),
            "ignore_http_error_status_codes[1]",
        ),
        (Method::POST, format!("{s}/mark_bad"), json!({"lease_id": 5}), "lease_id"),
    ];
    for (method, path, body, field) in cases {
        let resp = app.send_json(method.clone(), &path, Some(&body)).await;
        let problem = assert_problem(resp, 400, "invalid_request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("{field}: ")), "{method} {path} {body}: the detail names {field}: {detail}");
    }
    let after = app.session(&pool, &id).await;
    assert_eq!((after["usage_count"].as_u64(), after["cookies"].as_array().map(Vec::len)), (Some(0), Some(0)));
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_at_any_depth() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let create = format!("/v1/pools/{pool}/sessions");
    for raw in [
        r#"{"max_usage_count": 5, "max_usage_count": 6}"#,
        r#"{"id": "a", "id": "a"}"#,
        r#"{"user_data": {"a": 1, "a": 2}}"#,
        r#"{"user_data": {"x": [{"k": 1, "k": 1}]}}"#,
    ] {
        let resp = send_raw(&app, Method::POST, &create, raw).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    let resp =
        send_raw(&app, Method::PUT, &format!("/v1/pools/{pool}"), r#"{"max_pool_size": 1, "max_pool_size": 2}"#).await;
    assert_problem(resp, 400, "invalid_request").await;
    let resp =
        send_raw(&app, Method::POST, &format!("/v1/pools/{pool}/acquire"), r#"{"lease_secs": 1, "lease_secs": 2}"#)
            .await;
    assert_problem(resp, 400, "invalid_request").await;
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    // Equal keys in different objects are fine.
    let resp =
        send_raw(&app, Method::POST, &create, r#"{"user_data": {"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}}"#).await;
    expect_json(resp, 201).await;
}

#[tokio::test]
async fn numbers_out_of_an_integer_fields_type_or_range_are_refused() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for raw in [
        r#"{"max_usage_count": 1.5}"#,
        r#"{"max_usage_count": 1e23}"#,
        r#"{"max_usage_count": 0}"#,
        r#"{"max_usage_count": -1}"#,
        r#"{"max_usage_count": 4294967296}"#,
        r#"{"max_usage_count": "ten"}"#,
        r#"{"max_age_secs": 0}"#,
        r#"{"max_age_secs": -1}"#,
        r#"{"max_age_secs": 315576001}"#,
        r#"{"max_age_secs": 1e308}"#,
        r#"{"max_error_score": 0}"#,
        r#"{"max_error_score": -0.5}"#,
        r#"{"error_score_decrement": -0.5}"#,
        r#"{"blocked_status_codes": [403.5]}"#,
        r#"{"blocked_status_codes": 403}"#,
        r#"{"id": 5}"#,
        r#"{"id": ""}"#,
        r#"{"id": "has space"}"#,
        r#"{"id": "slash/inside"}"#,
        r#"{"user_data": [1]}"#,
        r#"{"user_data": "x"}"#,
    ] {
        let resp = send_raw(&app, Method::POST, &format!("/v1/pools/{pool}/sessions"), raw).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    let long_id = json!({ "id": "a".repeat(129) });
    assert_problem(app.create_session(&pool, &long_id).await, 400, "invalid_request").await;
    for raw in [
        r#"{"max_pool_size": 1.5}"#,
        r#"{"max_pool_size": 1e23}"#,
        r#"{"max_pool_size": -5}"#,
        r#"{"max_pool_size": 1000001}"#,
        r#"{"max_pool_size": null, "session": 5}"#,
    ] {
        let resp = send_raw(&app, Method::PUT, &format!("/v1/pools/{pool}"), raw).await;
        assert_problem(resp, 400, "invalid_request").await;
    }
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    let resp = app.put_pool(&pool, &json!({"max_pool_size": 1_000_000})).await;
    expect_json(resp, 201).await;
}

/// JSON Schema (OpenAPI 3.1) counts `403.0` as the integer 403: such numbers are accepted in range.
#[tokio::test]
async fn whole_floats_are_integers_like_json_schema_says() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let body = r#"{"id": "w", "max_usage_count": 10.0, "blocked_status_codes": [403.0],
                   "cookies": [{"name": "a", "value": "b", "expires": 4102444800.0}]}"#;
    let created =
        expect_json(send_raw(&app, Method::POST, &format!("/v1/pools/{pool}/sessions"), body).await, 201).await;
    assert_eq!(created["max_usage_count"], 10);
    assert_eq!(created["blocked_status_codes"], json!([403]));
    assert_eq!(created["cookies"][0]["expires"], 4102444800u64);
    let path = format!("/v1/pools/{pool}/sessions/w/status_code");
    let answer = expect_json(send_raw(&app, Method::POST, &path, r#"{"status_code": 403.0}"#).await, 200).await;
    assert_eq!(answer["blocked"], true);
    let put = send_raw(&app, Method::PUT, &format!("/v1/pools/{pool}"), r#"{"max_pool_size": 5.0}"#).await;
    assert_eq!(expect_json(put, 200).await["config"]["max_pool_size"], 5);
}

/// serde reads a struct from a list of its field values; the API must not.
#[tokio::test]
async fn a_list_where_an_object_belongs_is_invalid_and_changes_nothing() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let cases = [
        (Method::POST, format!("/v1/pools/{pool}/acquire"), "[30]"),
        (Method::PUT, format!("/v1/pools/{pool}"), "[0, null, null, null]"),
        (Method::PUT, format!("/v1/pools/{pool}"), r#"{"session": [5, 5]}"#),
        (Method::POST, format!("/v1/pools/{pool}/sessions"), r#"["x"]"#),
        (Method::POST, format!("/v1/pools/{pool}/sessions"), r#"{"cookies": [["a", "b"]]}"#),
    ];
    for (method, path, raw) in cases {
        let body = assert_problem(send_raw(&app, method.clone(), &path, raw).await, 400, "invalid_request").await;
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(!detail.contains("struct"), "{method} {path} {raw}: the detail shows internal names: {detail}");
    }
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
}

#[tokio::test]
async fn the_detail_names_the_offending_field() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for (body, field) in [
        (json!({"max_usage_count": 0}), "max_usage_count"),
        (json!({"max_age_secs": -1}), "max_age_secs"),
        (json!({"max_error_score": 0}), "max_error_score"),
        (json!({"error_score_decrement": -1}), "error_score_decrement"),
        (json!({"blocked_status_codes": [42]}), "42"),
    ] {
        let problem = assert_problem(app.create_session(&pool, &body).await, 400, "invalid_request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{body}: detail {detail:?} names {field}");
    }
    let problem = assert_problem(app.acquire_leased(&pool, 0.0).await, 400, "invalid_request").await;
    assert!(problem["detail"].as_str().unwrap().contains("lease_secs"));
}

#[tokio::test]
async fn json_nested_deeper_than_128_levels_is_refused() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let path = format!("/v1/pools/{pool}/sessions");
    // The document's own object is level 1, user_data's object level 2, the arrays inside 3 and on.
    let deep = format!(r#"{{"user_data": {{"x": {}}}}}"#, nested_arrays(200));
    assert_problem(send_raw(&app, Method::POST, &path, &deep).await, 400, "invalid_request").await;
    let deep = format!(r#"{{"user_data": {{"x": {}}}}}"#, nested_arrays(127));
    assert_problem(send_raw(&app, Method::POST, &path, &deep).await, 400, "invalid_request").await;
    let very_deep = nested_arrays(100_000);
    assert_problem(send_raw(&app, Method::POST, &path, &very_deep).await, 400, "invalid_request").await;
    assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
    // Exactly 128 levels is not deeper than 128: accepted.
    let ok = format!(r#"{{"id": "deep", "user_data": {{"x": {}}}}}"#, nested_arrays(126));
    // The answer is itself 128 levels deep, past serde_json's default limit: check it as text.
    let resp = send_raw(&app, Method::POST, &path, &ok).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(r#""id":"deep""#), "{text}");
    assert!(text.contains(&nested_arrays(126)), "user_data kept whole: {text}");
    let got = app.get_session(&pool, "deep").await;
    assert_eq!(got.status().as_u16(), 200);
    let shallow = format!(r#"{{"id": "shallow", "user_data": {{"x": {}}}}}"#, nested_arrays(100));
    expect_json(send_raw(&app, Method::POST, &path, &shallow).await, 201).await;
}

#[tokio::test]
async fn bad_pool_names_in_the_path_are_invalid_request() {
    let app = spawn_app().await;
    let long = "a".repeat(129);
    for name in ["-bad-name-", ".hidden", "_x", "a%20b", "a%2Fb", "%C3%A9t%C3%A9", "a:b", long.as_str()] {
        assert_problem(app.put_pool(name, &json!({})).await, 400, "invalid_request").await;
        assert_problem(app.get_pool(name).await, 400, "invalid_request").await;
        assert_problem(app.acquire(name).await, 400, "invalid_request").await;
        assert_problem(app.create_session(name, &json!({})).await, 400, "invalid_request").await;
        assert_problem(app.delete_pool(name).await, 400, "invalid_request").await;
    }
    let list = expect_json(app.list_pools().await, 200).await;
    assert_eq!(list["pools"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn bad_session_ids_in_the_path_are_invalid_request() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    let long = "a".repeat(129);
    for id in ["has%20space", "%C3%A9", "a%2Fb", "a:b", "a@b", long.as_str()] {
        assert_problem(app.get_session(&pool, id).await, 400, "invalid_request").await;
        assert_problem(app.mark_good(&pool, id, None).await, 400, "invalid_request").await;
        assert_problem(app.delete_session(&pool, id).await, 400, "invalid_request").await;
        assert_problem(app.patch_session(&pool, id, &json!({})).await, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn unknown_sessions_are_session_not_found_on_every_session_endpoint() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    let id = "nope";
    for resp in [
        app.get_session(&pool, id).await,
        app.patch_session(&pool, id, &json!({})).await,
        app.delete_session(&pool, id).await,
        app.mark_good(&pool, id, None).await,
        app.mark_bad(&pool, id, None).await,
        app.retire(&pool, id, None).await,
        app.release(&pool, id, "lease").await,
        app.status_code(&pool, id, &json!({"status_code": 200})).await,
    ] {
        assert_problem(resp, 404, "session_not_found").await;
    }
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
}

#[tokio::test]
async fn max_pools_counts_the_default_pool_and_a_refused_pool_does_not_appear() {
    let app = spawn_app_with(|c| c.max_pools = 2).await;
    let (first, second) = (unique_pool(), unique_pool());
    expect_json(app.put_pool(&first, &json!({})).await, 201).await;
    assert_problem(app.put_pool(&second, &json!({})).await, 409, "limit_reached").await;
    assert_problem(app.acquire(&second).await, 409, "limit_reached").await;
    assert_problem(app.create_session(&second, &json!({})).await, 409, "limit_reached").await;
    assert_problem(app.get_pool(&second).await, 404, "pool_not_found").await;
    let list = expect_json(app.list_pools().await, 200).await;
    let names: Vec<&str> = list["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut expected = vec!["default", first.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    // Existing pools keep working.
    expect_json(app.put_pool(&first, &json!({"max_pool_size": 1})).await, 200).await;
    app.acquired(&first).await;
    app.acquired("default").await;
    // Deleting a pool frees its slot.
    assert_eq!(app.delete_pool(&first).await.status().as_u16(), 204);
    expect_json(app.put_pool(&second, &json!({})).await, 201).await;
}

#[tokio::test]
async fn max_sessions_counts_every_session_held_retired_ones_included() {
    let app = spawn_app_with(|c| c.max_sessions = 3).await;
    let (a, b) = (unique_pool(), unique_pool());
    app.new_session(&a, &json!({"id": "1"})).await;
    app.new_session(&a, &json!({"id": "2"})).await;
    app.new_session(&b, &json!({"id": "3"})).await;
    assert_problem(app.create_session(&a, &json!({"id": "4"})).await, 409, "limit_reached").await;
    assert_problem(app.create_session(&b, &json!({})).await, 409, "limit_reached").await;
    expect_json(app.retire(&a, "1", None).await, 200).await;
    assert_problem(app.create_session(&a, &json!({"id": "4"})).await, 409, "limit_reached").await;
    assert_problem(app.get_session(&a, "4").await, 404, "session_not_found").await;
    assert_eq!(app.pool_status(&a).await["session_count"], 2);
    // An acquire in a full pool hands out what is free, and creates nothing.
    let s = app.acquired(&a).await;
    assert_eq!(s["id"], "2");
    assert_eq!(app.pool_status(&a).await["session_count"], 2);
    // Deleting one makes room.
    assert_eq!(app.delete_session(&a, "1").await.status().as_u16(), 204);
    app.new_session(&a, &json!({"id": "4"})).await;
}

#[tokio::test]
async fn sessions_another_pool_purged_no_longer_count_against_max_sessions() {
    // Nothing calls pool `a` once its sessions retire, so only the 1 s background sweep would purge
    // them; the create and the acquire in `b` come 50 ms after the retention, before it most likely.
    let app = spawn_app_with(|c| {
        c.max_sessions = 2;
        c.retired_retention_secs = 0.3;
    })
    .await;
    let (a, b, c) = (unique_pool(), unique_pool(), unique_pool());
    app.configure(&a, &json!({"max_pool_size": 0})).await;
    app.configure(&b, &json!({"max_pool_size": 0})).await;
    app.configure(&c, &json!({"max_pool_size": 1})).await;
    for id in ["1", "2"] {
        app.new_session(&a, &json!({"id": id})).await;
        expect_json(app.retire(&a, id, None).await, 200).await;
    }
    assert_problem(app.create_session(&b, &json!({"id": "3"})).await, 409, "limit_reached").await;
    eventually(Duration::from_millis(900), "a create in `b` finds `a`'s sessions past their retention", || async {
        app.create_session(&b, &json!({"id": "3"})).await.status() == 201
    })
    .await;
    let acquired = app.acquired(&c).await;
    assert_eq!(app.pool_status(&c).await["session_count"], 1, "{acquired}");
    assert_eq!(app.pool_status(&a).await["session_count"], 0);
    // An acquire that creates its pool, once `b`'s session is due for purge.
    expect_json(app.retire(&b, "3", None).await, 200).await;
    let d = unique_pool();
    eventually(Duration::from_millis(900), "an acquire finds `b`'s session past its retention", || async {
        app.acquire(&d).await.status() == 200
    })
    .await;
    assert_eq!(app.pool_status(&d).await["session_count"], 1);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_payload_too_large_and_changes_nothing() {
    let app = spawn_app_with(|c| c.max_body_bytes = 256).await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "small"})).await;
    let big = json!({"id": "big", "user_data": {"blob": "x".repeat(1024)}});
    assert_problem(app.create_session(&pool, &big).await, 413, "payload_too_large").await;
    assert_problem(app.get_session(&pool, "big").await, 404, "session_not_found").await;
    let patch = json!({"user_data": {"blob": "x".repeat(1024)}});
    assert_problem(app.patch_session(&pool, "small", &patch).await, 413, "payload_too_large").await;
    assert_eq!(app.session(&pool, "small").await["user_data"], json!({}));
    let put = json!({"proxy_urls": vec!["http://proxy.example:8000"; 20]});
    assert_problem(app.put_pool(&pool, &put).await, 413, "payload_too_large").await;
    assert_eq!(app.pool_status(&pool).await["config"]["proxy_urls"], json!([]));
    // A huge body of garbage is refused for its size too.
    let resp = app
        .request(
            Method::POST,
            &format!("/v1/pools/{pool}/acquire"),
            Some("application/json"),
            Some(vec![b' '; 100_000]),
        )
        .await;
    assert_problem(resp, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    use std::io::{Read, Write};
    let app = spawn_app().await;
    let pool = unique_pool();
    let addr = app.addr;
    // The head declares one byte over the 1 MiB default and the body never comes: the answer is
    // 413 at once, not 408 when the body's read times out.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("read timeout");
        let head = format!(
            "POST /v1/pools/{pool}/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1048577\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("send the head");
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).expect("an answer before the read timeout");
        String::from_utf8_lossy(&answer[..read]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test]
async fn the_default_body_limit_is_one_mebibyte() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let under = json!({"id": "under", "user_data": {"blob": "x".repeat(1_000_000)}});
    app.new_session(&pool, &under).await;
    let over = json!({"id": "over", "user_data": {"blob": "x".repeat(1_048_577)}});
    assert_problem(app.create_session(&pool, &over).await, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_unsupported_media_type() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let body = br#"{"lease_secs": 5}"#.to_vec();
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let resp = app.request(Method::POST, &format!("/v1/pools/{pool}/acquire"), ct, Some(body.clone())).await;
        assert_problem(resp, 415, "unsupported_media_type").await;
    }
    let resp = app
        .request(
            Method::POST,
            &format!("/v1/pools/{pool}/sessions"),
            Some("text/plain"),
            Some(br#"{"id": "plain"}"#.to_vec()),
        )
        .await;
    assert_problem(resp, 415, "unsupported_media_type").await;
    assert_problem(app.get_session(&pool, "plain").await, 404, "session_not_found").await;
    let resp = app
        .request(
            Method::POST,
            &format!("/v1/pools/{pool}/sessions/{id}/mark_bad"),
            Some("text/plain"),
            Some(br#"{"lease_id": "x"}"#.to_vec()),
        )
        .await;
    assert_problem(resp, 415, "unsupported_media_type").await;
    assert_eq!(app.session(&pool, &id).await["usage_count"], 0);
    let resp = app
        .request(Method::PUT, &format!("/v1/pools/{pool}"), Some("text/yaml"), Some(b"max_pool_size: 3".to_vec()))
        .await;
    assert_problem(resp, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn an_unknown_path_is_not_found() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s"})).await;
    for path in [
        "/nope",
        "/v1",
        "/v1/",
        "/v2/pools",
        "/v1/pool",
        &format!("/v1/pools/{pool}/unknown"),
        &format!("/v1/pools/{pool}/sessions/s/unknown"),
        &format!("/v1/pools/{pool}/sessions/s/mark_good/extra"),
    ] {
        assert_problem(app.get(path).await, 404, "not_found").await;
    }
    let resp = app.send_json(Method::POST, "/nope", Some(&json!({}))).await;
    assert_problem(resp, 404, "not_found").await;
}

#[tokio::test]
async fn an_unknown_method_is_method_not_allowed() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s"})).await;
    for (method, path) in [
        (Method::DELETE, format!("/v1/pools/{pool}/acquire")),
        (Method::GET, format!("/v1/pools/{pool}/acquire")),
        (Method::PUT, "/v1/pools".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::POST, format!("/v1/pools/{pool}")),
        (Method::PUT, format!("/v1/pools/{pool}/sessions/s")),
        (Method::GET, format!("/v1/pools/{pool}/sessions/s/mark_good")),
    ] {
        let resp = app.request(method.clone(), &path, None, None).await;
        assert_problem(resp, 405, "method_not_allowed").await;
    }
    assert_eq!(app.session(&pool, "s").await["usage_count"], 0);
}

#[tokio::test]
async fn a_refused_create_leaves_the_pool_as_it_was() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "one"})).await;
    let before = app.pool_status(&pool).await;
    for body in [
        json!({"id": "two", "max_usage_count": 0}),
        json!({"id": "two", "cookies": [{"name": "a"}]}),
        json!({"id": "two", "proxy_url": "ftp://x.example"}),
        json!({"id": "two", "unknown": true}),
    ] {
        assert_problem(app.create_session(&pool, &body).await, 400, "invalid_request").await;
    }
    assert_eq!(app.pool_status(&pool).await, before);
    assert_problem(app.get_session(&pool, "two").await, 404, "session_not_found").await;
    // And a refused create in a missing pool does not create the pool.
    let missing = unique_pool();
    let bad = json!({"max_usage_count": 0});
    assert_problem(app.create_session(&missing, &bad).await, 400, "invalid_request").await;
    assert_problem(app.acquire_leased(&missing, 0.0).await, 400, "invalid_request").await;
    assert_problem(app.get_pool(&missing).await, 404, "pool_not_found").await;
}

#[tokio::test]
async fn a_refused_put_leaves_the_config_as_it_was() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let before = app.configure(&pool, &json!({"max_pool_size": 7, "session": {"max_usage_count": 9}})).await;
    for body in [
        json!({"max_pool_size": 3, "session": {"max_usage_count": 0}}),
        json!({"max_pool_size": 3, "session": {"max_age_secs": 0}}),
        json!({"max_pool_size": 3, "session": {"max_error_score": 0}}),
        json!({"max_pool_size": 3, "session": {"error_score_decrement": -1}}),
        json!({"max_pool_size": 3, "proxy_urls": ["ftp://x.example"]}),
        json!({"max_pool_size": 3, "proxy_url_template": "gopher://{session_id}.example"}),
        json!({"max_pool_size": 3, "extra": 1}),
        json!({"max_pool_size": 1_000_001}),
    ] {
        assert_problem(app.put_pool(&pool, &body).await, 400, "invalid_request").await;
    }
    assert_eq!(app.pool_status(&pool).await, before);
}

#[tokio::test]
async fn an_api_key_guards_v1_but_never_the_service_endpoints() {
    let app = spawn_app_with(|c| c.api_key = vec!["key-one".into(), "key-two".into()]).await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
        assert_eq!(app.get(path).await.status().as_u16(), 200, "{path}");
    }
    let url = app.url("/v1/pools");
    let resp = app.client.get(&url).send().await.unwrap();
    assert_problem(resp, 401, "unauthorized").await;
    for auth in ["Bearer wrong", "key-one", "Basic a2V5LW9uZQ==", "Bearer ", "Bearer key-one2"] {
        let resp = app.client.get(&url).header("authorization", auth).send().await.unwrap();
        assert_problem(resp, 401, "unauthorized").await;
    }
    let pool = unique_pool();
    let resp = app.client.post(app.url(&format!("/v1/pools/{pool}/acquire"))).send().await.unwrap();
    assert_problem(resp, 401, "unauthorized").await;
    for key in ["key-one", "key-two"] {
        let resp = app.client.get(&url).header("authorization", format!("Bearer {key}")).send().await.unwrap();
        expect_json(resp, 200).await;
    }
    let resp = app.client.get(&url).header("authorization", "Bearer key-two").send().await.unwrap();
    let list = expect_json(resp, 200).await;
    assert_eq!(list["pools"].as_array().unwrap().len(), 1, "the refused acquire created no pool");
}

#[tokio::test]
async fn without_a_key_anything_under_v1_is_401_and_with_one_unknown_paths_and_methods_are_404_and_405() {
    let app = spawn_app_with(|c| c.api_key = vec!["key-one".into()]).await;
    let bearer = "Bearer key-one";
    for path in ["/v1/nothing/here", "/v1", "/v1/pools/"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_problem(resp, 401, "unauthorized").await;
        let resp = app.client.get(app.url(path)).header("authorization", bearer).send().await.unwrap();
        assert_problem(resp, 404, "not_found").await;
    }
    let resp = app.client.patch(app.url("/v1/pools")).send().await.unwrap();
    assert_problem(resp, 401, "unauthorized").await;
    let resp = app.client.patch(app.url("/v1/pools")).header("authorization", bearer).send().await.unwrap();
    assert_problem(resp, 405, "method_not_allowed").await;
    let resp = app.client.get(app.url("/nothing")).send().await.unwrap();
    assert_problem(resp, 404, "not_found").await;
}

#[tokio::test]
async fn an_empty_object_declared_as_text_plain_is_unsupported_media_type() {
    let app = spawn_app().await;
    let (pool, id) = app.session_in_new_pool(&json!({})).await;
    let resp = app
        .request(
            Method::POST,
            &format!("/v1/pools/{pool}/sessions/{id}/mark_bad"),
            Some("text/plain"),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_problem(resp, 415, "unsupported_media_type").await;
    assert_eq!(app.session(&pool, &id).await["usage_count"], 0);
}
