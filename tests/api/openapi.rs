//! The spec and the live router agree: every operation openapi.yaml lists is routed, every method it
//! does not list answers 405, paths it does not list answer the router's 404, and the spec is
//! well-formed. The checks go through the running server, so a route added without the spec, or a
//! path added to the spec without a route, fails here whatever the source looks like.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{expect_json, spawn_app, unique_pool, TestApp, SESSION_KEYS};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("read openapi.yaml");
    serde_norway::from_str(&text).expect("openapi.yaml parses as YAML with string keys")
}

/// Every `(path, method)` of the spec, methods in lower case.
fn spec_operations(spec: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = spec["paths"].as_object().expect("paths");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()) || k.as_str() == "head" || k.as_str() == "options")
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[test]
fn the_spec_lists_every_operation_of_the_contract() {
    let ops = spec_operations(&spec());
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.yaml"),
        ("get", "/v1/pools"),
        ("put", "/v1/pools/{pool}"),
        ("get", "/v1/pools/{pool}"),
        ("delete", "/v1/pools/{pool}"),
        ("post", "/v1/pools/{pool}/acquire"),
        ("post", "/v1/pools/{pool}/sessions"),
        ("get", "/v1/pools/{pool}/sessions"),
        ("get", "/v1/pools/{pool}/sessions/{id}"),
        ("patch", "/v1/pools/{pool}/sessions/{id}"),
        ("delete", "/v1/pools/{pool}/sessions/{id}"),
        ("post", "/v1/pools/{pool}/sessions/{id}/mark_good"),
        ("post", "/v1/pools/{pool}/sessions/{id}/mark_bad"),
        ("post", "/v1/pools/{pool}/sessions/{id}/retire"),
        ("post", "/v1/pools/{pool}/sessions/{id}/release"),
        ("post", "/v1/pools/{pool}/sessions/{id}/status_code"),
    ] {
        assert!(ops.get(path).is_some_and(|m| m.contains(method)), "the spec lacks {method} {path}");
    }
}

#[test]
fn every_operation_has_a_unique_operation_id_and_three_digit_statuses() {
    let spec = spec();
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut ids = BTreeSet::new();
    for (path, methods) in spec_operations(&spec) {
        for method in methods {
            let op = &spec["paths"][&path][&method];
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(!id.is_empty());
            assert!(ids.insert(id.to_owned()), "operationId {id} repeated");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(!responses.is_empty());
            for code in responses.keys() {
                assert!(
                    code.len() == 3
                        && code.bytes().all(|b| b.is_ascii_digit())
                        && ('1'..='5').contains(&code.chars().next().unwrap()),
                    "{method} {path}: response {code:?} is not a 3-digit status"
                );
            }
            assert!(responses.keys().any(|c| c.starts_with('2')), "{method} {path} has no success response");
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref is a string").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_ref_in_the_spec_resolves() {
    let spec = spec();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not a local reference"));
        assert!(spec.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn the_spec_session_schema_requires_every_key_of_the_contract() {
    let spec = spec();
    let schema = &spec["components"]["schemas"]["Session"];
    let required: BTreeSet<&str> =
        schema["required"].as_array().expect("Session.required").iter().map(|v| v.as_str().unwrap()).collect();
    let expected: BTreeSet<&str> = SESSION_KEYS.into_iter().collect();
    assert_eq!(required, expected);
    let properties: BTreeSet<&str> =
        schema["properties"].as_object().expect("Session.properties").keys().map(String::as_str).collect();
    assert_eq!(properties, expected);
}

/// A fresh pool holding a session `s1`, and `path` with both filled in.
async fn prepared(app: &TestApp, path: &str) -> String {
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s1"})).await;
    path.replace("{pool}", &pool).replace("{id}", "s1")
}

/// Whether an answer is the router's own: its 404 for an unknown path or its 405 for a known path
/// with another method. A handler's 404 (`pool_not_found`, `session_not_found`) is not.
fn from_the_router(status: u16, body: &Value) -> bool {
    (status == 404 && body["type"] == "not_found") || (status == 405 && body["type"] == "method_not_allowed")
}

#[tokio::test]
async fn every_operation_in_the_spec_is_routed() {
    let app = spawn_app().await;
    for (path, methods) in spec_operations(&spec()) {
        for method in methods {
            let concrete = prepared(&app, &path).await;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(method.as_str(), "post" | "put" | "patch").then(|| json!({}));
            let resp = app.send_json(m, &concrete, body.as_ref()).await;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(!from_the_router(status, &body), "{method} {path} is in the spec but not routed: {status} {text}");
            assert!(status < 500, "{method} {path} answers {status}: {text}");
        }
    }
}

/// Paths next to the spec's own: every spec path with one more segment, the spec's prefixes that are
/// not paths of their own, and names a route might plausibly be given. The router must answer each
/// with its 404 for every method, so a route added without the spec shows up here.
#[tokio::test]
async fn paths_the_spec_does_not_list_are_not_routed() {
    let app = spawn_app().await;
    let ops = spec_operations(&spec());
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for path in ops.keys() {
        candidates.insert(format!("{path}/extra"));
        let segments: Vec<&str> = path.split('/').collect();
        for end in 2..segments.len() {
            candidates.insert(segments[..end].join("/"));
        }
    }
    for guess in [
        "/",
        "/health",
        "/ready",
        "/livez",
        "/openapi.json",
        "/docs",
        "/v1",
        "/v2/pools",
        "/v1/sessions",
        "/v1/pools/{pool}/stats",
        "/v1/pools/{pool}/release",
        "/v1/pools/{pool}/sessions/{id}/lease",
        "/v1/pools/{pool}/sessions/{id}/mark",
    ] {
        candidates.insert(guess.to_owned());
    }
    // What a spec path matches (`/v1/pools/extra` is the pool named `extra`) is not a candidate.
    let matches = |template: &str, path: &str| {
        let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || t.starts_with('{'))
    };
    candidates.retain(|path| !ops.keys().any(|template| matches(template, path)));
    assert!(candidates.len() > 20, "{candidates:?}");
    for path in candidates {
        let concrete = prepared(&app, &path).await;
        for method in METHODS {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app.request(m, &concrete, None, None).await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!((status, &body["type"]), (404, &json!("not_found")), "{method} {path} is routed: {body}");
        }
    }
}

#[tokio::test]
async fn every_method_the_spec_does_not_list_answers_405() {
    let app = spawn_app().await;
    for (path, methods) in spec_operations(&spec()) {
        for method in METHODS {
            if methods.contains(method) {
                continue;
            }
            let concrete = prepared(&app, &path).await;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app.request(m, &concrete, None, None).await;
            let status = resp.status().as_u16();
            let problem: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 405, "{method} {path}: {problem}");
            assert_eq!(problem["type"], "method_not_allowed", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn a_405_leaves_the_state_alone() {
    let app = spawn_app().await;
    let pool = unique_pool();
    app.new_session(&pool, &json!({"id": "s1"})).await;
    let before = app.pool_status(&pool).await;
    let resp = app.send_json(Method::PUT, &format!("/v1/pools/{pool}/acquire"), Some(&json!({}))).await;
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(app.pool_status(&pool).await, before);
    expect_json(app.get_session(&pool, "s1").await, 200).await;
}

/// Every operation that reads a request body can answer 408 `request_timeout` (a code of the
/// spec's Problem schema): the spec must say so, with the shared problem response.
#[test]
fn every_operation_that_takes_a_body_documents_request_timeout() {
    let spec = spec();
    let mut with_body = 0;
    for (path, methods) in spec_operations(&spec) {
        for method in methods {
            let op = &spec["paths"][&path][&method];
            if op.get("requestBody").is_none() {
                continue;
            }
            with_body += 1;
            assert_eq!(
                op["responses"]["408"]["$ref"], "#/components/responses/RequestTimeout",
                "{method} {path} reads a body but does not document 408"
            );
        }
    }
    assert!(with_body >= 11, "only {with_body} operations take a body");
    let problem = &spec["components"]["responses"]["RequestTimeout"]["content"]["application/problem+json"];
    assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
    assert_eq!(problem["example"]["type"], "request_timeout");
}

/// The spec's examples of the per-page bodies (with every field the page's cookies can come in) are
/// bodies the server takes: names in the spec and in the server agree.
#[tokio::test]
async fn the_spec_examples_of_the_per_page_bodies_are_accepted() {
    let spec = spec();
    let app = spawn_app().await;
    let schemas = &spec["components"]["schemas"];
    let examples = |name: &str| schemas[name]["examples"].as_array().cloned().unwrap_or_default();
    let report = examples("ReportRequest");
    assert!(report.iter().any(|e| e.get("url").is_some() && e.get("set_cookie").is_some()), "{report:?}");
    let mut bodies: Vec<(String, Value)> = Vec::new();
    for verb in ["mark_good", "mark_bad", "retire"] {
        bodies.extend(report.iter().map(|e| (format!("/v1/pools/{{pool}}/sessions/{{id}}/{verb}"), e.clone())));
    }
    let status_code = examples("StatusCodeRequest");
    bodies.extend(status_code.into_iter().map(|e| ("/v1/pools/{pool}/sessions/{id}/status_code".to_owned(), e)));
    let acquire = examples("AcquireRequest");
    assert!(acquire.iter().any(|e| e.get("url").is_some()), "{acquire:?}");
    bodies.extend(acquire.into_iter().map(|e| ("/v1/pools/{pool}/acquire".to_owned(), e)));
    for (path, body) in bodies {
        let concrete = prepared(&app, &path).await;
        let resp = app.send_json(Method::POST, &concrete, Some(&body)).await;
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "{path} {body}: {}", resp.text().await.unwrap_or_default());
    }
}
