//! Export and import, black-box: the own form round-trips a pool exactly; Crawlee for Python's and
//! for JavaScript's real persisted states come in with their ids, counters, scores, user data and
//! cookies; unusable sessions come in retired; existing ids are skipped; a malformed document or one
//! past `--max-sessions` imports nothing and creates no pool; the Crawlee export has Crawlee's shape.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use session_pool::Config;

use crate::helpers::{self, unique};

/// shared/fixtures/crawlee-python-pool-state.json: written by Crawlee for Python 1.11.
const PYTHON_STATE: &str = r#"{
 "maxPoolSize": 3,
 "sessions": [
  {"id": "j1KiYbCmsC", "maxAge": "PT50M", "userData": {}, "maxErrorScore": 3.0, "errorScoreDecrement": 0.5,
   "createdAt": "2026-11-25T19:43:48.860348Z", "usageCount": 0, "maxUsageCount": 50, "errorScore": 0.0,
   "cookies": [], "blockedStatusCodes": [401, 403, 429]},
  {"id": "IxdDHGgaER", "maxAge": "PT50M", "userData": {}, "maxErrorScore": 3.0, "errorScoreDecrement": 0.5,
   "createdAt": "2026-11-25T19:43:48.860392Z", "usageCount": 0, "maxUsageCount": 50, "errorScore": 0.0,
   "cookies": [], "blockedStatusCodes": [401, 403, 429]},
  {"id": "Qot0CHEkib", "maxAge": "PT50M", "userData": {"login": "alice"}, "maxErrorScore": 3.0,
   "errorScoreDecrement": 0.5, "createdAt": "2026-11-25T19:43:48.860409Z", "usageCount": 1, "maxUsageCount": 50,
   "errorScore": 1.0,
   "cookies": [
    {"name": "sid", "value": "abc123", "domain": "example.com", "path": "/", "secure": true, "http_only": true,
     "same_site": "Lax"},
    {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings", "secure": false,
     "http_only": false}
   ],
   "blockedStatusCodes": [401, 403, 429]},
  {"id": "retired_one", "maxAge": "PT10M", "userData": {}, "maxErrorScore": 3.0, "errorScoreDecrement": 0.5,
   "createdAt": "2026-11-25T19:43:48.860857Z", "usageCount": 0, "maxUsageCount": 50, "errorScore": 3.0,
   "cookies": [{"name": "plain", "value": "v", "domain": "", "path": "/", "secure": false, "http_only": false}],
   "blockedStatusCodes": [401, 403, 429]}
 ],
 "sessionCount": 4,
 "usableSessionCount": 3,
 "retiredSessionCount": 1
}"#;

/// shared/fixtures/crawlee-js-pool-state.json: written by Crawlee for JavaScript 3.18.
const JS_STATE: &str = r#"{
 "usableSessionsCount": 1,
 "retiredSessionsCount": 0,
 "sessions": [
  {
   "id": "session_ikOi8iLL1l",
   "cookieJar": {
    "version": "tough-cookie@6.1.0", "storeType": "MemoryCookieStore", "rejectPublicSuffixes": true,
    "enableLooseMode": false, "allowSpecialUseDomain": true, "enforceSecureOriginOnStorage": true,
    "prefixSecurity": "silent",
    "cookies": [
     {"key": "sid", "value": "abc123", "domain": "example.com", "path": "/", "secure": true, "httpOnly": true,
      "hostOnly": true, "creation": "2026-11-25T19:43:49.193Z", "lastAccessed": "2026-11-25T19:43:49.193Z",
      "sameSite": "lax"},
     {"key": "theme", "value": "dark", "domain": "example.com", "path": "/settings", "hostOnly": false,
      "creation": "2026-11-25T19:43:49.194Z", "lastAccessed": "2026-11-25T19:43:49.194Z"}
    ]
   },
   "userData": {"login": "alice"},
   "maxErrorScore": 3,
   "errorScoreDecrement": 0.5,
   "expiresAt": "2026-11-25T20:33:49.189Z",
   "createdAt": "2026-11-25T19:43:49.189Z",
   "usageCount": 1,
   "maxUsageCount": 50,
   "errorScore": 1
  }
 ]
}"#;

// ---------------------------------------------------------------------------------------------
// Harness

/// The shared test server, with retired sessions kept for an hour, and the calls these tests make.
struct TestApp(helpers::TestApp);

async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    TestApp(
        helpers::spawn_app_with(|config| {
            config.retired_retention_secs = 3600.0;
            configure(config);
        })
        .await,
    )
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// `method path` with `body` sent as is (JSON); the status and the parsed body (Null if none).
    async fn raw(&self, method: Method, path: &str, body: Option<String>) -> (u16, Value) {
        let mut request = self.0.client.request(method, self.0.url(path));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON") })
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.raw(method, path, body.map(Value::to_string)).await
    }

    /// `method path`, expecting `status`; the body.
    async fn expect(&self, method: Method, path: &str, body: Option<&Value>, status: u16) -> Value {
        let (got, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    async fn import(&self, pool: &str, document: &Value) -> (u16, Value) {
        self.call(Method::POST, &format!("/v1/pools/{pool}/import"), Some(document)).await
    }

    async fn imported(&self, pool: &str, document: &Value) -> Value {
        self.expect(Method::POST, &format!("/v1/pools/{pool}/import"), Some(document), 200).await
    }

    async fn export(&self, pool: &str) -> Value {
        self.expect(Method::GET, &format!("/v1/pools/{pool}/export"), None, 200).await
    }

    async fn export_crawlee(&self, pool: &str) -> Value {
        self.expect(Method::GET, &format!("/v1/pools/{pool}/export?format=crawlee"), None, 200).await
    }

    async fn create(&self, pool: &str, body: Value) -> Value {
        self.expect(Method::POST, &format!("/v1/pools/{pool}/sessions"), Some(&body), 201).await
    }

    async fn post(&self, path: &str) -> Value {
        self.expect(Method::POST, path, None, 200).await
    }

    async fn session(&self, pool: &str, id: &str) -> Value {
        self.expect(Method::GET, &format!("/v1/pools/{pool}/sessions/{id}"), None, 200).await
    }

    async fn pool_status(&self, pool: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/v1/pools/{pool}"), None).await
    }
}

/// Asserts a problem+json answer with `status` and `code`.
fn assert_problem(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["type"], code, "{}", answer.1);
    assert!(answer.1["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", answer.1);
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap_or_else(|| panic!("{value} is not a timestamp"));
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}")).with_timezone(&Utc)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A session of a list by id.
fn by_id<'a>(sessions: &'a Value, id: &str) -> &'a Value {
    sessions
        .as_array()
        .expect("a list of sessions")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no session {id} in {sessions}"))
}

/// The fixture with every `createdAt` (and `expiresAt`) moved so the first session was created a
/// minute ago: the fixtures' own times are long past, which would make every session expired.
fn recent(fixture: &str) -> Value {
    let mut doc: Value = serde_json::from_str(fixture).expect("a fixture");
    let first = time(&doc["sessions"][0]["createdAt"]);
    let shift = Utc::now() - TimeDelta::seconds(60) - first;
    for session in doc["sessions"].as_array_mut().expect("sessions") {
        for key in ["createdAt", "expiresAt"] {
            if session.get(key).is_some() {
                session[key] = json!(rfc3339(time(&session[key]) + shift));
            }
        }
    }
    doc
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("an object").keys().cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// The own form

#[tokio::test]
async fn the_own_form_round_trips_a_pool_exactly() {
    let app = spawn_app().await;
    let (a, b) = (unique("from"), unique("to"));
    let config = json!({"max_pool_size": 0, "proxy_urls": ["http://proxy.example:8000"],
        "session": {"max_age_secs": 1800.5, "max_usage_count": 7, "max_error_score": 2.5, "error_score_decrement": 0.25,
                    "blocked_status_codes": [403, 451]}});
    app.expect(Method::PUT, &format!("/v1/pools/{a}"), Some(&config), 201).await;
    app.create(
        &a,
        json!({"id": "alice", "user_data": {"login": {"user": "alice", "tries": [1, 2]}}, "cookies": [
        {"name": "sid", "value": "abc", "domain": "example.com", "secure": true, "http_only": true, "same_site": "Lax",
         "expires": 4_102_444_800_i64},
        {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings"},
        {"name": "any", "value": "1"}]}),
    )
    .await;
    app.post(&format!("/v1/pools/{a}/sessions/alice/mark_bad")).await;
    app.post(&format!("/v1/pools/{a}/sessions/alice/mark_good")).await;
    app.create(&a, json!({"id": "own-settings", "max_age_secs": 0.5e6, "max_usage_count": 3, "proxy_url": null})).await;
    app.create(&a, json!({"id": "gone"})).await;
    app.post(&format!("/v1/pools/{a}/sessions/gone/retire")).await;
    app.create(&a, json!({"id": "worn", "max_usage_count": 1})).await;
    app.post(&format!("/v1/pools/{a}/sessions/worn/mark_good")).await;
    app.create(&a, json!({"id": "held"})).await;
    let leased =
        app.expect(Method::POST, &format!("/v1/pools/{a}/acquire"), Some(&json!({"lease_secs": 600})), 200).await;
    assert!(leased["leased_until"].is_string());

    let exported = app.export(&a).await;
    assert_eq!(keys(&exported), BTreeSet::from(["config".to_owned(), "sessions".to_owned()]));
    let status = app.pool_status(&a).await.1;
    assert_eq!(exported["config"], status["config"], "the config is the PoolConfig object");
    let sessions = exported["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 5);
    for session in sessions {
        assert!(session.get("lease").is_none() && session["leased_until"].is_null(), "leases are not exported");
        let mut read = app.session(&a, session["id"].as_str().expect("an id")).await;
        read["leased_until"] = Value::Null;
        assert_eq!(*session, read, "an exported session is the Session object");
    }
    let gone = by_id(&exported["sessions"], "gone");
    assert_eq!((&gone["retired"], &gone["retired_reason"]), (&json!(true), &json!("retired")));

    let answer = app.imported(&b, &exported).await;
    assert_eq!(answer, json!({"imported": 5, "skipped": []}));
    let again = app.export(&b).await;
    assert_eq!(again["config"], exported["config"]);
    let mut expected = exported["sessions"].clone();
    for session in expected.as_array_mut().expect("sessions") {
        session["pool"] = json!(b);
    }
    assert_eq!(again["sessions"], expected, "every field equal except the pool's name");
    let held = app.session(&b, leased["id"].as_str().expect("an id")).await;
    assert!(held["is_usable"].as_bool().expect("a flag") && held["leased_until"].is_null());
}

#[tokio::test]
async fn an_existing_pool_keeps_its_config_and_existing_ids_are_skipped() {
    let app = spawn_app().await;
    let pool = unique("shop");
    app.expect(Method::PUT, &format!("/v1/pools/{pool}"), Some(&json!({"max_pool_size": 5})), 201).await;
    app.create(&pool, json!({"id": "a", "user_data": {"mine": true}})).await;
    app.post(&format!("/v1/pools/{pool}/sessions/a/mark_bad")).await;
    let document = json!({"config": {"max_pool_size": 99}, "sessions": [
        {"id": "a", "created_at": "2026-01-01T00:00:00Z", "user_data": {"theirs": true}, "usage_count": 9},
        {"id": "b", "created_at": rfc3339(Utc::now()), "user_data": {"theirs": true}}]});
    let answer = app.imported(&pool, &document).await;
    assert_eq!(answer, json!({"imported": 1, "skipped": [{"id": "a", "reason": "exists"}]}));
    let a = app.session(&pool, "a").await;
    assert_eq!(
        (&a["user_data"], &a["usage_count"], &a["error_score"]),
        (&json!({"mine": true}), &json!(1), &json!(1.0))
    );
    assert_eq!(app.session(&pool, "b").await["user_data"], json!({"theirs": true}));
    assert_eq!(app.pool_status(&pool).await.1["config"]["max_pool_size"], 5, "the pool keeps its config");

    let twice = app.imported(&pool, &document).await;
    assert_eq!(twice["imported"], 0);
    assert_eq!(twice["skipped"], json!([{"id": "a", "reason": "exists"}, {"id": "b", "reason": "exists"}]));
}

#[tokio::test]
async fn unusable_sessions_come_in_retired_with_the_reason_from_their_state() {
    let app = spawn_app().await;
    let pool = unique("old");
    let now = Utc::now();
    let created = rfc3339(now - TimeDelta::seconds(10));
    let document = json!({"config": {}, "sessions": [
        {"id": "fresh", "created_at": created},
        {"id": "blocked", "created_at": created, "error_score": 3.0},
        {"id": "worn", "created_at": created, "usage_count": 4, "max_usage_count": 4},
        {"id": "expired", "created_at": rfc3339(now - TimeDelta::hours(2)), "max_age_secs": 60},
        {"id": "said-so", "created_at": created, "retired": true, "retired_reason": "blocked_status_code",
         "retired_at": rfc3339(now - TimeDelta::seconds(5))},
        {"id": "said-so-plainly", "created_at": created, "retired": true}]});
    let before = Utc::now() - TimeDelta::seconds(1);
    assert_eq!(app.imported(&pool, &document).await["imported"], 6);
    let after = Utc::now() + TimeDelta::seconds(1);
    assert_eq!(app.session(&pool, "fresh").await["is_usable"], true);
    for (id, reason) in
        [("blocked", "blocked"), ("worn", "max_usage_count"), ("expired", "expired"), ("said-so-plainly", "retired")]
    {
        let session = app.session(&pool, id).await;
        assert_eq!((&session["retired"], &session["retired_reason"]), (&json!(true), &json!(reason)), "{id}");
        let at = time(&session["retired_at"]);
        assert!(before <= at && at <= after, "{id} retired at the import: {at}");
    }
    let said_so = app.session(&pool, "said-so").await;
    assert_eq!(said_so["retired_reason"], "blocked_status_code");
    assert_eq!(time(&said_so["retired_at"]), time(&document["sessions"][4]["retired_at"]), "the document's time wins");
    let status = app.pool_status(&pool).await.1;
    assert_eq!((&status["usable_session_count"], &status["retired_session_count"]), (&json!(1), &json!(5)));
    for _ in 0..20 {
        let acquired = app.post(&format!("/v1/pools/{pool}/acquire")).await;
        assert_ne!(acquired["id"], "blocked", "a retired import is never handed out");
    }
}

/// An imported session that is already unusable retires at the import, not when it stopped being
/// usable (for an expired one that would be its `expires_at`, long past), unless the document says
/// when: in every form.
#[tokio::test]
async fn unusable_sessions_of_every_form_retire_at_the_import_unless_the_document_says_when() {
    let app = spawn_app().await;
    let now = Utc::now();
    let long_ago = rfc3339(now - TimeDelta::hours(3));
    let recently = rfc3339(now - TimeDelta::seconds(10));
    let documents = [
        json!({"config": {}, "sessions": [
            {"id": "expired", "created_at": long_ago, "max_age_secs": 60, "retired": false},
            {"id": "blocked", "created_at": recently, "error_score": 5.0},
            {"id": "said-expired", "created_at": long_ago, "max_age_secs": 60, "retired_reason": "expired"}]}),
        json!({"maxPoolSize": 5, "sessions": [
            {"id": "expired", "createdAt": long_ago, "maxAge": "PT1M"},
            {"id": "blocked", "createdAt": recently, "errorScore": 3.0, "maxErrorScore": 3.0},
            {"id": "worn", "createdAt": recently, "usageCount": 2, "maxUsageCount": 2}]}),
        json!({"usableSessionsCount": 0, "retiredSessionsCount": 3, "sessions": [
            {"id": "expired", "createdAt": long_ago, "expiresAt": rfc3339(now - TimeDelta::hours(2))},
            {"id": "blocked", "createdAt": recently, "errorScore": 4, "maxErrorScore": 3},
            {"id": "worn", "createdAt": recently, "usageCount": 50, "maxUsageCount": 50}]}),
    ];
    for document in documents {
        let pool = unique("unusable");
        let before = Utc::now() - TimeDelta::seconds(1);
        assert_eq!(app.imported(&pool, &document).await["imported"], 3, "{document}");
        let after = Utc::now() + TimeDelta::seconds(1);
        for source in document["sessions"].as_array().expect("sessions") {
            let id = source["id"].as_str().expect("an id");
            let session = app.session(&pool, id).await;
            assert_eq!(session["retired"], true, "{id} of {document}");
            let at = time(&session["retired_at"]);
            assert!(before <= at && at <= after, "{id} of {document} retired at {at}, not at the import");
        }
    }
    let kept = rfc3339(now - TimeDelta::minutes(30));
    let document = json!({"config": {}, "sessions": [
        {"id": "dated", "created_at": long_ago, "max_age_secs": 60, "retired_reason": "expired", "retired_at": kept}]});
    let pool = unique("unusable-dated");
    app.imported(&pool, &document).await;
    assert_eq!(time(&app.session(&pool, "dated").await["retired_at"]), time(&json!(kept)), "the document's time");
}

// ---------------------------------------------------------------------------------------------
// Crawlee for Python and for JavaScript

#[tokio::test]
async fn crawlee_pythons_state_comes_in_with_ids_counters_scores_user_data_and_cookies() {
    let app = spawn_app_with(|c| {
        c.max_pool_size = 42;
        c.max_age_secs = 120.0;
    })
    .await;
    let pool = unique("py");
    let document = recent(PYTHON_STATE);
    let before = Utc::now() - TimeDelta::seconds(1);
    assert_eq!(app.imported(&pool, &document).await, json!({"imported": 4, "skipped": []}));
    let config = &app.pool_status(&pool).await.1["config"];
    assert_eq!(config["max_pool_size"], 3, "its maxPoolSize");
    assert_eq!(config["session"]["max_age_secs"], 120.0, "with the server's session defaults");

    for source in document["sessions"].as_array().expect("sessions") {
        let id = source["id"].as_str().expect("an id");
        let session = app.session(&pool, id).await;
        assert_eq!(session["usage_count"], source["usageCount"], "{id}");
        assert_eq!(session["error_score"], source["errorScore"], "{id}");
        assert_eq!(session["user_data"], source["userData"], "{id}");
        assert_eq!(session["cookies"], source["cookies"], "{id}: cookies in the same shape, domains as they were");
        assert_eq!(session["blocked_status_codes"], source["blockedStatusCodes"], "{id}");
        assert_eq!(time(&session["created_at"]), time(&source["createdAt"]), "{id}");
    }
    assert_eq!(app.session(&pool, "Qot0CHEkib").await["max_age_secs"], 3000.0);
    let retired = app.session(&pool, "retired_one").await;
    assert_eq!(retired["max_age_secs"], 600.0);
    assert_eq!((&retired["retired"], &retired["retired_reason"]), (&json!(true), &json!("blocked")));
    assert!(time(&retired["retired_at"]) >= before);
    let alice = app.session(&pool, "Qot0CHEkib").await;
    assert_eq!((&alice["is_usable"], &alice["cookies"][0]["domain"]), (&json!(true), &json!("example.com")));
    assert_eq!(alice["cookies"][1]["domain"], ".example.com");
}

#[tokio::test]
async fn crawlee_pythons_state_as_written_long_ago_comes_in_expired() {
    let app = spawn_app().await;
    let pool = unique("py-old");
    let document: Value = serde_json::from_str(PYTHON_STATE).expect("the fixture");
    assert_eq!(app.imported(&pool, &document).await["imported"], 4);
    let retired = app.session(&pool, "retired_one").await;
    assert_eq!(retired["retired_reason"], "blocked", "blocked decides before expiry");
    for source in document["sessions"].as_array().expect("sessions").iter().filter(|s| s["id"] != "retired_one") {
        let session = app.session(&pool, source["id"].as_str().expect("an id")).await;
        let expires = time(&session["expires_at"]);
        if expires <= Utc::now() {
            assert_eq!((&session["retired"], &session["retired_reason"]), (&json!(true), &json!("expired")));
        }
        assert_eq!(session["usage_count"], source["usageCount"]);
    }
}

#[tokio::test]
async fn crawlee_javascripts_state_comes_in_with_its_tough_cookies_and_max_age() {
    let app = spawn_app_with(|c| {
        c.blocked_status_codes = session_pool::config::StatusCodes(vec![403]);
        c.max_pool_size = 17;
    })
    .await;
    let pool = unique("js");
    let document = recent(JS_STATE);
    assert_eq!(app.imported(&pool, &document).await, json!({"imported": 1, "skipped": []}));
    assert_eq!(app.pool_status(&pool).await.1["config"]["max_pool_size"], 17, "the server's defaults");
    let session = app.session(&pool, "session_ikOi8iLL1l").await;
    assert_eq!(session["max_age_secs"], 3000.0, "expiresAt - createdAt");
    assert_eq!(time(&session["expires_at"]), time(&document["sessions"][0]["expiresAt"]));
    assert_eq!((&session["usage_count"], &session["error_score"]), (&json!(1), &json!(1.0)));
    assert_eq!((&session["max_error_score"], &session["max_usage_count"]), (&json!(3.0), &json!(50)));
    assert_eq!(session["user_data"], json!({"login": "alice"}));
    assert_eq!(session["blocked_status_codes"], json!([403]), "JS keeps none: the pool's");
    assert_eq!(session["is_usable"], true);
    assert_eq!(
        session["cookies"],
        json!([
            {"name": "sid", "value": "abc123", "domain": "example.com", "path": "/", "secure": true, "http_only": true,
             "same_site": "Lax"},
            {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings", "secure": false,
             "http_only": false}
        ]),
        "hostOnly: true stays host-only, hostOnly: false covers subdomains"
    );
}

#[tokio::test]
async fn tough_cookie_expiry_and_same_site_map_to_unix_seconds_and_playwright_names() {
    let app = spawn_app().await;
    let pool = unique("js-cookies");
    let created = Utc::now() - TimeDelta::seconds(30);
    let document = json!({"sessions": [{"id": "s", "createdAt": rfc3339(created),
        "expiresAt": rfc3339(created + TimeDelta::milliseconds(90_500)), "cookieJar": {"cookies": [
            {"key": "dated", "value": "1", "domain": "example.com", "path": "/", "hostOnly": true,
             "expires": "2030-01-01T00:00:00.000Z", "sameSite": "strict"},
            {"key": "forever", "value": "2", "domain": "example.com", "expires": "Infinity", "sameSite": "none",
             "secure": true},
            {"key": "aged", "value": "3", "domain": "shop.example.com", "maxAge": 3600,
             "creation": "2026-01-01T00:00:00.000Z", "expires": "2031-01-01T00:00:00.000Z"}]}}]});
    app.imported(&pool, &document).await;
    let session = app.session(&pool, "s").await;
    assert_eq!(session["max_age_secs"], 90.5);
    let cookies = &session["cookies"];
    assert_eq!(cookies[0]["expires"], time(&json!("2030-01-01T00:00:00Z")).timestamp());
    assert_eq!(cookies[0]["same_site"], "Strict");
    assert!(cookies[1].get("expires").is_none(), "Infinity is a session cookie: {}", cookies[1]);
    assert_eq!((&cookies[1]["same_site"], &cookies[1]["domain"]), (&json!("None"), &json!(".example.com")));
    assert_eq!(cookies[2]["expires"], time(&json!("2026-01-01T01:00:00Z")).timestamp(), "maxAge wins");
    assert_eq!(cookies[2]["domain"], ".shop.example.com");
}

#[tokio::test]
async fn fields_this_service_does_not_use_are_ignored() {
    let app = spawn_app().await;
    let now = rfc3339(Utc::now());
    let own = json!({"exported_by": "someone", "config": {"max_pool_size": 2, "colour": "blue",
        "session": {"max_usage_count": 5, "extra": [1]}},
        "sessions": [{"id": "a", "created_at": now, "pool": "elsewhere", "is_usable": "whatever", "future_field": {},
        "cookies": [{"name": "c", "value": "v", "priority": "High", "partition_key": null}]}]});
    let pool = unique("own-extra");
    assert_eq!(app.imported(&pool, &own).await["imported"], 1);
    assert_eq!(app.session(&pool, "a").await["cookies"][0]["name"], "c");
    assert_eq!(app.pool_status(&pool).await.1["config"]["session"]["max_usage_count"], 5);

    let python = json!({"maxPoolSize": 1, "persistedBy": "crawlee", "sessions": [{"id": "p", "createdAt": now,
        "maxAge": "PT1H", "proxyInfo": {"url": "http://x"}, "cookies": [{"name": "c", "value": "v", "sameParty": true}]}]});
    assert_eq!(app.imported(&unique("py-extra"), &python).await["imported"], 1);

    let js = json!({"usableSessionsCount": 1, "retiredSessionsCount": 0, "sessions": [{"id": "j", "createdAt": now,
        "expiresAt": rfc3339(Utc::now() + TimeDelta::hours(1)), "sessionPool": null, "cookieJar": {"cookies": [
            {"key": "c", "value": "v", "domain": "example.com", "extensions": ["Priority=High"], "pathIsDefault": true,
             "lastAccessed": "2026-11-25T19:43:49.193Z"}]}}]});
    assert_eq!(app.imported(&unique("js-extra"), &js).await["imported"], 1);
}

/// JSON Schema counts `3.0` as the integer 3, and so does every integer field of an import document,
/// whichever system wrote it (Python's json module writes whole floats that way).
#[tokio::test]
async fn whole_floats_are_integers_in_every_import_form() {
    let app = spawn_app().await;
    let now = rfc3339(Utc::now());
    let own = json!({"config": {"max_pool_size": 4.0, "session": {"max_usage_count": 9.0, "blocked_status_codes": [403.0]}},
        "sessions": [{"id": "o", "created_at": now, "usage_count": 2.0, "max_usage_count": 10.0,
        "blocked_status_codes": [429.0], "cookies": [{"name": "c", "value": "v", "expires": 4102444800.0}]}]});
    let pool = unique("own-floats");
    assert_eq!(app.imported(&pool, &own).await["imported"], 1);
    let config = app.pool_status(&pool).await.1["config"].clone();
    assert_eq!((&config["max_pool_size"], &config["session"]["max_usage_count"]), (&json!(4), &json!(9)));
    assert_eq!(config["session"]["blocked_status_codes"], json!([403]));
    let session = app.session(&pool, "o").await;
    assert_eq!((&session["usage_count"], &session["max_usage_count"]), (&json!(2), &json!(10)));
    assert_eq!(session["blocked_status_codes"], json!([429]));
    assert_eq!(session["cookies"][0]["expires"], json!(4102444800u64));

    let python = json!({"maxPoolSize": 3.0, "sessions": [{"id": "p", "createdAt": now, "usageCount": 1.0,
        "maxUsageCount": 50.0, "blockedStatusCodes": [401.0], "cookies": [{"name": "c", "value": "v", "expires": 4102444800.0}]}]});
    let pool = unique("py-floats");
    assert_eq!(app.imported(&pool, &python).await["imported"], 1);
    assert_eq!(app.pool_status(&pool).await.1["config"]["max_pool_size"], 3);
    let session = app.session(&pool, "p").await;
    assert_eq!((&session["usage_count"], &session["max_usage_count"]), (&json!(1), &json!(50)));
    assert_eq!(
        (&session["blocked_status_codes"], &session["cookies"][0]["expires"]),
        (&json!([401]), &json!(4102444800u64))
    );

    let js = json!({"usableSessionsCount": 1.0, "retiredSessionsCount": 0.0, "sessions": [{"id": "j", "createdAt": now,
        "usageCount": 3.0, "maxUsageCount": 40.0, "cookieJar": {"cookies": []}}]});
    let pool = unique("js-floats");
    assert_eq!(app.imported(&pool, &js).await["imported"], 1);
    let session = app.session(&pool, "j").await;
    assert_eq!((&session["usage_count"], &session["max_usage_count"]), (&json!(3), &json!(40)));

    for (field, bad) in [("usage_count", json!(2.5)), ("max_usage_count", json!(1e23))] {
        let mut document = own.clone();
        document["sessions"][0][field] = bad.clone();
        let pool = unique("own-not-integers");
        let answer = app.import(&pool, &document).await;
        assert_problem(&answer, 400, "invalid_request");
        assert!(answer.1["detail"].as_str().unwrap_or_default().contains(field), "{field}: {}", answer.1);
    }
}

// ---------------------------------------------------------------------------------------------
// All or nothing

#[tokio::test]
async fn a_malformed_document_imports_nothing_and_creates_no_pool() {
    let app = spawn_app().await;
    let now = rfc3339(Utc::now());
    let good = json!({"id": "good", "created_at": now});
    let own = |bad: Value| json!({"config": {}, "sessions": [good, bad]});
    let python =
        |bad: Value| json!({"maxPoolSize": 2, "sessions": [{"id": "good", "createdAt": now, "maxAge": "PT1M"}, bad]});
    let cases: Vec<(&str, Value)> = vec![
        ("not an object", json!(["sessions"])),
        ("no recognisable form", json!({"sessions": [{"id": "x"}]})),
        ("a bad session id", own(json!({"id": "no spaces", "created_at": now}))),
        ("an empty session id", own(json!({"id": "", "created_at": now}))),
        ("a missing id", own(json!({"created_at": now}))),
        ("a missing created_at", own(json!({"id": "x"}))),
        ("a bad timestamp", own(json!({"id": "x", "created_at": "yesterday"}))),
        ("a time past year 9999", own(json!({"id": "x", "created_at": "+262142-12-31T23:59:59Z"}))),
        ("a wrong type", own(json!({"id": "x", "created_at": now, "usage_count": "3"}))),
        ("a fraction for an integer", own(json!({"id": "x", "created_at": now, "usage_count": 1.5}))),
        ("a negative count", own(json!({"id": "x", "created_at": now, "usage_count": -1}))),
        ("a negative score", own(json!({"id": "x", "created_at": now, "error_score": -0.5}))),
        ("a setting out of range", own(json!({"id": "x", "created_at": now, "max_usage_count": 0}))),
        ("a bad status code", own(json!({"id": "x", "created_at": now, "blocked_status_codes": [42]}))),
        ("a bad cookie name", own(json!({"id": "x", "created_at": now, "cookies": [{"name": "a b", "value": "v"}]}))),
        ("a cookie without a value", own(json!({"id": "x", "created_at": now, "cookies": [{"name": "a"}]}))),
        (
            "a bad same_site",
            own(json!({"id": "x", "created_at": now, "cookies": [{"name": "a", "value": "v", "same_site": "lax"}]})),
        ),
        ("a bad proxy", own(json!({"id": "x", "created_at": now, "proxy_url": "ftp://p"}))),
        ("an unknown reason", own(json!({"id": "x", "created_at": now, "retired": true, "retired_reason": "tired"}))),
        ("a duplicate id", own(json!({"id": "good", "created_at": now}))),
        ("a bad config", json!({"config": {"max_pool_size": 2_000_000}, "sessions": [good]})),
        ("sessions not a list", json!({"config": {}, "sessions": {"good": good}})),
        ("a bad maxAge", python(json!({"id": "x", "createdAt": now, "maxAge": "fifty minutes"}))),
        ("a bad maxPoolSize", json!({"maxPoolSize": -3, "sessions": []})),
        ("a bad Python cookie", python(json!({"id": "x", "createdAt": now, "cookies": [{"name": "", "value": "v"}]}))),
        (
            "expiresAt before createdAt",
            json!({"sessions": [{"id": "x", "createdAt": now, "expiresAt": "2020-01-01T00:00:00Z"}]}),
        ),
        (
            "a bad tough-cookie expires",
            json!({"sessions": [{"id": "x", "createdAt": now, "cookieJar": {"cookies": [
            {"key": "a", "value": "v", "domain": "example.com", "expires": "soon"}]}}]}),
        ),
    ];
    for (what, document) in cases {
        let pool = unique("bad");
        let answer = app.import(&pool, &document).await;
        assert_eq!(answer.0, 400, "{what}: {}", answer.1);
        assert_problem(&answer, 400, "invalid_request");
        assert_eq!(app.pool_status(&pool).await.0, 404, "{what}: no pool is created");
    }

    // The detail names the offending field, with its place in the document.
    for (document, field) in [
        (own(json!({"id": "x", "created_at": "yesterday"})), "sessions[1].created_at: "),
        (own(json!({"id": "x", "created_at": now, "usage_count": "3"})), "sessions[1].usage_count: "),
        (python(json!({"id": "x", "createdAt": "yesterday", "maxAge": "PT1M"})), "sessions[1].createdAt: "),
        (
            json!({"sessions": [{"id": "x", "createdAt": now, "cookieJar": {"cookies": [{"key": "a", "value": 1}]}}]}),
            "sessions[0].cookieJar.cookies[0].value: ",
        ),
    ] {
        let answer = app.import(&unique("named"), &document).await;
        assert_problem(&answer, 400, "invalid_request");
        let detail = answer.1["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{document}: the detail names {field}: {detail}");
    }

    let pool = unique("dup-keys");
    let body = format!(r#"{{"config": {{}}, "sessions": [{{"id": "a", "id": "b", "created_at": "{now}"}}]}}"#);
    assert_problem(
        &app.raw(Method::POST, &format!("/v1/pools/{pool}/import"), Some(body)).await,
        400,
        "invalid_request",
    );
    assert_eq!(app.pool_status(&pool).await.0, 404);

    let existing = unique("kept");
    app.create(&existing, json!({"id": "mine"})).await;
    let answer = app.import(&existing, &own(json!({"id": "bad id", "created_at": now}))).await;
    assert_problem(&answer, 400, "invalid_request");
    let status = app.pool_status(&existing).await.1;
    assert_eq!(status["session_count"], 1, "nothing of a bad document goes into an existing pool");
}

#[tokio::test]
async fn an_import_past_max_sessions_is_refused_whole() {
    let app = spawn_app_with(|c| c.max_sessions = 3).await;
    let now = rfc3339(Utc::now());
    let session = |id: &str| json!({"id": id, "created_at": now});
    let four = json!({"config": {}, "sessions": [session("a"), session("b"), session("c"), session("d")]});
    let pool = unique("full");
    assert_problem(&app.import(&pool, &four).await, 409, "limit_reached");
    assert_eq!(app.pool_status(&pool).await.0, 404, "no pool is created");

    let three = json!({"config": {}, "sessions": [session("a"), session("b"), session("c")]});
    assert_eq!(app.imported(&pool, &three).await["imported"], 3);
    assert_problem(&app.import(&pool, &four).await, 409, "limit_reached");
    assert_eq!(app.pool_status(&pool).await.1["session_count"], 3, "nothing of it went in");
    let same = app.imported(&pool, &three).await;
    assert_eq!(
        (&same["imported"], same["skipped"].as_array().map(Vec::len)),
        (&json!(0), Some(3)),
        "skips need no room"
    );
}

// ---------------------------------------------------------------------------------------------
// The Crawlee export

#[tokio::test]
async fn the_crawlee_export_is_crawlee_for_pythons_session_pool_model() {
    let app = spawn_app().await;
    let pool = unique("to-crawlee");
    app.expect(Method::PUT, &format!("/v1/pools/{pool}"), Some(&json!({"max_pool_size": 0})), 201).await;
    app.create(
        &pool,
        json!({"id": "alice", "user_data": {"login": "alice"}, "cookies": [
        {"name": "sid", "value": "abc", "domain": "example.com", "secure": true, "http_only": true, "same_site": "Lax",
         "expires": 4_102_444_800_i64},
        {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings"}]}),
    )
    .await;
    app.post(&format!("/v1/pools/{pool}/sessions/alice/mark_bad")).await;
    app.create(&pool, json!({"id": "quick", "max_age_secs": 1800.5, "blocked_status_codes": [429]})).await;
    app.create(&pool, json!({"id": "gone"})).await;
    app.post(&format!("/v1/pools/{pool}/sessions/gone/retire")).await;

    let state = app.export_crawlee(&pool).await;
    let top: BTreeSet<String> =
        ["maxPoolSize", "sessions", "sessionCount", "usableSessionCount", "retiredSessionCount"]
            .map(String::from)
            .into();
    assert_eq!(keys(&state), top);
    assert_eq!((&state["maxPoolSize"], &state["sessionCount"]), (&json!(0), &json!(3)));
    assert_eq!((&state["usableSessionCount"], &state["retiredSessionCount"]), (&json!(2), &json!(1)));
    let session_keys: BTreeSet<String> = [
        "id",
        "maxAge",
        "userData",
        "maxErrorScore",
        "errorScoreDecrement",
        "createdAt",
        "usageCount",
        "maxUsageCount",
        "errorScore",
        "cookies",
        "blockedStatusCodes",
    ]
    .map(String::from)
    .into();
    for session in state["sessions"].as_array().expect("sessions") {
        assert_eq!(keys(session), session_keys);
    }
    let alice = by_id(&state["sessions"], "alice");
    let ours = app.session(&pool, "alice").await;
    assert_eq!(alice["maxAge"], "PT50M");
    assert_eq!(time(&alice["createdAt"]), time(&ours["created_at"]));
    assert!(alice["createdAt"].as_str().expect("a time").ends_with('Z'));
    assert_eq!((&alice["usageCount"], &alice["errorScore"]), (&json!(1), &json!(1.0)));
    assert_eq!((&alice["maxErrorScore"], &alice["errorScoreDecrement"]), (&json!(3.0), &json!(0.5)));
    assert_eq!((&alice["userData"], &alice["cookies"]), (&ours["user_data"], &ours["cookies"]));
    assert_eq!(alice["blockedStatusCodes"], json!([401, 403, 429]));
    let quick = by_id(&state["sessions"], "quick");
    assert_eq!((&quick["maxAge"], &quick["blockedStatusCodes"]), (&json!("PT30M0.5S"), &json!([429])));
    assert_eq!(by_id(&state["sessions"], "gone")["errorScore"], 3.0, "Crawlee sees a retired session as blocked");

    let back = unique("from-crawlee");
    assert_eq!(app.imported(&back, &state).await["imported"], 3);
    let alice_again = app.session(&back, "alice").await;
    for key in ["created_at", "expires_at", "usage_count", "error_score", "user_data", "cookies", "max_age_secs"] {
        assert_eq!(alice_again[key], ours[key], "{key} survives a trip through Crawlee's form");
    }
    assert_eq!(app.session(&back, "gone").await["retired_reason"], "blocked");
}

#[tokio::test]
async fn export_refuses_unknown_formats_and_pools() {
    let app = spawn_app().await;
    let pool = unique("exists");
    app.create(&pool, json!({"id": "a"})).await;
    for query in ["format=xml", "format=", "format=CRAWLEE", "fmt=crawlee"] {
        let answer = app.call(Method::GET, &format!("/v1/pools/{pool}/export?{query}"), None).await;
        assert_problem(&answer, 400, "invalid_request");
    }
    for path in ["export", "export?format=crawlee"] {
        assert_problem(
            &app.call(Method::GET, &format!("/v1/pools/nope-{pool}/{path}"), None).await,
            404,
            "pool_not_found",
        );
    }
    assert_problem(&app.call(Method::GET, "/v1/pools/-bad/export", None).await, 400, "invalid_request");
    assert_problem(&app.import("-bad", &json!({"config": {}, "sessions": []})).await, 400, "invalid_request");
    let empty = unique("empty");
    app.expect(Method::PUT, &format!("/v1/pools/{empty}"), Some(&json!({})), 201).await;
    assert_eq!(app.export(&empty).await["sessions"], json!([]));
    let state = app.export_crawlee(&empty).await;
    assert_eq!((&state["sessions"], &state["sessionCount"]), (&json!([]), &json!(0)));
}
