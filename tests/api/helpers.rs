//! The harness of the black-box tests: a [`TestApp`] runs the real server (`session_pool::run`) on
//! `127.0.0.1:0` with a fresh data directory, waits for it as every test does (`tests/common`), and
//! has one helper per endpoint. Helpers return the raw
//! [`Response`]; [`expect_json`] and [`assert_problem`] check status, content type and shape.
//!
//! The store under test is the memory store, or with `SESSION_POOL_TEST_STORE=redis` the Redis
//! store: then one redis-server serves the whole test binary and each [`TestApp`] has a key prefix
//! of its own, so no app sees another's pools ([`store_under_test`]). A test of what only the
//! memory store does returns early through [`skipped_on_redis`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{header, Method, Response};
use serde_json::{json, Value};
use session_pool::Config;
use tokio::sync::oneshot;

pub use crate::common::encode;
use crate::common::redis::{self, Redis};
use crate::common::{temp_dir, wait_until_ready};

/// Every key of the Session object of openapi.yaml.
pub const SESSION_KEYS: [&str; 22] = [
    "id",
    "pool",
    "created_at",
    "expires_at",
    "max_age_secs",
    "usage_count",
    "max_usage_count",
    "error_score",
    "max_error_score",
    "error_score_decrement",
    "blocked_status_codes",
    "user_data",
    "cookies",
    "proxy_url",
    "is_blocked",
    "is_expired",
    "is_max_usage_count_reached",
    "is_usable",
    "retired",
    "retired_reason",
    "retired_at",
    "leased_until",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of this process uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A pool name no other test of this process uses.
pub fn unique_pool() -> String {
    unique("pool")
}

/// A running server and a client for it. Dropping it shuts the server down and removes its data dir.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub shutdown_tx: Option<oneshot::Sender<()>>,
    pub data_dir: PathBuf,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The server with `Config::default()` (plus a fresh data dir).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The redis-server of this test binary when `SESSION_POOL_TEST_STORE=redis`, started at the first
/// call and killed when the process ends; `None` for the memory store (the variable unset, or
/// `memory`). Any other value, or `redis` without a redis-server on `PATH`, fails the test: a run
/// that asked for Redis must not pass on the memory store.
pub fn store_under_test() -> Option<&'static Redis> {
    static REDIS: std::sync::OnceLock<Option<&'static Redis>> = std::sync::OnceLock::new();
    *REDIS.get_or_init(|| match std::env::var("SESSION_POOL_TEST_STORE").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "memory") => None,
        Ok("redis") => {
            assert!(redis::on_path(), "SESSION_POOL_TEST_STORE=redis needs redis-server on PATH");
            let redis = Redis::start().expect("redis-server is on PATH");
            Some(redis.keep_for_this_process())
        }
        Ok(other) => panic!("SESSION_POOL_TEST_STORE={other:?}: expected `memory` or `redis`"),
        Err(e) => panic!("SESSION_POOL_TEST_STORE: {e}"),
    })
}

/// True, after saying so on stderr, when the store under test is Redis and the calling test checks
/// what only the memory store does (`why`); the test then returns at once.
pub fn skipped_on_redis(why: &str) -> bool {
    if store_under_test().is_none() {
        return false;
    }
    let test = std::thread::current().name().unwrap_or("this test").to_owned();
    redis::say(&format!("skipping {test} on the Redis store: {why}"));
    true
}

/// The flags that put a real server process ([`crate::common::Server`]) on the store under test:
/// none for the memory store, `--store` and a key prefix of its own for Redis.
pub fn store_args() -> Vec<String> {
    match store_under_test() {
        None => Vec::new(),
        Some(redis) => vec!["--store".into(), redis.url(), "--redis-key-prefix".into(), unique("app")],
    }
}

/// The server with `Config::default()` changed by `configure`, on the store under test.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = temp_dir("api");
    std::fs::create_dir_all(&data_dir).expect("create the test data dir");
    let mut config = Config { data_dir: data_dir.clone(), ..Config::default() };
    if let Some(redis) = store_under_test() {
        config.store = redis.url().parse().expect("the URL of the test redis-server");
        config.redis_key_prefix = unique("app");
    }
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    config.listen = addr;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = shutdown_rx.await;
        };
        if let Err(e) = session_pool::run(listener, config, shutdown).await {
            eprintln!("the server stopped with an error: {e:#}");
        }
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("build the HTTP client");
    let app = TestApp { addr, client, shutdown_tx: Some(shutdown_tx), data_dir };
    wait_until_ready(&app.client, &format!("http://{addr}"), || {
        server.is_finished().then(|| "session_pool::run returned (its error is on stderr)".to_owned())
    })
    .await;
    app
}

impl TestApp {
    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Any request: `body` is sent as is, with `content_type` when given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        req.send().await.expect("send the request")
    }

    /// A GET of `path`.
    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None, None).await
    }

    /// `method path` with `body` as JSON, or with no body at all.
    pub async fn send_json(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        match body {
            Some(v) => {
                let bytes = serde_json::to_vec(v).expect("serialize the body");
                self.request(method, path, Some("application/json"), Some(bytes)).await
            }
            None => self.request(method, path, None, None).await,
        }
    }

    /// `method path` written on the socket exactly as given, so paths with `.` or `..` segments,
    /// which a URL parser (reqwest's included) would resolve away, reach the server; `body` is sent
    /// as JSON. The status and the body (`Null` when empty).
    pub async fn raw_request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        use std::io::{Read, Write};
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let addr = self.addr;
        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
            stream.write_all(head.as_bytes()).expect("write the head");
            stream.write_all(body.as_bytes()).expect("write the body");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).expect("read the answer");
            answer
        })
        .await
        .expect("the raw request");
        let answer = String::from_utf8(answer).expect("a UTF-8 answer");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in {answer:?}"));
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "a chunked answer: {head}");
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head}"));
        (status, if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") })
    }

    /// `POST /v1/pools/{pool}/acquire` without a body (no lease).
    pub async fn acquire(&self, pool: &str) -> Response {
        self.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), None).await
    }

    /// `POST /v1/pools/{pool}/acquire` with `{"lease_secs": lease_secs}`.
    pub async fn acquire_leased(&self, pool: &str, lease_secs: f64) -> Response {
        let body = json!({ "lease_secs": lease_secs });
        self.send_json(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&body)).await
    }

    /// `POST /v1/pools/{pool}/sessions`.
    pub async fn create_session(&self, pool: &str, body: &Value) -> Response {
        self.send_json(Method::POST, &format!("/v1/pools/{pool}/sessions"), Some(body)).await
    }

    /// `GET /v1/pools/{pool}/sessions/{id}`.
    pub async fn get_session(&self, pool: &str, id: &str) -> Response {
        self.get(&format!("/v1/pools/{pool}/sessions/{id}")).await
    }

    /// `GET /v1/pools/{pool}/sessions?{query}` (`query` without the `?`, may be empty).
    pub async fn list_sessions(&self, pool: &str, query: &str) -> Response {
        if query.is_empty() {
            self.get(&format!("/v1/pools/{pool}/sessions")).await
        } else {
            self.get(&format!("/v1/pools/{pool}/sessions?{query}")).await
        }
    }

    /// `PATCH /v1/pools/{pool}/sessions/{id}`.
    pub async fn patch_session(&self, pool: &str, id: &str, body: &Value) -> Response {
        let path = format!("/v1/pools/{pool}/sessions/{id}");
        self.send_json(Method::PATCH, &path, Some(body)).await
    }

    /// `DELETE /v1/pools/{pool}/sessions/{id}`.
    pub async fn delete_session(&self, pool: &str, id: &str) -> Response {
        let path = format!("/v1/pools/{pool}/sessions/{id}");
        self.send_json(Method::DELETE, &path, None).await
    }

    /// `POST .../{verb}` with `{"lease_id": ...}` when given, else without a body.
    async fn report(&self, pool: &str, id: &str, verb: &str, lease_id: Option<&str>) -> Response {
        let path = format!("/v1/pools/{pool}/sessions/{id}/{verb}");
        let body = lease_id.map(|l| json!({ "lease_id": l }));
        self.send_json(Method::POST, &path, body.as_ref()).await
    }

    /// `POST /v1/pools/{pool}/sessions/{id}/mark_good`.
    pub async fn mark_good(&self, pool: &str, id: &str, lease_id: Option<&str>) -> Response {
        self.report(pool, id, "mark_good", lease_id).await
    }

    /// `POST /v1/pools/{pool}/sessions/{id}/mark_bad`.
    pub async fn mark_bad(&self, pool: &str, id: &str, lease_id: Option<&str>) -> Response {
        self.report(pool, id, "mark_bad", lease_id).await
    }

    /// `POST /v1/pools/{pool}/sessions/{id}/retire`.
    pub async fn retire(&self, pool: &str, id: &str, lease_id: Option<&str>) -> Response {
        self.report(pool, id, "retire", lease_id).await
    }

    /// `POST /v1/pools/{pool}/sessions/{id}/release` with `{"lease_id": lease_id}`.
    pub async fn release(&self, pool: &str, id: &str, lease_id: &str) -> Response {
        self.report(pool, id, "release", Some(lease_id)).await
    }

    /// `POST /v1/pools/{pool}/sessions/{id}/status_code`.
    pub async fn status_code(&self, pool: &str, id: &str, body: &Value) -> Response {
        let path = format!("/v1/pools/{pool}/sessions/{id}/status_code");
        self.send_json(Method::POST, &path, Some(body)).await
    }

    /// `PUT /v1/pools/{pool}`.
    pub async fn put_pool(&self, pool: &str, body: &Value) -> Response {
        self.send_json(Method::PUT, &format!("/v1/pools/{pool}"), Some(body)).await
    }

    /// `GET /v1/pools/{pool}`.
    pub async fn get_pool(&self, pool: &str) -> Response {
        self.get(&format!("/v1/pools/{pool}")).await
    }

    /// `DELETE /v1/pools/{pool}`.
    pub async fn delete_pool(&self, pool: &str) -> Response {
        self.send_json(Method::DELETE, &format!("/v1/pools/{pool}"), None).await
    }

    /// `GET /v1/pools`.
    pub async fn list_pools(&self) -> Response {
        self.get("/v1/pools").await
    }

    // Shorthands for the calls a test expects to succeed.

    /// A new pool holding one session created with `body`: `(pool, id)`.
    pub async fn session_in_new_pool(&self, body: &Value) -> (String, String) {
        let pool = unique_pool();
        let id = id_of(&self.new_session(&pool, body).await);
        (pool, id)
    }

    /// Acquire without a lease, expecting 200.
    pub async fn acquired(&self, pool: &str) -> Value {
        expect_json(self.acquire(pool).await, 200).await
    }

    /// Acquire with a lease, expecting 200.
    pub async fn leased(&self, pool: &str, lease_secs: f64) -> Value {
        expect_json(self.acquire_leased(pool, lease_secs).await, 200).await
    }

    /// Create a session, expecting 201.
    pub async fn new_session(&self, pool: &str, body: &Value) -> Value {
        expect_json(self.create_session(pool, body).await, 201).await
    }

    /// Read a session, expecting 200.
    pub async fn session(&self, pool: &str, id: &str) -> Value {
        expect_json(self.get_session(pool, id).await, 200).await
    }

    /// Read a pool, expecting 200.
    pub async fn pool_status(&self, pool: &str) -> Value {
        expect_json(self.get_pool(pool).await, 200).await
    }

    /// PUT a pool, expecting 200 or 201.
    pub async fn configure(&self, pool: &str, body: &Value) -> Value {
        let resp = self.put_pool(pool, body).await;
        let status = resp.status().as_u16();
        assert!(status == 200 || status == 201, "PUT /v1/pools/{pool} answered {status}");
        expect_json(resp, status).await
    }

    /// Every session of the pool with the given `state`, through every page.
    pub async fn all_sessions(&self, pool: &str, state: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut query = format!("state={state}&limit=1000");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = expect_json(self.list_sessions(pool, &query).await, 200).await;
            out.extend(page["sessions"].as_array().expect("sessions").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("listing {pool} never ended");
    }

    /// The ids of [`TestApp::all_sessions`].
    pub async fn ids(&self, pool: &str, state: &str) -> BTreeSet<String> {
        self.all_sessions(pool, state).await.iter().map(id_of).collect()
    }
}

/// The content type of a response, without parameters, lower case.
pub fn media_type(resp: &Response) -> String {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Asserts `status` and an `application/json` body, and returns the body.
pub async fn expect_json(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let media = media_type(&resp);
    let text = resp.text().await.expect("read the body");
    assert_eq!(got, status, "expected {status}, got {got}: {text}");
    assert_eq!(media, "application/json", "content type of: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an RFC 9457 problem with `status` and `type` = `code`, a title and a non-empty detail;
/// returns the body.
pub async fn assert_problem(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status().as_u16();
    let media = media_type(&resp);
    let text = resp.text().await.expect("read the body");
    assert_eq!(got, status, "expected {status} {code}, got {got}: {text}");
    assert_eq!(media, "application/problem+json", "content type of: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem is not JSON ({e}): {text}"));
    assert_eq!(body["type"], code, "problem type: {text}");
    assert_eq!(body["status"], status, "problem status: {text}");
    assert!(body["title"].as_str().is_some_and(|t| !t.trim().is_empty()), "problem without title: {text}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.trim().is_empty()), "problem without detail: {text}");
    body
}

/// Asserts a 4xx problem+json of any code, and returns `(status, body)`.
pub async fn assert_client_error(resp: Response, what: &str) -> (u16, Value) {
    let got = resp.status().as_u16();
    let media = media_type(&resp);
    let text = resp.text().await.expect("read the body");
    assert!((400..500).contains(&got), "{what}: expected a 4xx, got {got}: {text}");
    assert_eq!(media, "application/problem+json", "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    assert_eq!(body["status"], got, "{what}: {text}");
    assert!(body["type"].as_str().is_some(), "{what}: {text}");
    (got, body)
}

/// The `id` of a session.
pub fn id_of(session: &Value) -> String {
    session["id"].as_str().unwrap_or_else(|| panic!("no id in {session}")).to_owned()
}

/// A number field as `f64`.
pub fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{value} is not a number"))
}

/// Asserts that `session` has exactly the Session keys of openapi.yaml (and `lease` when `leased`).
pub fn assert_session_shape(session: &Value, leased: bool) {
    let obj = session.as_object().unwrap_or_else(|| panic!("a session is an object: {session}"));
    let mut expected: BTreeSet<&str> = SESSION_KEYS.into_iter().collect();
    if leased {
        expected.insert("lease");
    }
    let got: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(got, expected, "session keys of {session}");
}

/// Parses an RFC 3339 UTC timestamp ending in `Z` to nanoseconds since the Unix epoch; panics on
/// anything else.
pub fn nanos(ts: &str) -> i128 {
    let bad = || -> ! { panic!("{ts:?} is not an RFC 3339 UTC timestamp with Z") };
    let rest = ts.strip_suffix('Z').unwrap_or_else(|| bad());
    let (date, time) = rest.split_once('T').unwrap_or_else(|| bad());
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        bad();
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    if t.len() != 3 || t.iter().any(|p| p.len() != 2) || frac.len() > 9 {
        bad();
    }
    let n = |s: &str| -> i128 {
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            bad();
        }
        s.parse().unwrap_or_else(|_| bad())
    };
    let (year, month, day) = (n(d[0]), n(d[1]), n(d[2]));
    let (hour, minute, second) = (n(t[0]), n(t[1]), n(t[2]));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        bad();
    }
    let frac_nanos = if frac.is_empty() { 0 } else { n(frac) * 10_i128.pow(9 - frac.len() as u32) };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000_000 + frac_nanos
}

/// `nanos` of a timestamp field.
pub fn ts(value: &Value) -> i128 {
    nanos(value.as_str().unwrap_or_else(|| panic!("{value} is not a timestamp string")))
}

/// Seconds as nanoseconds, rounded.
pub fn secs_to_nanos(secs: f64) -> i128 {
    (secs * 1e9).round() as i128
}
