//! The memory store and the Redis store answer alike: random sequences of calls go to a server on
//! each, and every answer (status and body) must be the same, and so must the event counters of
//! `/metrics` at the end of each sequence. The two servers are processes of the real binary, so the
//! pools have the same names on both and each `/metrics` counts only its own events.
//!
//! The sequences cover what a session and a pool go through: creation with its own limits (some
//! with a short max age), acquire (plain, leased for a short or a long time, with a `url` for the
//! cookie header, and exhausted), release and marks with the current lease, a stale one or none,
//! retirement, status reports, user data and cookie patches, deletion, reads, listings page by
//! page, the pool's counts, reconfiguring (resizing) and deleting the pool, `GET /v1/pools`,
//! export in both forms and the import of an export into the other pool or the same one, and time
//! passing: sessions expire, leases end, retired sessions are purged after the retention.
//!
//! Three things differ between the servers by right, and are made comparable:
//! - Instants come from two clocks read a few milliseconds apart: each non-null instant is written
//!   as `"<instant>"` (null stays null, so "leased or not", "retired or not" is still compared).
//! - Generated ids are random: sessions an acquire creates, and lease ids. The test names them, the
//!   same on both servers: a session the servers generate is `g{k}` when first seen at step `k`
//!   (all sessions one acquire creates are alike: same instant, same settings, never handed out),
//!   and `a{n}` once an acquire hands it out; a lease is `lease{n}`. Lists whose order follows those
//!   ids are compared sorted; each server's listing is checked to be in id order on its own.
//! - The acquire's pick is random by contract. Before each acquire the memory server is asked which
//!   sessions are free (usable and not leased); it then acquires, and the Redis server is asked
//!   again and again (its lease released at once each time) until it hands out a session of the
//!   same name: a pick is either the same session, or one of those an acquire created together and
//!   that nothing has touched since, which no call can tell apart. Every pick of either server must
//!   be a free session or one the acquire created, and the extra acquires are taken off the Redis
//!   server's acquire counter before the counters are compared.
//!
//! Time is made deterministic with deadlines: every instant at which the clock changes an answer
//! (an expiry, a lease's end, a purge at retirement plus the retention) is read from the answers
//! of both servers. Before each call the test waits, when one of them is near, until it has
//! passed, so no deadline falls between the call to one server and the same call to the other; a
//! sequence in which one still does (a call slower than the guard) is discarded, not failed. The
//! `Wait` step lets the next deadline pass.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::common::redis::{self, Redis};
use crate::common::{encode, Server, TempDir};
use crate::helpers::{nanos, unique};

/// The max age of a short-lived session and the length of a short lease, in seconds.
const SHORT_SECS: f64 = 0.15;
/// The servers' `--retired-retention-secs`.
const RETENTION_SECS: f64 = 0.15;
/// A lease that outlives the sequence.
const LONG_LEASE_SECS: f64 = 600.0;
/// No call starts while a deadline is this near (nanoseconds)...
const GUARD: i128 = 30_000_000;
/// ...or this recently past: instants are read with this much slack (nanoseconds).
const MARGIN: i128 = 3_000_000;
/// A lease id no acquire gave out.
const UNKNOWN_LEASE: &str = "00000000000000000000000000000000";
/// The fields that hold an instant, in the Session, lease and Crawlee objects.
const INSTANTS: [&str; 5] = ["created_at", "expires_at", "retired_at", "leased_until", "createdAt"];
/// The metric families of pool events and counts, compared at the end of each sequence.
const FAMILIES: [&str; 6] = [
    "session_pool_sessions",
    "session_pool_sessions_created_total",
    "session_pool_acquires_total",
    "session_pool_marks_total",
    "session_pool_retirements_total",
    "session_pool_status_codes_total",
];

/// The session a call is about: `s0`..`s3`, created by the test, or the session the last acquire
/// handed out (`s0` before any).
#[derive(Debug, Clone, Copy)]
enum Target {
    S(u8),
    Acquired,
}

/// The `lease_id` a call carries: none, the session's latest lease, or an earlier one (a lease id
/// never given out when the session had at most one).
#[derive(Debug, Clone, Copy)]
enum LeaseRef {
    Without,
    Current,
    Stale,
}

/// The lease an acquire asks for.
#[derive(Debug, Clone, Copy)]
enum Lease {
    No,
    Short,
    Long,
}

/// One of the sequence's two pools: `P`, where sessions are created and acquired, and `Q`, where
/// exports of `P` are imported.
#[derive(Debug, Clone, Copy)]
enum Which {
    P,
    Q,
}

/// One step of a sequence; each is sent to both servers (see [`Agree::apply`]).
#[derive(Debug, Clone)]
enum Op {
    Create { id: u8, max_usage_count: u32, short: bool },
    Good(Target, LeaseRef),
    Bad(Target, LeaseRef),
    Retire(Target, LeaseRef),
    Status { target: Target, code: u16, mark: bool, lease: LeaseRef },
    Release(Target, LeaseRef),
    UserData { target: Target, key: u8, value: Option<u8> },
    Cookie { target: Target, name: u8, value: u8 },
    Delete(Target),
    Get(Target),
    List(Which, &'static str),
    Pool(Which),
    Pools,
    Acquire { lease: Lease, url: bool },
    Wait,
    Configure { max_pool_size: u32, short: bool, max_usage_count: Option<u32> },
    DeletePool(Which),
    Export { pool: Which, crawlee: bool },
    Import { from: Which, into: Which, crawlee: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..4;
    let target = prop_oneof![(0u8..4).prop_map(Target::S), Just(Target::Acquired)];
    let lease_ref = prop_oneof![2 => Just(LeaseRef::Without), 2 => Just(LeaseRef::Current), 1 => Just(LeaseRef::Stale)];
    let which = prop_oneof![3 => Just(Which::P), 1 => Just(Which::Q)];
    let lease = prop_oneof![Just(Lease::No), Just(Lease::Short), Just(Lease::Long)];
    let short = prop::bool::weighted(0.25);
    prop_oneof![
        5 => (id.clone(), 1u32..5, short)
            .prop_map(|(id, max_usage_count, short)| Op::Create { id, max_usage_count, short }),
        2 => (target.clone(), lease_ref.clone()).prop_map(|(t, l)| Op::Good(t, l)),
        2 => (target.clone(), lease_ref.clone()).prop_map(|(t, l)| Op::Bad(t, l)),
        1 => (target.clone(), lease_ref.clone()).prop_map(|(t, l)| Op::Retire(t, l)),
        2 => (target.clone(), prop::sample::select(vec![200u16, 302, 403, 404, 429, 500]), any::<bool>(), lease_ref.clone())
            .prop_map(|(target, code, mark, lease)| Op::Status { target, code, mark, lease }),
        2 => (prop_oneof![1 => (0u8..4).prop_map(Target::S), 3 => Just(Target::Acquired)], lease_ref)
            .prop_map(|(t, l)| Op::Release(t, l)),
        1 => (target.clone(), 0u8..3, prop::option::of(0u8..3))
            .prop_map(|(target, key, value)| Op::UserData { target, key, value }),
        1 => (target.clone(), 0u8..2, 0u8..3).prop_map(|(target, name, value)| Op::Cookie { target, name, value }),
        1 => target.clone().prop_map(Op::Delete),
        2 => target.prop_map(Op::Get),
        1 => (which.clone(), prop::sample::select(vec!["all", "usable", "retired", "leased"]))
            .prop_map(|(w, state)| Op::List(w, state)),
        1 => which.clone().prop_map(Op::Pool),
        1 => Just(Op::Pools),
        5 => (lease, any::<bool>()).prop_map(|(lease, url)| Op::Acquire { lease, url }),
        1 => Just(Op::Wait),
        1 => (0u32..4, short, prop::option::of(1u32..4))
            .prop_map(|(max_pool_size, short, max_usage_count)| Op::Configure { max_pool_size, short, max_usage_count }),
        1 => which.clone().prop_map(Op::DeletePool),
        1 => (which.clone(), any::<bool>()).prop_map(|(pool, crawlee)| Op::Export { pool, crawlee }),
        1 => (which.clone(), which, any::<bool>()).prop_map(|(from, into, crawlee)| Op::Import { from, into, crawlee }),
    ]
}

/// Now, in nanoseconds since the Unix epoch (as [`nanos`] reads an instant).
fn now() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as i128
}

/// Whether `s` looks like an id the server generated: a UUID in simple form.
fn generated(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One server and what the test knows of the ids it generated in the current sequence.
struct Side {
    server: Server,
    _dir: TempDir,
    /// Generated session and lease ids, with the name the test gave them.
    names: HashMap<String, String>,
    /// Every lease acquired in the sequence, in order: (session id, lease id).
    leases: Vec<(String, String)>,
    /// The session the last acquire handed out.
    acquired: Option<String>,
    /// Acquires sent beyond those of the sequence, to make the pick match.
    extra_acquires: f64,
}

impl Side {
    async fn start(name: &str, flags: Vec<String>) -> Side {
        let dir = TempDir::new(name);
        let base = ["--retired-retention-secs", &RETENTION_SECS.to_string(), "--max-pool-size", "2"];
        let server = Server::on(&dir).args(base).args(flags).start().await;
        Side { server, _dir: dir, names: HashMap::new(), leases: Vec::new(), acquired: None, extra_acquires: 0.0 }
    }

    fn reset(&mut self) {
        self.names.clear();
        self.names.insert(UNKNOWN_LEASE.to_owned(), "unknown-lease".to_owned());
        self.leases.clear();
        self.acquired = None;
        self.extra_acquires = 0.0;
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.server.call(method, path, body).await
    }

    /// The id of `target` on this server.
    fn id(&self, target: Target) -> String {
        match (target, &self.acquired) {
            (Target::S(n), _) => format!("s{n}"),
            (Target::Acquired, Some(id)) => id.clone(),
            (Target::Acquired, None) => "s0".to_owned(),
        }
    }

    /// The `lease_id` to send for `lease` on `session`.
    fn lease_id(&self, session: &str, lease: LeaseRef) -> Option<String> {
        let mine: Vec<&String> = self.leases.iter().filter(|(s, _)| s == session).map(|(_, l)| l).collect();
        let pick = match lease {
            LeaseRef::Without => return None,
            LeaseRef::Current => mine.last(),
            LeaseRef::Stale if mine.len() >= 2 => mine.first(),
            LeaseRef::Stale => None,
        };
        Some(pick.map_or(UNKNOWN_LEASE, |l| l.as_str()).to_owned())
    }

    /// The name of `raw`, naming a generated id seen for the first time at `step` `g{step}`.
    fn name_of(&mut self, raw: &str, step: usize) -> String {
        if !generated(raw) {
            return raw.to_owned();
        }
        self.names.entry(raw.to_owned()).or_insert_with(|| format!("g{step}")).clone()
    }

    /// `value` as the other server should have answered it: instants and generated ids written
    /// alike, lists of objects with an `id` sorted.
    fn normal(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(key, inner)| {
                    let instant = INSTANTS.contains(&key.as_str()) && !inner.is_null();
                    (key.clone(), if instant { json!("<instant>") } else { self.normal(inner) })
                })
                .collect(),
            Value::Array(items) => {
                let mut items: Vec<Value> = items.iter().map(|item| self.normal(item)).collect();
                if items.iter().all(|item| item.get("id").is_some()) {
                    items.sort_by_cached_key(Value::to_string);
                }
                Value::Array(items)
            }
            Value::String(s) => {
                let mut s = s.clone();
                for (raw, name) in &self.names {
                    if s.contains(raw.as_str()) {
                        s = s.replace(raw.as_str(), name);
                    }
                }
                Value::String(s)
            }
            other => other.clone(),
        }
    }
}

/// One sequence on both servers: memory first, Redis second.
struct Agree<'a> {
    sides: &'a mut [Side; 2],
    p: String,
    q: String,
    step: usize,
    /// Every instant at which the clock changes an answer, on either server.
    deadlines: BTreeSet<i128>,
    /// How many sessions and leases were named so far (`a{n}`, `lease{n}`).
    handed_out: usize,
    leased: usize,
}

impl Agree<'_> {
    fn pool(&self, which: Which) -> &str {
        match which {
            Which::P => &self.p,
            Which::Q => &self.q,
        }
    }

    /// Reads the deadlines in `value` and names the generated ids it shows for the first time.
    fn observe(&mut self, side: usize, value: &Value) {
        match value {
            Value::Object(map) => {
                let horizon = now() + 60_000_000_000;
                let retention = (RETENTION_SECS * 1e9) as i128;
                for (key, inner) in map {
                    if let Some(at) = inner.as_str().filter(|_| INSTANTS.contains(&key.as_str())).map(nanos) {
                        let session = map.contains_key("max_age_secs");
                        let due: &[i128] = match key.as_str() {
                            "expires_at" if session => &[at, at + retention],
                            "expires_at" | "leased_until" => &[at],
                            "retired_at" => &[at + retention],
                            _ => &[],
                        };
                        self.deadlines.extend(due.iter().filter(|t| **t < horizon));
                    }
                    self.observe(side, inner);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.observe(side, item)),
            Value::String(s) => {
                let step = self.step;
                self.sides[side].name_of(s, step);
            }
            _ => {}
        }
    }

    /// Compares the two servers' answers to `what` of `op`.
    fn agree(&mut self, op: &Op, what: &str, answers: [(u16, Value); 2]) -> Result<(), TestCaseError> {
        for (side, (_, value)) in answers.iter().enumerate() {
            self.observe(side, value);
        }
        let [(a, memory), (b, redis)] = &answers;
        let (memory, redis) = ((*a, self.sides[0].normal(memory)), (*b, self.sides[1].normal(redis)));
        prop_assert_eq!(
            memory,
            redis,
            "step {} ({:?}): the {} differs (memory left, Redis right)",
            self.step,
            op,
            what
        );
        Ok(())
    }

    /// Waits until no deadline is near.
    async fn settle(&self) {
        loop {
            let at = now();
            let Some(due) = self.deadlines.range(at - MARGIN..=at + GUARD).next_back() else { return };
            tokio::time::sleep(Duration::from_nanos((due + MARGIN - at).max(0) as u64)).await;
        }
    }

    /// Lets the next deadline pass.
    async fn wait(&self) {
        let at = now();
        if let Some(due) = self.deadlines.range(at..).next() {
            tokio::time::sleep(Duration::from_nanos((due + MARGIN - at) as u64)).await;
        }
    }

    /// Runs `ops`; a sequence in which a deadline fell inside a call is discarded.
    async fn run(&mut self, max_pool_size: u32, ops: &[Op]) -> Result<(), TestCaseError> {
        // Every sequence has the same two pools, deleted first, and compares how far its calls moved
        // the counters: `/metrics` keeps the series of every pool name it saw, so new names each
        // time would make each scrape slower than the last.
        for side in self.sides.iter() {
            for pool in [&self.p, &self.q] {
                side.call(Method::DELETE, &format!("/v1/pools/{pool}"), None).await;
            }
        }
        let before = [self.counters(0).await, self.counters(1).await];
        let first = Op::Configure { max_pool_size, short: false, max_usage_count: None };
        self.apply(&first).await?;
        for (step, op) in ops.iter().enumerate() {
            self.step = step + 1;
            if let Op::Wait = op {
                self.wait().await;
                continue;
            }
            self.settle().await;
            let started = now();
            let result = self.apply(op).await;
            if self.deadlines.range(started - MARGIN..=now() + MARGIN).next().is_some() {
                return Err(TestCaseError::reject(format!("a deadline fell inside step {step} ({op:?})")));
            }
            result?;
        }
        self.settle().await;
        let started = now();
        let [before_memory, before_redis] = before;
        let (memory, mut redis) =
            (moved(self.counters(0).await, before_memory), moved(self.counters(1).await, before_redis));
        if self.deadlines.range(started - MARGIN..=now() + MARGIN).next().is_some() {
            return Err(TestCaseError::reject("a deadline fell inside the scrape of /metrics"));
        }
        let ok = format!("session_pool_acquires_total{{pool=\"{}\",result=\"ok\"}}", self.p);
        let extra = self.sides[1].extra_acquires;
        if let Some(count) = redis.get_mut(&ok) {
            *count -= extra;
            if *count == 0.0 {
                redis.remove(&ok);
            }
        }
        prop_assert_eq!(
            memory,
            redis,
            "the counters of the sequence's pools moved differently (memory left, Redis right)"
        );
        Ok(())
    }

    /// The non-zero samples of [`FAMILIES`] for this sequence's pools, labels sorted.
    async fn counters(&self, side: usize) -> BTreeMap<String, f64> {
        let server = &self.sides[side].server;
        let text = server.client.get(format!("{}/metrics", server.base)).send().await.expect("metrics");
        let text = text.text().await.expect("the metrics page");
        let pools = [format!("pool=\"{}\"", self.p), format!("pool=\"{}\"", self.q)];
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Some((name, labels)) = series.split_once('{') else { continue };
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
            labels.sort_unstable();
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            if FAMILIES.contains(&name) && labels.iter().any(|l| pools.contains(&(*l).to_owned())) && value != 0.0 {
                out.insert(format!("{name}{{{}}}", labels.join(",")), value);
            }
        }
        out
    }

    /// One step: its calls to both servers, compared.
    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Acquire { lease, url } => self.acquire(op, *lease, *url).await,
            Op::List(which, state) => self.list(op, *which, state).await,
            Op::Pools => {
                let mut answers = [
                    self.sides[0].call(Method::GET, "/v1/pools", None).await,
                    self.sides[1].call(Method::GET, "/v1/pools", None).await,
                ];
                for (_, body) in &mut answers {
                    if let Some(pools) = body["pools"].as_array_mut() {
                        pools.retain(|p| p["name"] == self.p.as_str() || p["name"] == self.q.as_str());
                    }
                }
                self.agree(op, "list of pools", answers)
            }
            Op::Import { from, into, crawlee } => {
                let format = if *crawlee { "?format=crawlee" } else { "" };
                let export = format!("/v1/pools/{}/export{format}", self.pool(*from));
                let import = format!("/v1/pools/{}/import", self.pool(*into));
                let (mut exports, mut imports) = (Vec::new(), Vec::new());
                for side in self.sides.iter() {
                    let (status, document) = side.call(Method::GET, &export, None).await;
                    let answer = match status {
                        200 => side.call(Method::POST, &import, Some(document.clone())).await,
                        _ => (status, document.clone()),
                    };
                    exports.push((status, document));
                    imports.push(answer);
                }
                self.agree(op, "export", two(exports))?;
                self.agree(op, "import", two(imports))?;
                self.contents(op, *into).await
            }
            _ => {
                let mut answers = Vec::new();
                for side in 0..2 {
                    let (method, path, body) = self.request(side, op);
                    answers.push(self.sides[side].call(method, &path, body).await);
                }
                self.agree(op, "answer", two(answers))
            }
        }
    }

    /// The call `op` makes to server `side`, for the steps that make one.
    fn request(&self, side: usize, op: &Op) -> (Method, String, Option<Value>) {
        let s = &self.sides[side];
        let (p, post, get) = (&self.p, Method::POST, Method::GET);
        let session = |target: Target| format!("/v1/pools/{p}/sessions/{}", s.id(target));
        let with_lease = |target: Target, lease: LeaseRef, mut body: Map<String, Value>| {
            if let Some(id) = s.lease_id(&s.id(target), lease) {
                body.insert("lease_id".into(), json!(id));
            }
            body
        };
        let report = |verb: &str, target: Target, lease: LeaseRef| {
            let body = with_lease(target, lease, Map::new());
            (Method::POST, format!("{}/{verb}", session(target)), (!body.is_empty()).then_some(Value::Object(body)))
        };
        match *op {
            Op::Create { id, max_usage_count, short } => {
                let mut body =
                    json!({"id": format!("s{id}"), "max_usage_count": max_usage_count, "max_error_score": 2.0});
                if short {
                    body["max_age_secs"] = json!(SHORT_SECS);
                }
                (post, format!("/v1/pools/{p}/sessions"), Some(body))
            }
            Op::Good(target, lease) => report("mark_good", target, lease),
            Op::Bad(target, lease) => report("mark_bad", target, lease),
            Op::Retire(target, lease) => report("retire", target, lease),
            Op::Release(target, lease) => {
                // Without a lease id the call is a 400: `lease_id` is required.
                let body = with_lease(target, lease, Map::new());
                (post, format!("{}/release", session(target)), Some(Value::Object(body)))
            }
            Op::Status { target, code, mark, lease } => {
                let body = json!({"status_code": code, "mark": mark});
                let body = with_lease(target, lease, body.as_object().cloned().unwrap_or_default());
                (post, format!("{}/status_code", session(target)), Some(Value::Object(body)))
            }
            Op::UserData { target, key, value } => {
                (Method::PATCH, session(target), Some(json!({"user_data": {format!("k{key}"): value}})))
            }
            Op::Cookie { target, name, value } => {
                let cookie = json!({"name": format!("c{name}"), "value": format!("v{value}"), "domain": "example.com"});
                (Method::PATCH, session(target), Some(json!({ "cookies": [cookie] })))
            }
            Op::Delete(target) => (Method::DELETE, session(target), None),
            Op::Get(target) => (get, session(target), None),
            Op::Pool(which) => (get, format!("/v1/pools/{}", self.pool(which)), None),
            Op::Configure { max_pool_size, short, max_usage_count } => {
                let mut settings = Map::new();
                if short {
                    settings.insert("max_age_secs".into(), json!(SHORT_SECS));
                }
                if let Some(max_usage_count) = max_usage_count {
                    settings.insert("max_usage_count".into(), json!(max_usage_count));
                }
                (
                    Method::PUT,
                    format!("/v1/pools/{p}"),
                    Some(json!({"max_pool_size": max_pool_size, "session": settings})),
                )
            }
            Op::DeletePool(which) => (Method::DELETE, format!("/v1/pools/{}", self.pool(which)), None),
            Op::Export { pool, crawlee } => {
                let format = if crawlee { "?format=crawlee" } else { "" };
                (get, format!("/v1/pools/{}/export{format}", self.pool(pool)), None)
            }
            Op::Acquire { .. } | Op::List(..) | Op::Pools | Op::Wait | Op::Import { .. } => {
                unreachable!("{op:?} is not one call")
            }
        }
    }

    /// Every session of `which` in one page, compared: what an acquire or an import left there.
    async fn contents(&mut self, op: &Op, which: Which) -> Result<(), TestCaseError> {
        let path = format!("/v1/pools/{}/sessions?state=all&limit=1000", self.pool(which));
        let answers =
            [self.sides[0].call(Method::GET, &path, None).await, self.sides[1].call(Method::GET, &path, None).await];
        self.agree(op, "pool's sessions after it", answers)
    }

    /// A listing page by page (two sessions a page), each server's in id order.
    async fn list(&mut self, op: &Op, which: Which, state: &str) -> Result<(), TestCaseError> {
        let mut answers = Vec::new();
        for (side, store) in self.sides.iter().zip(["memory", "Redis"]) {
            let (mut pages, mut sessions, mut cursor) = (0, Vec::new(), None::<String>);
            let answer = loop {
                let mut path = format!("/v1/pools/{}/sessions?state={state}&limit=2", self.pool(which));
                if let Some(cursor) = &cursor {
                    path.push_str(&format!("&cursor={}", encode(cursor)));
                }
                let (status, body) = side.call(Method::GET, &path, None).await;
                if status != 200 {
                    break (status, body);
                }
                pages += 1;
                sessions.extend(body["sessions"].as_array().cloned().unwrap_or_default());
                match body["next_cursor"].as_str() {
                    Some(next) if pages < 100 => cursor = Some(next.to_owned()),
                    _ => break (200, json!({"pages": pages, "sessions": sessions})),
                }
            };
            let ids: Vec<&str> = sessions.iter().filter_map(|s| s["id"].as_str()).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "the {} store lists out of id order: {:?}", store, ids);
            answers.push(answer);
        }
        self.agree(op, "listing", two(answers))
    }

    /// An acquire on `P`; see the module doc for how the random pick is made to match.
    async fn acquire(&mut self, op: &Op, lease: Lease, url: bool) -> Result<(), TestCaseError> {
        let path = format!("/v1/pools/{}/acquire", self.p);
        let mut body = Map::new();
        let lease_secs = match lease {
            Lease::No => None,
            Lease::Short => Some(SHORT_SECS),
            Lease::Long => Some(LONG_LEASE_SECS),
        };
        if let Some(secs) = lease_secs {
            body.insert("lease_secs".into(), json!(secs));
        }
        if url {
            body.insert("url".into(), json!("https://example.com/page"));
        }
        let body = (!body.is_empty()).then_some(Value::Object(body));
        let free = self.free().await;
        let first = self.sides[0].call(Method::POST, &path, body.clone()).await;
        let mut second = self.sides[1].call(Method::POST, &path, body.clone()).await;
        if first.0 == 200 && second.0 == 200 {
            let step = self.step;
            let mut valid: BTreeSet<String> = free.iter().map(|id| self.sides[0].name_of(id, step)).collect();
            valid.insert(format!("g{step}"));
            let id = |answer: &(u16, Value)| answer.1["id"].as_str().unwrap_or_default().to_owned();
            let lease_id = |answer: &(u16, Value)| answer.1["lease"]["id"].as_str().map(str::to_owned);
            let mine = self.sides[0].name_of(&id(&first), step);
            prop_assert!(valid.contains(&mine), "the memory store handed out {}, not one of {:?}", mine, valid);
            let mut tries = 0;
            loop {
                let theirs = self.sides[1].name_of(&id(&second), step);
                prop_assert!(valid.contains(&theirs), "the Redis store handed out {}, not one of {:?}", theirs, valid);
                if theirs == mine {
                    break;
                }
                tries += 1;
                prop_assert!(tries < 200, "the Redis store never handed out {} (free: {:?})", mine, valid);
                if let Some(lease) = lease_id(&second) {
                    let release = format!("/v1/pools/{}/sessions/{}/release", self.p, id(&second));
                    let (status, answer) =
                        self.sides[1].call(Method::POST, &release, Some(json!({"lease_id": lease}))).await;
                    prop_assert_eq!(status, 200, "releasing the Redis store's extra pick: {}", answer);
                }
                second = self.sides[1].call(Method::POST, &path, body.clone()).await;
                self.sides[1].extra_acquires += 1.0;
                prop_assert_eq!(second.0, 200, "the Redis store's acquire again: {}", second.1);
            }
            if mine.starts_with('g') {
                let name = format!("a{}", self.handed_out);
                self.handed_out += 1;
                for (side, answer) in self.sides.iter_mut().zip([&first, &second]) {
                    side.names.insert(id(answer), name.clone());
                }
            }
            let name = format!("lease{}", self.leased);
            for (side, answer) in self.sides.iter_mut().zip([&first, &second]) {
                side.acquired = Some(id(answer));
                if let Some(lease) = lease_id(answer) {
                    side.names.insert(lease.clone(), name.clone());
                    side.leases.push((id(answer), lease));
                }
            }
            self.leased += usize::from(lease_id(&first).is_some());
        }
        self.agree(op, "answer", [first, second])?;
        self.contents(op, Which::P).await
    }

    /// The sessions the memory server could hand out from `P` now: usable and not leased.
    async fn free(&self) -> BTreeSet<String> {
        let ids = |state: &'static str| async move {
            let path = format!("/v1/pools/{}/sessions?state={state}&limit=1000", self.p);
            let (_, page) = self.sides[0].call(Method::GET, &path, None).await;
            let sessions = page["sessions"].as_array().cloned().unwrap_or_default();
            sessions.iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect::<BTreeSet<_>>()
        };
        let leased = ids("leased").await;
        ids("usable").await.difference(&leased).cloned().collect()
    }
}

/// How far each series moved from `before` to `after`, the unmoved left out.
fn moved(mut after: BTreeMap<String, f64>, before: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    for (series, value) in before {
        *after.entry(series).or_default() -= value;
    }
    after.retain(|_, value| *value != 0.0);
    after
}

fn two(answers: Vec<(u16, Value)>) -> [(u16, Value); 2] {
    answers.try_into().unwrap_or_else(|a: Vec<_>| panic!("{} answers, not two", a.len()))
}

#[test]
fn the_memory_and_redis_stores_answer_every_call_alike() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start().expect("redis-server");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let sides = runtime.block_on(async {
        let store = ["--store".to_owned(), redis.url(), "--redis-key-prefix".to_owned(), unique("agree")];
        let (memory, shared) =
            tokio::join!(Side::start("agree-memory", Vec::new()), Side::start("agree-redis", store.into()));
        RefCell::new([memory, shared])
    });
    // About 4 s on two cores; PROPTEST_CASES, when set, asks for more (or fewer).
    let mut config = RunnerConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 40;
    }
    let mut runner = TestRunner::new(config);
    let p = unique("agree");
    let pools = (p.clone(), format!("{p}-copy"));
    runner
        .run(&(0u32..3, prop::collection::vec(op(), 1..30)), |(max_pool_size, ops)| {
            let mut sides = sides.borrow_mut();
            sides.iter_mut().for_each(Side::reset);
            let (p, q) = (pools.0.clone(), pools.1.clone());
            let mut agree =
                Agree { sides: &mut sides, p, q, step: 0, deadlines: BTreeSet::new(), handed_out: 0, leased: 0 };
            runtime.block_on(agree.run(max_pool_size, &ops))
        })
        .unwrap_or_else(|e| panic!("the stores disagree: {e}"));
}
