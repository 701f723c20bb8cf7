//! The memory store and the Redis store answer alike: random sequences of calls go to a server on
//! each, and every answer (status and body, instants left out: the two clocks differ) must be the
//! same. Acquire is left out, since its pick is random by contract; everything else a session goes
//! through is in: creation with its own limits, marks, retirement, status reports, user data and
//! cookie patches, deletion, reads, listings and the pool's counts.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};
use session_pool::config::Store;

use crate::common::redis::{self, Redis};
use crate::helpers::{spawn_app_with, unique, TestApp};

#[derive(Debug, Clone)]
enum Op {
    Create { id: u8, max_usage_count: u32 },
    Good(u8),
    Bad(u8),
    Retire(u8),
    Status { id: u8, code: u16, mark: bool },
    UserData { id: u8, key: u8, value: Option<u8> },
    Cookie { id: u8, name: u8, value: u8 },
    Delete(u8),
    Get(u8),
    List(&'static str),
    Pool,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..4;
    prop_oneof![
        (id.clone(), 1u32..5).prop_map(|(id, max_usage_count)| Op::Create { id, max_usage_count }),
        id.clone().prop_map(Op::Good),
        id.clone().prop_map(Op::Bad),
        id.clone().prop_map(Op::Retire),
        (id.clone(), prop::sample::select(vec![200u16, 302, 403, 404, 429, 500]), any::<bool>())
            .prop_map(|(id, code, mark)| Op::Status { id, code, mark }),
        (id.clone(), 0u8..3, prop::option::of(0u8..3)).prop_map(|(id, key, value)| Op::UserData { id, key, value }),
        (id.clone(), 0u8..2, 0u8..3).prop_map(|(id, name, value)| Op::Cookie { id, name, value }),
        id.clone().prop_map(Op::Delete),
        id.prop_map(Op::Get),
        prop::sample::select(vec!["all", "usable", "retired", "leased"]).prop_map(Op::List),
        Just(Op::Pool),
    ]
}

/// `value` without the instants, which come from two different clocks.
fn timeless(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for key in ["created_at", "expires_at", "retired_at", "leased_until"] {
                map.remove(key);
            }
            for (_, inner) in map.iter_mut() {
                *inner = timeless(inner.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = timeless(item.take());
            }
        }
        _ => {}
    }
    value
}

/// One call on `app`'s pool `pool`: its status and its body without instants.
async fn apply(app: &TestApp, pool: &str, op: &Op) -> (u16, Value) {
    let session = |id: &u8| format!("/v1/pools/{pool}/sessions/s{id}");
    let (method, path, body) = match op {
        Op::Create { id, max_usage_count } => (
            Method::POST,
            format!("/v1/pools/{pool}/sessions"),
            Some(json!({"id": format!("s{id}"), "max_usage_count": max_usage_count, "max_error_score": 2.0})),
        ),
        Op::Good(id) => (Method::POST, format!("{}/mark_good", session(id)), None),
        Op::Bad(id) => (Method::POST, format!("{}/mark_bad", session(id)), None),
        Op::Retire(id) => (Method::POST, format!("{}/retire", session(id)), None),
        Op::Status { id, code, mark } => {
            (Method::POST, format!("{}/status_code", session(id)), Some(json!({"status_code": code, "mark": mark})))
        }
        Op::UserData { id, key, value } => {
            (Method::PATCH, session(id), Some(json!({"user_data": {format!("k{key}"): value}})))
        }
        Op::Cookie { id, name, value } => (
            Method::PATCH,
            session(id),
            Some(
                json!({"cookies": [{"name": format!("c{name}"), "value": format!("v{value}"), "domain": "example.com"}]}),
            ),
        ),
        Op::Delete(id) => (Method::DELETE, session(id), None),
        Op::Get(id) => (Method::GET, session(id), None),
        Op::List(state) => (Method::GET, format!("/v1/pools/{pool}/sessions?state={state}&limit=2"), None),
        Op::Pool => (Method::GET, format!("/v1/pools/{pool}"), None),
    };
    let response = app.send_json(method, &path, body.as_ref()).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("read the answer");
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("a JSON answer") };
    (status, timeless(value))
}

#[test]
fn the_memory_and_redis_stores_answer_every_call_alike() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start().expect("redis-server");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (memory, shared) = runtime.block_on(async {
        let memory = spawn_app_with(|c| c.store = Store::Memory).await;
        let url = redis.url();
        let shared = spawn_app_with(|c| {
            c.store = url.parse().expect("a Redis URL");
            c.redis_key_prefix = unique("agree");
        })
        .await;
        (memory, shared)
    });
    let mut runner = TestRunner::new(RunnerConfig { cases: 48, ..RunnerConfig::default() });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let pool = unique("agree");
            runtime.block_on(async {
                for app in [&memory, &shared] {
                    let (path, config) = (format!("/v1/pools/{pool}"), json!({"max_pool_size": 0}));
                    assert_eq!(app.send_json(Method::PUT, &path, Some(&config)).await.status().as_u16(), 201);
                }
                for (step, op) in ops.iter().enumerate() {
                    let (a, b) = (apply(&memory, &pool, op).await, apply(&shared, &pool, op).await);
                    prop_assert_eq!(&a, &b, "step {} ({:?}) of {:?}", step, op, ops);
                }
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("the stores disagree: {e}"));
    drop((memory, shared));
}
