//! Several servers on one Redis (API.md "Stores"): any number of servers on the same store serve the
//! same pools, each pool linearizable across them, and a store out of reach makes a server answer
//! `not_ready` rather than fail. Each test starts its own redis-server (`tests/common/redis.rs`) and
//! three real server processes on it, and spreads its requests over the three; some then kill a
//! replica or Redis itself in the middle of the load. Without redis-server on `PATH` each test says
//! on stderr that it is skipped (and fails when `CI` is set).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{Redis, RedisCluster};
use common::{encode, eventually, free_port, Server, TempDir};
use reqwest::Method;
use serde_json::{json, Value};

const REPLICAS: usize = 3;

/// The servers' `--redis-key-prefix`.
const PREFIX: &str = "replicas-test";

/// How long a replica may take to notice that Redis is gone, or back.
const NOTICE: Duration = Duration::from_secs(10);

/// One server's address and a client for it; cheap to clone into tasks.
#[derive(Clone)]
struct Replica {
    index: usize,
    client: reqwest::Client,
    base: String,
}

/// What a replica answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    body: Value,
}

impl Answer {
    /// Whether this is 503 `not_ready` with `Retry-After`, the answer of a server whose store is out
    /// of reach.
    fn is_not_ready(&self) -> bool {
        self.status == 503 && self.retry_after && self.body["type"] == "not_ready"
    }
}

impl Replica {
    fn of(index: usize, server: &Server) -> Replica {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
        Replica { index, client, base: server.base.clone() }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> reqwest::Result<Answer> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key(reqwest::header::RETRY_AFTER);
        let text = response.text().await?;
        Ok(Answer { status, retry_after, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
    }

    /// `method path` answered, whatever the status.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let what = format!("{method} {path} on replica {}", self.index);
        self.send(method, path, body).await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }

    /// `method path` answered with `status`; the body.
    async fn expect(&self, method: Method, path: &str, body: Option<&Value>, status: u16) -> Value {
        let what = format!("{method} {path} on replica {}", self.index);
        let answer = self.call(method, path, body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        answer.body
    }

    async fn get(&self, path: &str) -> Value {
        self.expect(Method::GET, path, None, 200).await
    }

    /// The status of `GET path`, or `None` without an answer.
    async fn status_of(&self, path: &str) -> Option<u16> {
        self.send(Method::GET, path, None).await.ok().map(|a| a.status)
    }

    /// Waits until an acquire in `pool` succeeds, then checks that `/readyz` says ready too.
    async fn serves_again(&self, pool: &str) {
        let path = format!("/v1/pools/{pool}/acquire");
        eventually(NOTICE, &format!("replica {} serves again", self.index), || async {
            self.call(Method::POST, &path, Some(&json!({}))).await.status == 200
        })
        .await;
        assert_eq!(self.status_of("/readyz").await, Some(200), "/readyz of replica {}", self.index);
    }

    /// Every session of `pool`, through every page of the listing.
    async fn sessions(&self, pool: &str) -> Vec<Value> {
        let mut sessions = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self.get(&format!("/v1/pools/{pool}/sessions?limit=1000{cursor}")).await;
            sessions.extend(page["sessions"].as_array().expect("a list of sessions").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={}", encode(next)),
                None => return sessions,
            }
        }
    }

    /// Asserts that `/healthz` answers 200 while `/readyz` and `/v1` answer 503 `not_ready` with
    /// `Retry-After`, saying that the store is what is missing.
    async fn assert_not_ready(&self) {
        assert_eq!(self.status_of("/healthz").await, Some(200), "/healthz of replica {}", self.index);
        assert_eq!(self.status_of("/readyz").await, Some(503), "/readyz of replica {}", self.index);
        for (method, path) in [(Method::GET, "/v1/pools"), (Method::POST, "/v1/pools/default/acquire")] {
            let answer = self.call(method.clone(), path, None).await;
            assert!(answer.is_not_ready(), "{method} {path} on replica {}: {answer:?}", self.index);
            let detail = answer.body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("store"), "{method} {path} on replica {}: {answer:?}", self.index);
        }
    }
}

/// One server with `--store url` under [`PREFIX`], ready, and a client for it.
struct Lone {
    replica: Replica,
    _server: Server,
    _dir: TempDir,
}

impl Lone {
    async fn start(url: &str) -> Lone {
        let dir = TempDir::new("replica");
        let server = Server::on(&dir).args(["--store", url, "--redis-key-prefix", PREFIX]).start().await;
        Lone { replica: Replica::of(0, &server), _server: server, _dir: dir }
    }
}

/// Three servers on one Redis under a key prefix of their own.
struct Cluster {
    servers: Vec<Server>,
    replicas: Vec<Replica>,
    prefix: String,
    dirs: Vec<TempDir>,
}

impl Cluster {
    /// Starts [`REPLICAS`] servers on `redis` and waits until each is ready.
    async fn start(redis: &Redis) -> Cluster {
        Cluster::start_on(&redis.url()).await
    }

    /// Starts [`REPLICAS`] servers with `--store url` and waits until each is ready.
    async fn start_on(url: &str) -> Cluster {
        let prefix = PREFIX.to_owned();
        let dirs: Vec<TempDir> = (0..REPLICAS).map(|_| TempDir::new("replica")).collect();
        let args = ["--store", url, "--redis-key-prefix", &prefix];
        let (a, b, c) = tokio::join!(
            Server::on(&dirs[0]).args(args).start(),
            Server::on(&dirs[1]).args(args).start(),
            Server::on(&dirs[2]).args(args).start()
        );
        let servers = vec![a, b, c];
        let replicas = servers.iter().enumerate().map(|(i, s)| Replica::of(i, s)).collect();
        Cluster { servers, replicas, prefix, dirs }
    }

    /// The replica that serves request number `n` (round-robin).
    fn replica(&self, n: usize) -> Replica {
        self.replicas[n % self.replicas.len()].clone()
    }

    /// Asserts that every key in Redis starts with `{prefix}` (the prefix as the keys' hash tag) and
    /// that no server made its `--data-dir`, which the Redis store does not use.
    fn assert_footprint(&self, redis: &Redis) {
        let keys = redis.keys();
        assert!(!keys.is_empty(), "the store wrote no key in Redis");
        let tag = format!("{{{}}}", self.prefix);
        let strays: Vec<&String> = keys.iter().filter(|k| !k.starts_with(&tag)).collect();
        assert!(strays.is_empty(), "keys without the prefix {tag}: {strays:?}");
        for dir in &self.dirs {
            assert!(!dir.exists(), "a server on the Redis store made its --data-dir {}", dir.display());
        }
    }
}

/// The harness the tests below rely on: a durable redis-server killed with SIGKILL comes back on the
/// same port with every write it acknowledged; one stopped with SIGTERM comes back too.
#[test]
fn the_redis_harness_restarts_on_the_same_port_and_a_durable_one_keeps_its_writes() {
    use common::redis::{ping, Reply};
    let Some(mut redis) = Redis::start_durable() else { return };
    let port = redis.port;
    for n in 0..100 {
        assert_eq!(redis.command(&["INCR", "counter"]), Reply::Integer(n + 1));
    }
    redis.kill9();
    assert!(!ping(port) && !redis.is_running(), "redis-server still answers after SIGKILL");
    redis.restart();
    assert_eq!((redis.port, redis.command(&["GET", "counter"])), (port, Reply::Bulk(Some("100".into()))));
    redis.terminate();
    assert!(!ping(port), "redis-server still answers after SIGTERM");
    redis.restart();
    assert_eq!(redis.command(&["GET", "counter"]), Reply::Bulk(Some("100".into())));
    assert_eq!(redis.keys(), vec!["counter".to_owned()]);

    let Some(mut volatile) = Redis::start() else { return };
    assert_eq!(volatile.command(&["SET", "k", "v"]), Reply::Status("OK".into()));
    volatile.kill9();
    volatile.restart();
    assert_eq!(volatile.command(&["GET", "k"]), Reply::Bulk(None), "a redis-server without AOF kept a write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leased_acquires_racing_through_three_replicas_fill_the_pool_once_and_exhaust_the_rest() {
    let Some(redis) = Redis::start() else { return };
    let cluster = Cluster::start(&redis).await;
    cluster.replica(0).expect(Method::PUT, "/v1/pools/race", Some(&json!({"max_pool_size": 40})), 201).await;

    let start = Arc::new(tokio::sync::Barrier::new(48));
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let (replica, start) = (cluster.replica(n), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                replica.call(Method::POST, "/v1/pools/race/acquire", Some(&json!({"lease_secs": 60}))).await
            })
        })
        .collect();
    let mut leased = BTreeSet::new();
    let mut exhausted = 0;
    for task in tasks {
        let answer = task.await.expect("an acquire");
        match answer.status {
            200 => {
                assert!(answer.body["lease"]["id"].is_string(), "a leased acquire without a lease: {}", answer.body);
                let id = answer.body["id"].as_str().expect("an id").to_owned();
                assert!(leased.insert(id), "one session handed out twice: {}", answer.body);
            }
            503 => {
                assert_eq!(answer.body["type"], "no_session_available", "{}", answer.body);
                assert!(answer.retry_after, "a 503 without Retry-After: {}", answer.body);
                exhausted += 1;
            }
            status => panic!("an acquire answered {status}: {}", answer.body),
        }
    }
    assert_eq!((leased.len(), exhausted), (40, 8));
    for replica in &cluster.replicas {
        let status = replica.get("/v1/pools/race").await;
        assert_eq!(
            (&status["session_count"], &status["usable_session_count"], &status["leased_session_count"]),
            (&json!(40), &json!(40), &json!(40)),
            "replica {}: {status}",
            replica.index
        );
    }
    cluster.assert_footprint(&redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marks_racing_through_three_replicas_lose_no_update() {
    let Some(redis) = Redis::start() else { return };
    let cluster = Cluster::start(&redis).await;
    let body = json!({"id": "busy", "max_usage_count": 100_000});
    cluster.replica(0).expect(Method::POST, "/v1/pools/marks/sessions", Some(&body), 201).await;

    // 1000 marks through each replica, from 10 connections each.
    let tasks: Vec<_> = (0..REPLICAS * 10)
        .map(|n| {
            let replica = cluster.replica(n);
            tokio::spawn(async move {
                for _ in 0..100 {
                    replica.expect(Method::POST, "/v1/pools/marks/sessions/busy/mark_good", None, 200).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a worker");
    }
    for replica in &cluster.replicas {
        let session = replica.get("/v1/pools/marks/sessions/busy").await;
        assert_eq!(session["usage_count"], 3000, "replica {}: {session}", replica.index);
        assert_eq!(session["is_usable"], true, "replica {}: {session}", replica.index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retire_racing_marks_on_other_replicas_is_never_undone() {
    let Some(redis) = Redis::start() else { return };
    let cluster = Cluster::start(&redis).await;
    for round in 0..5 {
        let pool = format!("retire-{round}");
        let path = format!("/v1/pools/{pool}/sessions/target");
        // A consume-only pool holding only the target: an acquire can hand out nothing else.
        cluster
            .replica(0)
            .expect(Method::PUT, &format!("/v1/pools/{pool}"), Some(&json!({"max_pool_size": 0})), 201)
            .await;
        let body = json!({"id": "target", "max_usage_count": 1_000_000, "max_error_score": 1_000_000.0});
        cluster.replica(0).expect(Method::POST, &format!("/v1/pools/{pool}/sessions"), Some(&body), 201).await;

        // Marks through replicas 1 and 2, each answer kept with the moment its request left.
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let markers: Vec<_> = (0..8)
            .map(|n| {
                let replica = cluster.replica(1 + n % 2);
                let (stop, sent, path) = (stop.clone(), sent.clone(), path.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for k in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let verb = if (n + k) % 2 == 0 { "mark_good" } else { "mark_bad" };
                        let at = Instant::now();
                        let session = replica.expect(Method::POST, &format!("{path}/{verb}"), None, 200).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                        answers.push((at, format!("{verb} on replica {}", replica.index), session));
                    }
                    answers
                })
            })
            .collect();
        eventually(Duration::from_secs(5), "the marks are under way", || {
            let sent = sent.load(Ordering::SeqCst);
            async move { sent >= 20 }
        })
        .await;
        let retired = cluster.replica(0).expect(Method::POST, &format!("{path}/retire"), None, 200).await;
        let after = Instant::now();
        assert_eq!((&retired["retired"], &retired["retired_reason"]), (&json!(true), &json!("retired")), "{retired}");

        // While the marks go on: reads and acquires on every replica.
        let mut seen = Vec::new();
        for n in 0..30 {
            let replica = cluster.replica(n);
            seen.push((after, format!("read on replica {}", replica.index), replica.get(&path).await));
            let acquire = replica.call(Method::POST, &format!("/v1/pools/{pool}/acquire"), None).await;
            assert_eq!(acquire.status, 503, "replica {} handed out a retired session: {}", replica.index, acquire.body);
            assert_eq!(acquire.body["type"], "no_session_available", "{}", acquire.body);
        }
        stop.store(true, Ordering::SeqCst);
        for marker in markers {
            seen.extend(marker.await.expect("a marker"));
        }
        for replica in &cluster.replicas {
            seen.push((Instant::now(), format!("final read on replica {}", replica.index), replica.get(&path).await));
        }

        // Everything that started after the retire answered sees the session as the retire left it.
        let later: Vec<_> = seen.iter().filter(|(at, _, _)| *at >= after).collect();
        assert!(later.len() >= 30 + REPLICAS, "round {round}: {} answers after the retire", later.len());
        for (_, what, session) in later {
            for field in ["retired", "retired_reason", "retired_at", "usage_count", "error_score"] {
                assert_eq!(
                    session[field], retired[field],
                    "round {round}, {what}: {field} of {session}, retired as {retired}"
                );
            }
            assert_eq!(session["is_usable"], false, "round {round}, {what}: {session}");
        }
    }
}

/// What the load of [`run_load`] did to one session.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Marks answered 200.
    acked_marks: u64,
    /// Marks without a success answer (no answer, or `not_ready`): applied or not.
    unknown_marks: u64,
}

/// The writes a load made, as the clients saw them.
#[derive(Default)]
struct Ledger {
    /// Sessions whose create was answered 201, by (pool, id).
    sessions: Mutex<BTreeMap<(String, String), Tally>>,
    /// Writes answered with success.
    acked: AtomicUsize,
    /// Writes answered with success since the last [`Ledger::reset_recent`], per pool.
    recent: Mutex<BTreeMap<String, usize>>,
    /// How many loads [`run_load`] started on it, so that each makes its own ids.
    loads: AtomicUsize,
    /// Writes answered 503 `not_ready` (when tolerated).
    not_ready: AtomicUsize,
}

impl Ledger {
    fn ack(&self, pool: &str) {
        self.acked.fetch_add(1, Ordering::SeqCst);
        *self.recent.lock().unwrap().entry(pool.to_owned()).or_default() += 1;
    }

    fn reset_recent(&self) {
        self.recent.lock().unwrap().clear();
    }

    /// Asserts that every pool took acknowledged writes since [`Ledger::reset_recent`], which
    /// happened `when`.
    fn assert_wrote_in_each(&self, pools: &[String], when: &str) {
        let recent = self.recent.lock().unwrap().clone();
        for pool in pools {
            assert!(recent.get(pool).is_some_and(|n| *n > 0), "no write in {pool} {when}: {recent:?}");
        }
    }

    /// Asserts through `replica` that every session whose create was acknowledged is there, with at
    /// least its acknowledged marks and at most those plus the ones whose fate is unknown.
    async fn assert_kept_by(&self, replica: &Replica, pools: &[String]) {
        let expected = self.sessions.lock().unwrap().clone();
        assert!(expected.len() >= 20, "too little load to tell: {} sessions", expected.len());
        let mut held = BTreeMap::new();
        for pool in pools {
            for session in replica.sessions(pool).await {
                let id = session["id"].as_str().expect("an id").to_owned();
                held.insert((pool.clone(), id), session["usage_count"].as_u64().expect("a usage count"));
            }
        }
        for ((pool, id), tally) in &expected {
            let usage = held
                .get(&(pool.clone(), id.clone()))
                .unwrap_or_else(|| panic!("replica {} lost the acknowledged session {pool}/{id}", replica.index));
            let (low, high) = (tally.acked_marks, tally.acked_marks + tally.unknown_marks);
            assert!(
                (low..=high).contains(usage),
                "replica {}: {pool}/{id} has usage_count {usage}, acknowledged marks {low}, at most {high}",
                replica.index
            );
        }
    }
}

/// How a load treats an answer that is not a success.
#[derive(Clone, Copy)]
enum Tolerate {
    /// No answer from this replica (it was killed).
    LostFrom(usize),
    /// 503 `not_ready` with `Retry-After` from any replica (Redis was down).
    NotReady,
}

/// The workers of [`run_load`], until [`Load::stop`].
struct Load {
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Stops the workers and waits for them; a worker that failed fails the test.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("a load worker");
        }
    }
}

/// Workers that create sessions in `pools` and mark each good twice, through the replicas in
/// `live` (round-robin over those still listed), until stopped; every write counted in `ledger`.
/// An answer that is neither a success nor `tolerate`d fails the worker.
fn run_load(live: Arc<Mutex<Vec<Replica>>>, pools: Vec<String>, tolerate: Tolerate, ledger: Arc<Ledger>) -> Load {
    let load = ledger.loads.fetch_add(1, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..6)
        .map(|worker| {
            let (live, pools, ledger, stop) = (live.clone(), pools.clone(), ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut turn = worker;
                let mut next = || {
                    turn += 1;
                    let live = live.lock().unwrap();
                    live[turn % live.len()].clone()
                };
                // Some(true): acknowledged; Some(false): fate unknown; panics on anything else.
                let not_ready = &ledger.not_ready;
                let send = |replica: Replica, path: String, body: Option<Value>| async move {
                    match replica.send(Method::POST, &path, body.as_ref()).await {
                        Ok(answer) if answer.status == 200 || answer.status == 201 => true,
                        Ok(answer) if matches!(tolerate, Tolerate::NotReady) && answer.is_not_ready() => {
                            not_ready.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            false
                        }
                        Ok(answer) => panic!("POST {path} on replica {}: {answer:?}", replica.index),
                        Err(_) if matches!(tolerate, Tolerate::LostFrom(lost) if lost == replica.index) => false,
                        Err(e) => panic!("POST {path} on replica {}: no answer: {e}", replica.index),
                    }
                };
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let pool = &pools[n % pools.len()];
                    let id = format!("l{load}w{worker}-{n}");
                    let create = json!({"id": id, "max_usage_count": 1000});
                    if !send(next(), format!("/v1/pools/{pool}/sessions"), Some(create)).await {
                        continue;
                    }
                    ledger.ack(pool);
                    let mut tally = Tally::default();
                    ledger.sessions.lock().unwrap().insert((pool.clone(), id.clone()), tally.clone());
                    for _ in 0..2 {
                        if send(next(), format!("/v1/pools/{pool}/sessions/{id}/mark_good"), None).await {
                            ledger.ack(pool);
                            tally.acked_marks += 1;
                        } else {
                            tally.unknown_marks += 1;
                        }
                        ledger.sessions.lock().unwrap().insert((pool.clone(), id.clone()), tally.clone());
                    }
                }
            })
        })
        .collect();
    Load { workers, stop }
}

/// Waits until `ledger` counts `more` acknowledged writes than now.
async fn more_acked(ledger: &Ledger, more: usize, what: &str) {
    let target = ledger.acked.load(Ordering::SeqCst) + more;
    eventually(Duration::from_secs(10), what, || {
        let acked = ledger.acked.load(Ordering::SeqCst);
        async move { acked >= target }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_leaves_every_pool_and_every_acknowledged_write_to_the_others() {
    let Some(redis) = Redis::start() else { return };
    let mut cluster = Cluster::start(&redis).await;
    let pools: Vec<String> = (0..4).map(|n| format!("crawl-{n}")).collect();
    let live = Arc::new(Mutex::new(cluster.replicas.clone()));
    let ledger = Arc::new(Ledger::default());
    let load = run_load(live.clone(), pools.clone(), Tolerate::LostFrom(2), ledger.clone());
    more_acked(&ledger, 150, "the load is under way").await;

    live.lock().unwrap().truncate(2);
    cluster.replicas.truncate(2);
    cluster.servers.pop().expect("replica 2").kill9();
    ledger.reset_recent();
    more_acked(&ledger, 300, "the load goes on through the other two").await;
    load.stop().await;

    ledger.assert_wrote_in_each(&pools, "after the kill");
    for replica in &cluster.replicas {
        let listed = replica.get("/v1/pools").await;
        let names: BTreeSet<&str> =
            listed["pools"].as_array().expect("pools").iter().filter_map(|p| p["name"].as_str()).collect();
        for pool in &pools {
            assert!(names.contains(pool.as_str()), "replica {} does not list {pool}: {listed}", replica.index);
        }
        ledger.assert_kept_by(replica, &pools).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_makes_replicas_not_ready_and_restarted_loses_no_acknowledged_write() {
    let Some(mut redis) = Redis::start_durable() else { return };
    let cluster = Cluster::start(&redis).await;
    let pools: Vec<String> = (0..3).map(|n| format!("crawl-{n}")).collect();
    let live = Arc::new(Mutex::new(cluster.replicas.clone()));
    let ledger = Arc::new(Ledger::default());
    let load = run_load(live, pools.clone(), Tolerate::NotReady, ledger.clone());
    more_acked(&ledger, 150, "the load is under way").await;

    redis.kill9();
    let killed = Instant::now();
    for replica in &cluster.replicas {
        eventually(NOTICE, &format!("replica {} says it is not ready", replica.index), || async {
            replica.status_of("/readyz").await == Some(503)
        })
        .await;
        replica.assert_not_ready().await;
    }
    // Redis stays down about 3 s, the load knocking all along.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
    for replica in &cluster.replicas {
        replica.assert_not_ready().await;
    }
    tokio::task::block_in_place(|| redis.restart());

    for replica in &cluster.replicas {
        eventually(NOTICE, &format!("replica {} is ready again", replica.index), || async {
            replica.status_of("/readyz").await == Some(200)
        })
        .await;
        let body = json!({"id": format!("after-{}", replica.index)});
        replica.expect(Method::POST, &format!("/v1/pools/{}/sessions", pools[0]), Some(&body), 201).await;
    }
    more_acked(&ledger, 150, "the load goes on after Redis is back").await;
    load.stop().await;
    for replica in &cluster.replicas {
        ledger.assert_kept_by(replica, &pools).await;
    }
    cluster.assert_footprint(&redis);
}

/// A password Redis stops taking (rotated under the replicas) makes a replica not ready, with 503s
/// and never a 500 or a 200, and the password taken again makes it serve again by itself: the
/// client that keeps the refusal is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_password_makes_a_replica_not_ready_until_redis_takes_it_again() {
    let Some(redis) = Redis::start() else { return };
    redis.command(&["CONFIG", "SET", "requirepass", "first"]);
    let url = format!("redis://:first@127.0.0.1:{}/0", redis.port);
    let lone = Lone::start(&url).await;
    let replica = &lone.replica;
    replica.expect(Method::POST, "/v1/pools/p/acquire", Some(&json!({})), 200).await;

    redis.command_as("first", &["CONFIG", "SET", "requirepass", "second"]);
    redis.command_as("second", &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let started = Instant::now();
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let answer = replica.call(Method::POST, "/v1/pools/p/acquire", Some(&json!({}))).await;
        if answer.status == 200 {
            assert_eq!(refused, 0, "an acquire succeeded after the password was refused: {answer:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert!(answer.is_not_ready(), "an acquire while Redis refuses the password: {answer:?}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused > 0, "no acquire was refused while Redis refused the password");
    replica.assert_not_ready().await;

    redis.command_as("second", &["CONFIG", "SET", "requirepass", "first"]);
    replica.serves_again("p").await;
}

/// A replica serves again within moments of Redis answering again after an outage (about 200 ms
/// here), not after a backoff of its own client (0.5 to 1 s a try, about 750 ms on average here):
/// while Redis is down it tries every 100 ms, with a new client once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_serves_again_within_moments_of_redis_coming_back() {
    let Some(mut redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    // Summed over several outages, which end at different points of a backoff.
    const OUTAGES: u32 = 3;
    let mut waited = Duration::ZERO;
    for outage in 0..OUTAGES {
        tokio::task::block_in_place(|| redis.terminate());
        eventually(NOTICE, "the replica says it is not ready", || async {
            replica.status_of("/readyz").await == Some(503)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300 + 400 * u64::from(outage))).await;
        tokio::task::block_in_place(|| redis.restart());
        let back = Instant::now();
        eventually(NOTICE, "the replica is ready again", || async { replica.status_of("/readyz").await == Some(200) })
            .await;
        waited += back.elapsed();
        replica.expect(Method::POST, "/v1/pools/default/acquire", Some(&json!({})), 200).await;
    }
    assert!(
        waited < Duration::from_millis(1500),
        "{OUTAGES} outages of Redis kept /v1 refused {waited:?} after it was back"
    );
}

/// A connection to Redis that drops (Redis closed it, a proxy reset it) makes a replica not ready
/// only until it has connected again: the sweep tries Redis as soon as a call fails and every
/// 100 ms after, so `/v1` is refused for milliseconds, not until the next sweep (up to a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_connection_to_redis_is_refused_for_milliseconds_not_a_sweep_interval() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    replica.expect(Method::PUT, "/v1/pools/p", Some(&json!({"max_pool_size": 10})), 201).await;
    // Summed over several drops, which fall at different points of the sweep's second.
    const DROPS: u32 = 4;
    let (mut refused, mut refusals) = (Duration::ZERO, 0);
    for _ in 0..DROPS {
        let killed = redis.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        assert!(matches!(killed, common::redis::Reply::Integer(n) if n >= 1), "CLIENT KILL answered {killed:?}");
        let dropped = Instant::now();
        loop {
            let answer = replica.call(Method::POST, "/v1/pools/p/acquire", Some(&json!({}))).await;
            if answer.status == 200 {
                break;
            }
            assert!(answer.is_not_ready(), "an acquire after the connection dropped: {answer:?}");
            assert!(dropped.elapsed() < NOTICE, "the replica did not serve again within {NOTICE:?}");
            refusals += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        refused += dropped.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(refusals >= DROPS, "only {refusals} acquires were refused over {DROPS} dropped connections");
    assert!(refused < Duration::from_millis(600), "{DROPS} dropped connections kept /v1 refused for {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_started_before_redis_serves_health_and_becomes_ready_by_itself() {
    if !common::redis::available() {
        return;
    }
    let port = free_port();
    let dir = TempDir::new("replica");
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = Server::on(&dir).args(["--store", &url]).start_unready().await;
    let replica = Replica::of(0, &server);
    replica.assert_not_ready().await;

    let redis = Redis::start_at(Some(port), false).expect("redis-server");
    eventually(NOTICE, "the replica is ready once Redis answers", || async {
        replica.status_of("/readyz").await == Some(200)
    })
    .await;
    let pools = replica.get("/v1/pools").await;
    assert!(pools["pools"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "default")), "{pools}");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_lost_its_data_gets_the_default_pool_back_at_the_next_call() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    // FLUSHALL keeps the Functions library; FUNCTION FLUSH as well is a Redis restarted empty.
    for lost in [&["FLUSHALL"][..], &["FUNCTION", "FLUSH"][..]] {
        redis.command(&["FLUSHALL"]);
        redis.command(lost);
        let default = replica.send(Method::GET, "/v1/pools/default", None).await.expect("an answer");
        assert_eq!(default.status, 200, "after {lost:?}: {:?}", default.body);
        assert_eq!(default.body["session_count"], 0, "after {lost:?}: {:?}", default.body);
        let acquired =
            replica.send(Method::POST, "/v1/pools/default/acquire", Some(&json!({}))).await.expect("an answer");
        assert_eq!(acquired.status, 200, "after {lost:?}: {:?}", acquired.body);
        let pools = replica.get("/v1/pools").await;
        assert!(pools["pools"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "default")), "{pools}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_written_in_another_key_layout_is_refused_until_it_is_moved() {
    let Some(redis) = Redis::start() else { return };
    redis.command(&["SET", "{session-pool}:layout", "1"]);
    let dir = TempDir::new("replica");
    let server = Server::on(&dir).args(["--store", &redis.url()]).start_unready().await;
    let replica = Replica::of(0, &server);
    tokio::time::sleep(Duration::from_secs(2)).await;
    replica.assert_not_ready().await;
    assert!(redis.keys().iter().all(|k| !k.contains(":p:")), "nothing was written: {:?}", redis.keys());

    redis.command(&["DEL", "{session-pool}:layout"]);
    eventually(NOTICE, "the replica is ready once the store is in its layout", || async {
        replica.status_of("/readyz").await == Some(200)
    })
    .await;
    assert!(redis.keys().contains(&"{session-pool}:layout".to_owned()), "{:?}", redis.keys());
}

/// A Redis Cluster whose node 3 replicates the primary of the store's slot, and servers on it.
struct OnCluster {
    redis: RedisCluster,
    /// The store's hash tag, whose slot the servers follow.
    tag: String,
    /// The node that serves the slot at first.
    primary: usize,
    /// The node `--store` names: a primary that does not serve the slot, from which a
    /// single-server client would get nothing but redirections.
    seed: usize,
    cluster: Cluster,
}

impl OnCluster {
    /// Starts it; `None` when the Redis tests are skipped.
    async fn start() -> Option<OnCluster> {
        let redis = tokio::task::block_in_place(RedisCluster::start)?;
        let tag = format!("{{{PREFIX}}}");
        let primary = tokio::task::block_in_place(|| {
            let primary = redis.primary_of(&tag);
            redis.replicate(3, primary);
            primary
        });
        let seed = (primary + 1) % 3;
        let cluster = Cluster::start_on(&redis.nodes[seed].url()).await;
        Some(OnCluster { redis, tag, primary, seed, cluster })
    }

    /// Waits until node 3 serves the slot and the Cluster is in order again.
    fn wait_for_node_3(&self) {
        tokio::task::block_in_place(|| {
            self.redis.wait_for_primary(&self.tag, 3);
            self.redis.wait_until_ok();
        });
    }

    /// Asserts that every server, ready again, has every write of `ledger`, and that the store's
    /// keys are all on node 3.
    async fn assert_kept_on_node_3(&self, ledger: &Ledger, pools: &[String], after: &str) {
        for replica in &self.cluster.replicas {
            // A call that met the old primary may be answered after a later one succeeded; the
            // next call, at the latest the sweep's within a second, says ready again.
            eventually(NOTICE, &format!("replica {} is ready {after}", replica.index), || async {
                replica.status_of("/readyz").await == Some(200)
            })
            .await;
            ledger.assert_kept_by(replica, pools).await;
        }
        self.cluster.assert_footprint(&self.redis.nodes[3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_replicas_follow_the_store_through_redirections_and_a_failover() {
    let Some(on) = OnCluster::start().await else { return };
    let pools: Vec<String> = (0..3).map(|n| format!("crawl-{n}")).collect();
    let live = Arc::new(Mutex::new(on.cluster.replicas.clone()));
    let ledger = Arc::new(Ledger::default());
    let load = run_load(live, pools.clone(), Tolerate::NotReady, ledger.clone());
    more_acked(&ledger, 150, "the load is under way").await;

    tokio::task::block_in_place(|| on.redis.fail_over_to(3));
    on.wait_for_node_3();
    ledger.reset_recent();
    more_acked(&ledger, 300, "the load goes on after the failover").await;
    load.stop().await;

    ledger.assert_wrote_in_each(&pools, "after the failover");
    on.assert_kept_on_node_3(&ledger, &pools, "after the failover").await;
    assert!(on.redis.nodes[on.seed].keys().is_empty(), "the node the servers were pointed at holds keys of the store");
}

/// A crash, not a handover: the primary of the store's slot is killed with SIGKILL while the load
/// goes on, and its replica takes over once the other primaries agree it is gone. Meanwhile the
/// servers answer 503 (never 500, never a write applied twice), and then serve again by
/// themselves. The load pauses before the crash until the replica has every write, since what a
/// replica has not received yet is lost with its primary: Redis's replication is asynchronous.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_replicas_serve_again_after_the_primary_crashes() {
    let Some(mut on) = OnCluster::start().await else { return };
    let pools: Vec<String> = (0..3).map(|n| format!("crawl-{n}")).collect();
    let live = Arc::new(Mutex::new(on.cluster.replicas.clone()));
    let ledger = Arc::new(Ledger::default());
    let load = run_load(live.clone(), pools.clone(), Tolerate::NotReady, ledger.clone());
    more_acked(&ledger, 150, "the load is under way").await;
    load.stop().await;
    tokio::task::block_in_place(|| on.redis.wait_in_sync(on.primary, 3));

    on.redis.nodes[on.primary].kill9();
    let load = run_load(live, pools.clone(), Tolerate::NotReady, ledger.clone());
    on.wait_for_node_3();
    assert!(ledger.not_ready.load(Ordering::SeqCst) > 0, "no call answered 503 while the slot had no primary");
    ledger.reset_recent();
    more_acked(&ledger, 300, "the load goes on after the crash").await;
    load.stop().await;

    ledger.assert_wrote_in_each(&pools, "after the crash");
    on.assert_kept_on_node_3(&ledger, &pools, "after the crash").await;
}

/// A Cluster has database 0 only: a server whose `--store` names another stops at once and says
/// why in one line, rather than waiting for a Redis that will never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_another_database_than_0_is_refused_in_one_line() {
    let Some(redis) = tokio::task::block_in_place(RedisCluster::start) else { return };
    let url = format!("redis://127.0.0.1:{}/1", redis.nodes[0].port);
    let dir = TempDir::new("replica");
    let stderr = tokio::task::block_in_place(|| common::refuses_to_start_with(&dir, &["--store", &url]));
    let said = format!("session-pool: --store {url}: a Redis Cluster has database 0 only, not database 1");
    assert!(stderr.lines().any(|line| line == said), "no line says what is wrong and where:\n{stderr}");
}

/// Every per-page call is one round trip to Redis, the first one on a pool that does not exist yet
/// (which makes it) included: `MONITOR` sees one command from the server per request (the
/// background sweep's `tick` aside), and the commands the script runs come from `lua`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_per_page_call_is_one_round_trip_to_redis() {
    use std::io::{BufRead, BufReader, Write};
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    let mut monitor = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect to redis-server");
    monitor.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    monitor.write_all(b"MONITOR\r\n").expect("MONITOR");
    let mut lines = BufReader::new(monitor.try_clone().expect("a second handle"));
    let mut ok = String::new();
    lines.read_line(&mut ok).expect("MONITOR's answer");
    assert_eq!(ok, "+OK\r\n");

    let leased = json!({"lease_secs": 60});
    let made = replica.expect(Method::POST, "/v1/pools/fresh-a/acquire", Some(&leased), 200).await;
    replica.expect(Method::POST, "/v1/pools/fresh-b/sessions", Some(&json!({"id": "s"})), 201).await;
    let session = format!("/v1/pools/fresh-a/sessions/{}", made["id"].as_str().expect("an id"));
    let release = json!({ "lease_id": made["lease"]["id"] });
    replica.expect(Method::POST, &format!("{session}/release"), Some(&release), 200).await;
    let again = replica.expect(Method::POST, "/v1/pools/fresh-a/acquire", Some(&leased), 200).await;
    let session = format!("/v1/pools/fresh-a/sessions/{}", again["id"].as_str().expect("an id"));
    let lease_id = json!({ "lease_id": again["lease"]["id"] });
    replica.expect(Method::POST, &format!("{session}/mark_good"), Some(&lease_id), 200).await;
    replica.expect(Method::POST, &format!("{session}/mark_bad"), Some(&json!({})), 200).await;
    replica.expect(Method::POST, &format!("{session}/status_code"), Some(&json!({"status_code": 200})), 200).await;
    replica.expect(Method::POST, "/v1/pools/fresh-b/sessions/s/retire", None, 200).await;
    const REQUESTS: usize = 8;

    redis.command(&["ECHO", "the end of the requests"]);
    let mut from_server = Vec::new();
    loop {
        let mut line = String::new();
        lines.read_line(&mut line).expect("a MONITOR line");
        if line.contains("\"ECHO\" \"the end of the requests\"") {
            break;
        }
        // +<time> [<db> lua] "..." for what a script runs, [<db> <address>] "..." for a client's.
        if !line.contains(" lua] ") && !line.contains("\"tick\"") {
            from_server.push(line.trim_end().to_owned());
        }
    }
    assert_eq!(from_server.len(), REQUESTS, "round trips for {REQUESTS} requests:\n{}", from_server.join("\n"));
    assert!(from_server.iter().all(|line| line.contains("\"FCALL\"")), "{from_server:#?}");
}

/// A database past the server's `databases` will never be served either: the server stops at once
/// and says so in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_redis_does_not_have_is_refused_in_one_line() {
    let Some(redis) = Redis::start() else { return };
    let url = format!("redis://127.0.0.1:{}/99", redis.port);
    let dir = TempDir::new("replica");
    let stderr = tokio::task::block_in_place(|| common::refuses_to_start_with(&dir, &["--store", &url]));
    let said = format!("session-pool: --store {url}: Redis has no database 99 (see its `databases` setting)");
    assert!(stderr.lines().any(|line| line == said), "no line says what is wrong and where:\n{stderr}");
}

/// The field `field` of the session `id` of `pool` (`r` its retired reason, `l` its lease id),
/// read straight from Redis, so that no call through a server applies the clock first.
fn field_in_redis(redis: &Redis, pool: &str, id: &str, field: &str) -> Option<String> {
    use common::redis::Reply;
    let Reply::Bulk(Some(generation)) = redis.command(&["HGET", &format!("{{{PREFIX}}}:p:{pool}"), "g"]) else {
        panic!("pool {pool} is not in Redis");
    };
    match redis.command(&["HGET", &format!("{{{PREFIX}}}:s:{pool}:{generation}:h:{id}"), field]) {
        Reply::Bulk(value) => value,
        other => panic!("HGET answered {other:?}"),
    }
}

/// Redis's count of each command since the last `CONFIG RESETSTAT`, the commands scripts ran
/// included, from `INFO commandstats`.
fn command_calls(redis: &Redis) -> BTreeMap<String, u64> {
    let common::redis::Reply::Bulk(Some(info)) = redis.command(&["INFO", "commandstats"]) else {
        panic!("INFO answered no text");
    };
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|field| field.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The sweep visits the pools with an expiry or a lease end due and a few others, not every pool:
/// over 300 idle pools each of its calls runs a bounded number of commands in Redis (it ran three
/// for every pool), and in pools nobody calls a session still expires and a lease still ends
/// within a second or two. The pool list, the other walk over every pool, takes a call per 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_costs_redis_the_pools_due_not_every_pool() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    const POOLS: usize = 300;
    for i in 0..POOLS {
        let pool = format!("/v1/pools/idle-{i:03}");
        replica.expect(Method::PUT, &pool, Some(&json!({"max_pool_size": 0})), 201).await;
        replica.expect(Method::POST, &format!("{pool}/sessions"), Some(&json!({"id": "s"})), 201).await;
    }
    // Last in name order, so the walk over every pool would come by these only after the others.
    replica.expect(Method::PUT, "/v1/pools/zz-quiet", Some(&json!({"max_pool_size": 0})), 201).await;
    let short = json!({"id": "short", "max_age_secs": 1});
    replica.expect(Method::POST, "/v1/pools/zz-quiet/sessions", Some(&short), 201).await;
    replica.expect(Method::PUT, "/v1/pools/zz-leased", Some(&json!({"max_pool_size": 0})), 201).await;
    replica.expect(Method::POST, "/v1/pools/zz-leased/sessions", Some(&json!({"id": "long"})), 201).await;
    let leased = json!({"lease_secs": 3});
    replica.expect(Method::POST, "/v1/pools/zz-leased/acquire", Some(&leased), 200).await;
    assert!(field_in_redis(&redis, "zz-leased", "long", "l").is_some(), "the acquire leased no session");

    redis.command(&["CONFIG", "RESETSTAT"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let calls = command_calls(&redis);
    let sweeps = calls.get("fcall").copied().unwrap_or(0);
    let in_scripts: u64 = calls
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "fcall" | "info" | "config|resetstat"))
        .map(|(_, n)| n)
        .sum();
    assert!(sweeps >= 2, "{sweeps} sweeps in 3.5 s: {calls:?}");
    assert!(in_scripts / sweeps < 150, "{in_scripts} commands in {sweeps} sweeps over {POOLS} idle pools: {calls:?}");
    eventually(Duration::from_secs(3), "the sweep expires the session of a pool nobody calls", || async {
        field_in_redis(&redis, "zz-quiet", "short", "r").as_deref() == Some("expired")
    })
    .await;
    eventually(Duration::from_secs(3), "the sweep ends a lease in a pool nobody calls", || async {
        field_in_redis(&redis, "zz-leased", "long", "l").is_none()
    })
    .await;
    assert_eq!(field_in_redis(&redis, "idle-000", "s", "r"), None);

    // The pool list also reads the pools a page of 100 a call, in name order across the pages.
    redis.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    redis.command(&["CONFIG", "SET", "slowlog-max-len", "100000"]);
    redis.command(&["SLOWLOG", "RESET"]);
    let listed = replica.get("/v1/pools").await;
    let names: Vec<&str> =
        listed["pools"].as_array().expect("pools").iter().filter_map(|p| p["name"].as_str()).collect();
    let mut expected: Vec<String> = (0..POOLS).map(|i| format!("idle-{i:03}")).collect();
    expected.extend(["default", "zz-leased", "zz-quiet"].map(String::from));
    expected.sort();
    assert_eq!(names, expected);
    let common::redis::Reply::Array(entries) = redis.command(&["SLOWLOG", "GET", "100000"]) else {
        panic!("SLOWLOG GET answered no list");
    };
    // Each entry: id, time, duration, [command and arguments], ...; a script's own commands too.
    let is_page = |entry: &common::redis::Reply| {
        use common::redis::Reply::{Array, Bulk};
        let Array(fields) = entry else { return false };
        let Some(Array(args)) = fields.get(3) else { return false };
        matches!((args.first(), args.get(4)), (Some(Bulk(Some(c))), Some(Bulk(Some(op)))) if c == "FCALL" && op == "pools")
    };
    let pages = entries.iter().filter(|entry| is_page(entry)).count();
    assert_eq!(pages, 4, "calls to Redis for a list of {} pools", expected.len());
}

/// A pool missing from the sweep's index of due pools (as one whose sessions an older version of
/// the server added would be) is found by the sweep's walk over every pool, 16 pools a call: the
/// first of 42 pools in name order and the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_pools_missing_from_its_index() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    let quiet = ["aa-quiet", "zz-quiet"];
    let pools = (0..40).map(|i| format!("p-{i:02}")).chain(quiet.map(String::from));
    for pool in pools {
        replica.expect(Method::PUT, &format!("/v1/pools/{pool}"), Some(&json!({"max_pool_size": 0})), 201).await;
    }
    let short = json!({"id": "short", "max_age_secs": 1});
    for pool in quiet {
        replica.expect(Method::POST, &format!("/v1/pools/{pool}/sessions"), Some(&short), 201).await;
    }
    redis.command(&["DEL", &format!("{{{PREFIX}}}:due")]);
    eventually(Duration::from_secs(8), "the sweep expires the sessions of pools missing from its index", || async {
        quiet.iter().all(|pool| field_in_redis(&redis, pool, "short", "r").as_deref() == Some("expired"))
    })
    .await;
}

/// Redis refusing the sweep's call (here a key of the wrong type) answers all the same: a replica
/// that lost its connection is ready again as soon as Redis answers, whatever it answers, rather than
/// waiting for a sweep that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_the_sweep_is_reachable_all_the_same() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    replica.expect(Method::PUT, "/v1/pools/p", Some(&json!({"max_pool_size": 10})), 201).await;
    // Only the sweep and a pool's deletion read the list of deleted pools.
    redis.command(&["SET", &format!("{{{PREFIX}}}:graves"), "not a list"]);
    redis.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    replica.serves_again("p").await;
}

/// A mass expiry across pools is swept within a sweep or two though each of the sweep's calls
/// handles about 64 timers: it calls again while work is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_expiry_across_pools_is_swept_in_bounded_calls_without_falling_behind() {
    let Some(redis) = Redis::start() else { return };
    let lone = Lone::start(&redis.url()).await;
    let replica = &lone.replica;
    let pools: Vec<String> = (0..5).map(|i| format!("mass-{i}")).collect();
    let config = json!({"max_pool_size": 200, "session": {"max_age_secs": 1}});
    for pool in &pools {
        replica.expect(Method::PUT, &format!("/v1/pools/{pool}"), Some(&config), 201).await;
        replica.expect(Method::POST, &format!("/v1/pools/{pool}/acquire"), Some(&json!({})), 200).await;
    }
    let usable = |pool: &str| match redis.command(&["HGET", &format!("{{{PREFIX}}}:p:{pool}"), "us"]) {
        common::redis::Reply::Bulk(Some(count)) => count,
        other => panic!("HGET answered {other:?}"),
    };
    assert!(pools.iter().all(|pool| usable(pool) == "200"), "the acquires did not fill the pools");
    eventually(Duration::from_secs(4), "the sweep retires all 1000 sessions", || async {
        pools.iter().all(|pool| usable(pool) == "0")
    })
    .await;
}
