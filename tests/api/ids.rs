//! Session ids: every character of `^[A-Za-z0-9_.~-]{1,128}$` works wherever an id goes (paths,
//! create, PATCH, the six per-page calls, imports), except the ids `.` and `..`, which URLs treat as
//! path steps: those are refused everywhere with 400 `invalid_request` naming the id.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, unique_pool, TestApp};

/// Every path that names a session, with the method and a body each accepts.
fn session_paths(pool: &str, id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let base = format!("/v1/pools/{pool}/sessions/{id}");
    vec![
        ("GET", base.clone(), None),
        ("PATCH", base.clone(), Some(json!({"user_data": {"k": "v"}}))),
        ("POST", format!("{base}/mark_good"), None),
        ("POST", format!("{base}/mark_bad"), None),
        ("POST", format!("{base}/status_code"), Some(json!({"status_code": 200}))),
        ("POST", format!("{base}/release"), Some(json!({"lease_id": "x"}))),
        ("POST", format!("{base}/cookies"), Some(json!({"url": "https://example.com/", "set_cookie": ["a=1"]}))),
        ("GET", format!("{base}/cookies?url=https%3A%2F%2Fexample.com%2F"), None),
        ("POST", format!("{base}/retire"), None),
        ("DELETE", base, None),
    ]
}

/// Asserts a 400 `invalid_request` whose detail quotes `id`.
fn assert_names_the_id(answer: &(u16, Value), id: &str, what: &str) {
    assert_eq!(answer.0, 400, "{what}: {}", answer.1);
    assert_eq!(answer.1["type"], "invalid_request", "{what}: {}", answer.1);
    let detail = answer.1["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("{id:?}")), "{what}: the detail does not name {id:?}: {detail}");
}

#[tokio::test]
async fn dot_and_dot_dot_are_refused_in_every_path_that_names_a_session() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "keep"})).await;
    let before = app.pool_status(&pool).await;
    // As sent, and percent-encoded (which the router decodes back to the same id).
    for (segment, id) in [(".", "."), ("..", ".."), ("%2E", "."), ("%2e%2E", "..")] {
        for (method, path, body) in session_paths(&pool, segment) {
            let answer = app.raw_request(method, &path, body.as_ref()).await;
            assert_names_the_id(&answer, id, &format!("{method} {path}"));
        }
    }
    assert_eq!(app.pool_status(&pool).await, before, "a refused call changes nothing");
}

#[tokio::test]
async fn dot_and_dot_dot_are_refused_on_create() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({})).await;
    for id in [".", ".."] {
        let resp = app.create_session(&pool, &json!({ "id": id })).await;
        let problem = assert_problem(resp, 400, "invalid_request").await;
        assert_names_the_id(&(400, problem), id, "create");
    }
    assert_eq!(app.pool_status(&pool).await["session_count"], 1);
    // Dots inside a longer id are ordinary characters.
    for id in ["...", ".a", "a.", "a..b", ".~", "_."] {
        assert_eq!(app.new_session(&pool, &json!({ "id": id })).await["id"], id);
        assert_eq!(app.session(&pool, id).await["id"], id);
    }
}

/// One session with `id` in each import form.
fn documents(id: &str) -> [(&'static str, Value); 3] {
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    [
        (
            "own",
            json!({"config": {}, "sessions": [{"id": "fine", "created_at": created}, {"id": id, "created_at": created}]}),
        ),
        (
            "crawlee python",
            json!({"maxPoolSize": 3, "sessions": [{"id": "fine", "createdAt": created}, {"id": id, "createdAt": created}]}),
        ),
        (
            "crawlee js",
            json!({"usableSessionsCount": 2, "retiredSessionsCount": 0, "sessions": [
                {"id": "fine", "createdAt": created, "cookieJar": {"cookies": []}},
                {"id": id, "createdAt": created, "cookieJar": {"cookies": []}}]}),
        ),
    ]
}

async fn import(app: &TestApp, pool: &str, document: &Value) -> (u16, Value) {
    let resp = app.send_json(reqwest::Method::POST, &format!("/v1/pools/{pool}/import"), Some(document)).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn dot_and_dot_dot_are_refused_in_every_import_form_and_nothing_is_imported() {
    let app = spawn_app().await;
    for id in [".", ".."] {
        for (form, document) in documents(id) {
            let pool = unique_pool();
            let answer = import(&app, &pool, &document).await;
            assert_names_the_id(&answer, id, form);
            assert_problem(app.get_pool(&pool).await, 404, "pool_not_found").await;
        }
    }
}

#[tokio::test]
async fn underscores_work_in_every_place_an_id_goes() {
    let app = spawn_app().await;
    let pool = unique_pool();
    for id in ["_", "__", "_a_", "session_ikOi8iLL1l"] {
        assert_eq!(app.new_session(&pool, &json!({ "id": id })).await["id"], id);
        for (method, path, body) in session_paths(&pool, id) {
            if method == "DELETE" {
                continue;
            }
            let answer = app.raw_request(method, &path, body.as_ref()).await;
            let expected = if path.ends_with("/release") { 409 } else { 200 };
            assert_eq!(answer.0, expected, "{method} {path}: {}", answer.1);
        }
        let patched = app.session(&pool, id).await;
        assert_eq!(patched["user_data"], json!({"k": "v"}), "{id}");
        assert_eq!(app.delete_session(&pool, id).await.status().as_u16(), 204);
    }
    for (form, document) in documents("under_score_") {
        let pool = unique_pool();
        assert_eq!(import(&app, &pool, &document).await, (200, json!({"imported": 2, "skipped": []})), "{form}");
        assert_eq!(app.session(&pool, "under_score_").await["id"], "under_score_", "{form}");
    }
}
