//! No panic, no 5xx: garbage thrown at every endpoint gets a 4xx problem, and the server keeps
//! serving. A live sweep over hand-picked nasty inputs, and property tests through `oneshot`.

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use session_pool::{AppState, Config};
use tower::ServiceExt;

use crate::helpers::{assert_client_error, encode, expect_json, id_of, spawn_app, unique_pool};

/// The endpoints that read a body, with `{pool}` and `{id}` to fill in.
const BODY_ENDPOINTS: [(&str, &str); 9] = [
    ("POST", "/v1/pools/{pool}/acquire"),
    ("POST", "/v1/pools/{pool}/sessions"),
    ("PUT", "/v1/pools/{pool}"),
    ("PATCH", "/v1/pools/{pool}/sessions/{id}"),
    ("POST", "/v1/pools/{pool}/sessions/{id}/mark_good"),
    ("POST", "/v1/pools/{pool}/sessions/{id}/mark_bad"),
    ("POST", "/v1/pools/{pool}/sessions/{id}/retire"),
    ("POST", "/v1/pools/{pool}/sessions/{id}/release"),
    ("POST", "/v1/pools/{pool}/sessions/{id}/status_code"),
];

/// A small deterministic generator (xorshift64*), so the sweep is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn nasty_bodies() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"}".to_vec(),
        b"[".to_vec(),
        b"\"".to_vec(),
        b"nul".to_vec(),
        b"1e999".to_vec(),
        b"-".to_vec(),
        b"{\"a\":}".to_vec(),
        b"{\"lease_secs\": 1e999}".to_vec(),
        b"{\"lease_secs\": NaN}".to_vec(),
        b"{\"lease_secs\": Infinity}".to_vec(),
        b"{\"max_pool_size\": 18446744073709551616}".to_vec(),
        b"{\"max_usage_count\": 99999999999999999999999999999999}".to_vec(),
        b"{\"status_code\": 18446744073709551615}".to_vec(),
        b"{\"status_code\": -9223372036854775809}".to_vec(),
        b"{\"lease_id\": \"\\ud800\"}".to_vec(),
        b"{\"user_data\": \"\\u0000\"}".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"\x00".to_vec(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
        "[".repeat(50_000).into_bytes(),
        b"[1, 2, 3]".to_vec(),
        b"\"just a string\"".to_vec(),
        b"12345".to_vec(),
        b"true".to_vec(),
        b"null".to_vec(),
    ];
    for len in [1, 7, 64, 1000] {
        for _ in 0..3 {
            let mut b = rng.bytes(len);
            // Never whitespace-only or a JSON object, which may legitimately succeed.
            b.insert(0, b'#');
            bodies.push(b);
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bodies_get_a_4xx_problem_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let pool = unique_pool();
    let id = id_of(&app.new_session(&pool, &json!({"id": "s1"})).await);
    let before = app.session(&pool, &id).await;
    for body in nasty_bodies() {
        for (method, template) in BODY_ENDPOINTS {
            let path = template.replace("{pool}", &pool).replace("{id}", &id);
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            for ct in [Some("application/json"), Some("text/plain"), None] {
                let resp = app.request(m.clone(), &path, ct, Some(body.clone())).await;
                let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
                assert_client_error(resp, &format!("{method} {template} {ct:?} {shown:?}")).await;
            }
        }
    }
    assert_eq!(app.session(&pool, &id).await, before, "garbage changed the session");
    expect_json(app.get("/healthz").await, 200).await;
    app.acquired(&pool).await;
}

#[tokio::test]
async fn an_empty_json_body_means_all_defaults_where_every_field_is_optional() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s1"})).await;
    for (method, template, expected) in [
        ("POST", "/v1/pools/{pool}/acquire", 200),
        ("POST", "/v1/pools/{pool}/sessions", 201),
        ("PUT", "/v1/pools/{pool}", 200),
        ("PATCH", "/v1/pools/{pool}/sessions/s1", 200),
        ("POST", "/v1/pools/{pool}/sessions/s1/mark_good", 200),
        ("POST", "/v1/pools/{pool}/sessions/s1/mark_bad", 200),
    ] {
        let path = template.replace("{pool}", &pool);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app.request(m, &path, Some("application/json"), Some(Vec::new())).await;
        expect_json(resp, expected).await;
    }
    for template in ["/v1/pools/{pool}/sessions/s1/release", "/v1/pools/{pool}/sessions/s1/status_code"] {
        let path = template.replace("{pool}", &pool);
        let resp = app.request(Method::POST, &path, Some("application/json"), Some(Vec::new())).await;
        let (status, body) = assert_client_error(resp, template).await;
        assert_eq!((status, body["type"].as_str()), (400, Some("invalid_request")), "{template}");
    }
    expect_json(app.get("/healthz").await, 200).await;
}

#[tokio::test]
async fn garbage_in_paths_and_queries_gets_a_4xx_problem() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s1"})).await;
    let mut rng = Rng(42);
    let mut segments: Vec<String> = vec![
        "%00".into(),
        "%FF%FE".into(),
        "%".into(),
        "%zz".into(),
        "..".into(),
        ".".into(),
        "a".repeat(5000),
        "%E2%80%AE".into(),
    ];
    for _ in 0..10 {
        segments.push(encode(&String::from_utf8_lossy(&rng.bytes(12))));
    }
    for seg in &segments {
        for path in [
            format!("/v1/pools/{seg}"),
            format!("/v1/pools/{seg}/sessions"),
            format!("/v1/pools/{pool}/sessions/{seg}"),
            format!("/v1/pools/{pool}/sessions/{seg}/mark_good"),
            format!("/v1/pools/{pool}/sessions?state={seg}"),
            format!("/v1/pools/{pool}/sessions?limit={seg}"),
            format!("/v1/pools/{pool}/sessions?cursor={seg}"),
        ] {
            let method = if path.ends_with("mark_good") { Method::POST } else { Method::GET };
            let resp = app.request(method, &path, None, None).await;
            let status = resp.status().as_u16();
            if path.contains("cursor=") && status == 200 {
                // An opaque cursor the server cannot read may also just mean "from the start".
                continue;
            }
            assert_client_error(resp, &path).await;
        }
    }
    expect_json(app.get("/healthz").await, 200).await;
}

// Property tests straight against the router, without a socket.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn test_config() -> Config {
    Config { data_dir: crate::common::temp_dir("oneshot"), ..Config::default() }
}

async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String, Vec<u8>) {
    let resp = app.clone().oneshot(request).await.expect("infallible");
    let status = resp.status().as_u16();
    let media = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, media, body)
}

fn assert_problem_bytes(status: u16, media: &str, body: &[u8], what: &str) {
    let text = String::from_utf8_lossy(body);
    assert!((400..500).contains(&status), "{what}: {status} {text}");
    assert!(media.starts_with("application/problem+json"), "{what}: {media} {text}");
    let problem: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(problem["status"], status, "{what}: {text}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_body_that_is_not_a_json_object_is_a_4xx_problem(
        endpoint in 0..BODY_ENDPOINTS.len(),
        content_type in prop::sample::select(vec!["application/json", "text/plain", "application/json; charset=utf-8", ""]),
        body in prop::collection::vec(any::<u8>(), 1..600),
    ) {
        let parsed = serde_json::from_slice::<Value>(&body);
        prop_assume!(!matches!(parsed, Ok(Value::Object(_))));
        prop_assume!(!body.iter().all(u8::is_ascii_whitespace));
        let rt = runtime();
        rt.block_on(async {
            let app = session_pool::app(AppState::new(test_config()));
            let create = Request::post("/v1/pools/p/sessions")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"id":"s1"}"#))
                .unwrap();
            let (status, _, _) = call(&app, create).await;
            assert_eq!(status, 201);
            let (method, template) = BODY_ENDPOINTS[endpoint];
            let path = template.replace("{pool}", "p").replace("{id}", "s1");
            let mut builder = Request::builder().method(method).uri(&path);
            if !content_type.is_empty() {
                builder = builder.header(header::CONTENT_TYPE, content_type);
            }
            let (status, media, out) = call(&app, builder.body(Body::from(body.clone())).unwrap()).await;
            assert_problem_bytes(status, &media, &out, &format!("{method} {path}"));
            let (status, _, _) = call(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
            assert_eq!(status, 200);
        });
    }

    #[test]
    fn any_pool_or_session_segment_is_answered_without_a_5xx(
        pool in prop::collection::vec(any::<u8>(), 1..200),
        id in prop::collection::vec(any::<u8>(), 1..200),
    ) {
        prop_assume!(pool != b"default");
        let (pool, id) = (pct(&pool), pct(&id));
        let rt = runtime();
        rt.block_on(async {
            let app = session_pool::app(AppState::new(test_config()));
            for (method, path) in [
                ("GET", format!("/v1/pools/{pool}")),
                ("GET", format!("/v1/pools/{pool}/sessions")),
                ("GET", format!("/v1/pools/{pool}/sessions/{id}")),
                ("DELETE", format!("/v1/pools/{pool}/sessions/{id}")),
                ("POST", format!("/v1/pools/default/sessions/{id}/mark_bad")),
                ("GET", format!("/v1/pools/default/sessions/{id}")),
            ] {
                let request = Request::builder().method(method).uri(&path).body(Body::empty()).unwrap();
                let (status, media, out) = call(&app, request).await;
                assert_problem_bytes(status, &media, &out, &format!("{method} {path}"));
            }
        });
    }
}

/// Percent-encodes every byte.
fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}
