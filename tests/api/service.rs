//! The service endpoints: health, readiness, metrics and the served spec.

use reqwest::Method;
use serde_json::json;

use crate::common::eventually;
use crate::helpers::{expect_json, media_type, spawn_app, spawn_app_with, unique_pool};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let body = expect_json(app.get("/healthz").await, 200).await;
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn openapi_yaml_served_equals_the_repository_file_byte_for_byte() {
    let app = spawn_app().await;
    let resp = app.get("/openapi.yaml").await;
    assert_eq!(resp.status().as_u16(), 200);
    let media = media_type(&resp);
    assert!(media.contains("yaml"), "content type {media:?}");
    let served = resp.bytes().await.expect("body");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let file = std::fs::read(path).expect("read openapi.yaml");
    assert!(served.as_ref() == file.as_slice(), "the served spec differs from {path}");
}

#[tokio::test]
async fn metrics_expose_the_documented_names_after_some_calls() {
    let app = spawn_app().await;
    // Touch /metrics once so a lazily installed recorder exists before the counted calls.
    assert_eq!(app.get("/metrics").await.status().as_u16(), 200);

    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 1})).await;
    let leased = app.leased(&pool, 30.0).await;
    let id = leased["id"].as_str().unwrap().to_owned();
    // Exhausted: the only session is leased.
    assert_eq!(app.acquire(&pool).await.status().as_u16(), 503);
    expect_json(app.mark_good(&pool, &id, None).await, 200).await;
    expect_json(app.mark_bad(&pool, &id, None).await, 200).await;
    expect_json(app.status_code(&pool, &id, &json!({"status_code": 403})).await, 200).await;

    let resp = app.get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(media_type(&resp).starts_with("text/plain"), "metrics content type {:?}", media_type(&resp));
    let text = resp.text().await.unwrap();
    let has = |metric: &str, labels: &[&str]| {
        text.lines().any(|line| line.starts_with(&format!("{metric}{{")) && labels.iter().all(|l| line.contains(l)))
    };
    let p = format!("pool=\"{pool}\"");
    for (metric, labels) in [
        ("session_pool_acquires_total", vec![p.as_str(), "result=\"ok\""]),
        ("session_pool_acquires_total", vec![p.as_str(), "result=\"exhausted\""]),
        ("session_pool_marks_total", vec![p.as_str(), "outcome=\"good\""]),
        ("session_pool_marks_total", vec![p.as_str(), "outcome=\"bad\""]),
        ("session_pool_retirements_total", vec![p.as_str(), "reason=\"blocked_status_code\""]),
        ("session_pool_sessions_created_total", vec![p.as_str()]),
        ("session_pool_status_codes_total", vec![p.as_str(), "code=\"403\""]),
        ("session_pool_sessions", vec![p.as_str(), "state=\"retired\""]),
        ("http_requests_total", vec!["method=\"POST\"", "status=\"200\""]),
        ("http_request_duration_seconds_bucket", vec!["method=\"POST\""]),
    ] {
        assert!(has(metric, &labels), "no {metric} with {labels:?} in the metrics:\n{text}");
    }
}

#[tokio::test]
async fn a_scrape_sees_what_the_clock_did_to_a_pool_nobody_called() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    // Times short of the 1 s sweep: only the scrape itself can apply the clock.
    app.new_session(&pool, &json!({"id": "short", "max_age_secs": 0.2})).await;
    app.new_session(&pool, &json!({"id": "long"})).await;
    app.leased(&pool, 0.2).await;
    let created = std::time::Instant::now();
    let scrape = || async { app.get("/metrics").await.text().await.unwrap() };
    let value = |text: &str, metric: &str, label: &str| {
        let prefix = format!("{metric}{{");
        text.lines()
            .filter(|line| {
                line.starts_with(&prefix) && line.contains(&format!("pool=\"{pool}\"")) && line.contains(label)
            })
            .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    // Scrapes until the expiry and the lease's end show, within the time the sweep would take to come by.
    let settled = |text: &str| {
        value(text, "session_pool_retirements_total", "reason=\"expired\"") == Some(1.0)
            && value(text, "session_pool_sessions", "state=\"leased\"") == Some(0.0)
    };
    let last = std::sync::Mutex::new(String::new());
    let within = std::time::Duration::from_millis(900).saturating_sub(created.elapsed());
    eventually(within, "a scrape shows the expiry and the lease's end", || async {
        let text = scrape().await;
        let done = settled(&text);
        *last.lock().unwrap() = text;
        done
    })
    .await;
    let text = last.into_inner().unwrap();
    let value = |metric: &str, label: &str| {
        value(&text, metric, label).unwrap_or_else(|| panic!("no {metric} {label} for the pool in:\n{text}"))
    };
    assert_eq!(value("session_pool_sessions", "state=\"usable\""), 1.0);
    assert_eq!(value("session_pool_sessions", "state=\"retired\""), 1.0);
    assert_eq!(value("session_pool_sessions", "state=\"leased\""), 0.0);
    assert_eq!(value("session_pool_retirements_total", "reason=\"expired\""), 1.0);
}

#[tokio::test]
async fn http_metrics_label_routes_by_template_not_by_raw_path() {
    let app = spawn_app().await;
    assert_eq!(app.get("/metrics").await.status().as_u16(), 200);
    let pool = unique_pool();
    let id = app.acquired(&pool).await["id"].as_str().unwrap().to_owned();
    // A percent-encoded name is decoded by the router and counted under the same template.
    let encoded = pool.replacen('p', "%70", 1);
    assert_ne!(encoded, pool);
    let resp = app.send_json(Method::POST, &format!("/v1/pools/{encoded}/sessions/{id}/mark_good"), None).await;
    assert_eq!(expect_json(resp, 200).await["usage_count"], 1);
    expect_json(app.mark_good(&pool, &id, None).await, 200).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for route in ["/v1/pools/{pool}/acquire", "/v1/pools/{pool}/sessions/{id}/mark_good"] {
        assert!(
            text.lines().any(|l| l.starts_with("http_requests_total{") && l.contains(&format!("route=\"{route}\""))),
            "no http_requests_total for the route template {route}:\n{text}"
        );
    }
    assert!(
        !text.contains(&format!("/v1/pools/{pool}/acquire")),
        "a raw path (with the pool name) leaked into the route label"
    );
}

#[tokio::test]
async fn a_made_up_method_is_labelled_other_so_clients_cannot_mint_metric_series() {
    let app = spawn_app().await;
    let method = reqwest::Method::from_bytes(b"BREW").unwrap();
    let resp = app.client.request(method, app.url("/v1/pools")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("BREW"), "the made-up method became a label:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains("method=\"other\"")
            && l.contains("route=\"/v1/pools\"")
            && l.contains("status=\"405\"")),
        "no http_requests_total for method other:\n{text}"
    );
}

/// Before the state is restored (and once shutdown began) `/readyz` and every `/v1` call answer 503
/// `not_ready` with `Retry-After`, while `/healthz` and the other service endpoints still answer.
#[tokio::test]
async fn a_server_that_is_not_ready_answers_not_ready_on_v1_and_readyz_only() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let state = session_pool::AppState::starting(session_pool::Config::default());
    let app = session_pool::app(state.clone());
    let call = |method: &str, path: &str| {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).expect("a request");
        app.clone().oneshot(request)
    };
    for (method, path) in
        [("GET", "/readyz"), ("GET", "/v1/pools"), ("POST", "/v1/pools/p/acquire"), ("GET", "/v1/no/such/route")]
    {
        let response = call(method, path).await.expect("an answer");
        assert_eq!(response.status().as_u16(), 503, "{method} {path}");
        assert!(response.headers().contains_key("retry-after"), "{method} {path} has no Retry-After");
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.expect("a body").to_bytes()).expect("JSON");
        assert_eq!(body["type"], "not_ready", "{method} {path}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("starting up")), "{method} {path}: {body}");
    }
    assert_eq!(call("GET", "/healthz").await.expect("an answer").status().as_u16(), 200);
    assert_eq!(call("GET", "/metrics").await.expect("an answer").status().as_u16(), 200);
    // Restored: ready, and the refused acquire created nothing.
    state.lifecycle.set_ready();
    assert_eq!(call("GET", "/readyz").await.expect("an answer").status().as_u16(), 200);
    assert_eq!(call("GET", "/v1/pools/p").await.expect("an answer").status().as_u16(), 404);
    state.lifecycle.begin_shutdown();
    let response = call("GET", "/readyz").await.expect("an answer");
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.expect("a body").to_bytes()).expect("JSON");
    assert_eq!(body["detail"], "the server is shutting down");
    assert_eq!(call("GET", "/v1/pools").await.expect("an answer").status().as_u16(), 503);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_echoed_or_generated() {
    let app = spawn_app_with(|c| c.api_key = vec!["key".into()]).await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).expect("an x-request-id")
    };
    let is_uuid = |id: &str| uuid::Uuid::try_parse(id).is_ok_and(|u| u.get_version_num() == 4);

    // Generated: a fresh UUID v4 per request, on successes and on every kind of error alike.
    let mut seen = std::collections::HashSet::new();
    for (path, status) in [("/healthz", 200), ("/nope", 404), ("/v1/pools", 401)] {
        let resp = app.get(path).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let id = id_of(&resp);
        assert!(is_uuid(&id), "{path}: {id:?}");
        assert!(seen.insert(id), "{path}: a repeated id");
    }

    // Echoed: the client's own id comes back unchanged, whatever the route answers.
    for (path, bearer) in [("/v1/pools", true), ("/v1/pools", false), ("/healthz", false)] {
        let mut req = app.client.get(app.url(path)).header("x-request-id", "trace-42.a");
        if bearer {
            req = req.bearer_auth("key");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(id_of(&resp), "trace-42.a", "{path}");
    }
}

/// The value of `metric{...}` for `pool` with the label `label` (`name="value"`) in a scrape; 0 when
/// the series is not there yet.
fn pool_sample(text: &str, metric: &str, pool: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter(|line| line.contains(&format!("pool=\"{pool}\"")) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn each_acquire_counts_once_in_acquires_total_whatever_its_result() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.configure(&pool, &json!({"max_pool_size": 0})).await;
    let scrape = || async { app.get("/metrics").await.text().await.unwrap() };
    let counts = |text: &str| {
        ["result=\"exhausted\"", "result=\"ok\""].map(|r| pool_sample(text, "session_pool_acquires_total", &pool, r))
    };
    let before = counts(&scrape().await);
    // Nothing to hand out and nothing to create: exhausted.
    assert_eq!(app.acquire(&pool).await.status().as_u16(), 503);
    let text = scrape().await;
    assert_eq!(counts(&text), [before[0] + 1.0, before[1]], "one exhausted acquire, [exhausted, ok]:\n{text}");
    app.new_session(&pool, &json!({})).await;
    app.acquired(&pool).await;
    let text = scrape().await;
    assert_eq!(counts(&text), [before[0] + 1.0, before[1] + 1.0], "then one ok acquire, [exhausted, ok]:\n{text}");
}
