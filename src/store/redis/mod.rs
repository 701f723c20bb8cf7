//! The Redis (or Valkey) store: every pool lives in Redis, so any number of servers on the same
//! Redis serve the same pools.
//!
//! Every call on a pool is one round trip: one `FCALL` of `pool.lua` (a Functions library each server
//! loads once, named for its version), which reads the clock from
//! Redis (`TIME`), applies it to the pool and makes the change, atomically on the server. So each
//! pool is linearizable across servers, and servers with skewed clocks agree on expiry and leases.
//! The one exception is `PATCH` of user data: the JSON merge patch is applied here, between a read
//! and a compare-and-set on the session's version, retried when another call came between.
//! Cookie jars need no such step: the RFC 6265 rules run here and turn a report's cookies into
//! upserts and deletions by (name, domain, path), which the script applies in the same step as the
//! mark.
//!
//! The key layout and the work each call does are in `pool.lua`'s header: every call costs O(1) or
//! O(log n) in the pool's size, plus at most a bounded number of timers that came due (expiries,
//! lease ends, purges), which the sweep ([`RedisStore::tick`]) otherwise handles. Every key
//! starts with `{PREFIX}` (`--redis-key-prefix`), one hash tag: on Redis Cluster the whole service
//! sits in one slot, which is what lets one script see the pool list and the count of sessions
//! against `--max-sessions`. `--store` may name any node of a Cluster: `Link` is then redis-rs's
//! Cluster client, which sends each call to the primary of that slot and, when the slot moves (a
//! failover), learns the new map; the library is loaded on that primary (its replicas copy it).
//!
//! Redis unreachable: calls answer [`PoolError::Unavailable`] (503 `not_ready`), the client
//! reconnects by itself (and the sweep replaces it once a second while the store is not ready, or
//! when Redis refuses the sweep), and [`RedisStore::is_ready`] says so for `/readyz`. No call that may have
//! run is sent again (see `Link`); one that times out may still have been applied by Redis: the
//! client sees 503 either way.

mod codec;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use chrono::TimeDelta;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use uuid::Uuid;

use self::codec::{config_fields, config_of, cookie_json, cookie_key, cookie_key_of, session_of, text};
use super::{CreateSession, Mark, PoolInfo};
use crate::config::RedisUrl;
use crate::metric_names as names;
use crate::pool::{Imported, Incoming, PoolConfig, PoolCounts, PoolError, StateFilter, DEFAULT_POOL};
use crate::session::jar::JarOp;
use crate::session::{self, RetiredReason, Session, Timestamp};

/// How many due timers one call handles at most, besides its own work.
const BOUND: usize = 64;

/// How long one call may wait for Redis before it answers 503.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection to one Redis server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often, at most, the sweep replaces the Redis client while the store is not ready.
const RELINK_INTERVAL: Duration = Duration::from_secs(1);

/// How often, at most, a failed call says at warn level that Redis still cannot be reached.
const WARN_AGAIN: Duration = Duration::from_secs(30);

/// What the store keeps of an outage of Redis.
#[derive(Debug, Default)]
struct Outage {
    /// When it last said so at warn level.
    warned: Option<Instant>,
    /// When the sweep last made a new client.
    relinked: Option<Instant>,
}

impl Outage {
    /// Whether to say again at warn level that Redis cannot be reached (and, if so, noting it).
    fn warn_again(&mut self) -> bool {
        let again = self.warned.is_none_or(|at| at.elapsed() >= WARN_AGAIN);
        if again {
            self.warned = Some(Instant::now());
        }
        again
    }
}

/// Sessions an export reads per round trip.
const EXPORT_PAGE: usize = 1000;

/// Pools a listing (`GET /v1/pools`, the gauges of `/metrics`) reads per round trip: each costs
/// Redis some 20 µs, and every other call waits behind the script.
const POOLS_PAGE: usize = 100;

/// What the store needs to know of the server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--redis-key-prefix`.
    pub prefix: String,
    /// `--max-pools`.
    pub max_pools: usize,
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// `--retired-retention-secs`.
    pub retention: TimeDelta,
    /// The server's default pool configuration.
    pub defaults: PoolConfig,
    /// How long one call may wait for Redis before it answers [`PoolError::Unavailable`] (Redis may
    /// still apply it). The server's [`RESPONSE_TIMEOUT`] keeps clients from hanging; a migration
    /// waits far longer, as one import of a large pool is a single call.
    pub response_timeout: Duration,
}

/// The connection to Redis: to one server, or to a Redis Cluster, whose client follows the
/// store's slot (the second field) to whichever primary holds it. Both multiplex every call over
/// one connection per server and reconnect by themselves; cheap to clone.
///
/// Neither sends again a call that may have run: one that met a dropped connection may have been
/// applied, and sending it again could apply a mark twice. On a Cluster the client is therefore
/// built with no retries: a call that meets a redirection (`MOVED`, after a failover) or a lost
/// node answers 503. A redirection makes the client fetch the new slot map at once; a lost node
/// makes it reconnect, and once the Cluster has promoted a replica, the first call that meets a
/// redirection or no connection makes it fetch the map.
#[derive(Clone)]
enum Link {
    One(ConnectionManager),
    Cluster(ClusterConnection, u16),
}

/// Why [`RedisStore::connect`] did not connect.
enum Refused {
    /// Redis cannot be reached or is not ready yet: try again.
    NotYet(String),
    /// `--store` names something the store cannot use; trying again will not help.
    Never(String),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::One(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn, _) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::One(conn) => conn.req_packed_commands(cmd, offset, count),
            Link::Cluster(conn, _) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::One(conn) => conn.get_db(),
            Link::Cluster(conn, _) => conn.get_db(),
        }
    }
}

/// The Redis store. Cheap to share: its `Link` multiplexes every call.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    /// `--store`'s database number, which must be 0 on a Redis Cluster.
    db: u32,
    conn: RwLock<Option<Link>>,
    /// `pool.lua` as a Functions library, named for this version.
    library: String,
    /// Its one function's name.
    function: String,
    tag: String,
    /// The default pool configuration as script arguments, for calls that make a pool.
    default_fields: Vec<Vec<u8>>,
    settings: Settings,
    ready: AtomicBool,
    /// Notified when a call finds Redis out of reach, so that the sweep tries it again at once.
    lost: Notify,
    /// While not ready: when a failed call last said so at warn level, and when the sweep last made
    /// a new client.
    outage: Mutex<Outage>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.url).field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// A script's answer: the Redis time it ran at and the rest of what it returned.
struct Reply {
    now: Timestamp,
    rest: Vec<Value>,
}

impl RedisStore {
    /// A store on `url`, not connected yet: [`RedisStore::connect`] connects.
    ///
    /// # Errors
    /// A URL the client refuses.
    pub fn new(url: &RedisUrl, settings: Settings) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.as_url().as_str())
            .map_err(|e| anyhow::anyhow!("--store {url}: the Redis client refuses it: {e}"))?;
        let code = include_str!("pool.lua");
        // Servers of different versions may share a Redis: each loads and calls its own library.
        let version = redis::Script::new(code).get_hash()[..12].to_owned();
        let mut default_fields = Vec::new();
        push_fields(&mut default_fields, &config_fields(&settings.defaults));
        Ok(Self {
            client,
            url: url.to_string(),
            db: url.db,
            conn: RwLock::new(None),
            library: code.replace("@VERSION@", &version),
            function: format!("session_pool_{version}"),
            default_fields,
            tag: format!("{{{}}}", settings.prefix),
            settings,
            ready: AtomicBool::new(false),
            lost: Notify::new(),
            outage: Mutex::new(Outage::default()),
        })
    }

    /// Connects, retrying until Redis answers (a Redis that is down at start is waited for, not
    /// a crash), and makes the `default` pool when the store has none. A server that says it is a
    /// Cluster node gets the Cluster client, seeded with this node. Whether Redis is a Cluster is
    /// decided here, and again when the sweep replaces the client during an outage.
    ///
    /// # Errors
    /// The URL names what Redis will never serve (another database than 0 on a Cluster, a
    /// database past the server's `databases`), in one line without the URL.
    pub async fn connect(&self) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            match self.open().await {
                Ok(link) => {
                    *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
                    let cluster = matches!(link, Link::Cluster(..));
                    match self.load(link).await {
                        Ok(()) => {
                            self.ready.store(true, Ordering::Release);
                            tracing::info!(store = %self.url, cluster, "connected to Redis");
                            return Ok(());
                        }
                        Err(e) if attempt.is_multiple_of(10) => {
                            let hint = if e.to_string().contains("unknown command") {
                                "; the Redis store needs Redis 7 or Valkey 7.2 (Functions)"
                            } else {
                                ""
                            };
                            tracing::warn!(store = %self.url, error = %e, "Redis does not take calls yet{hint}; retrying every second")
                        }
                        Err(_) => {}
                    }
                }
                Err(Refused::Never(why)) => anyhow::bail!(why),
                Err(Refused::NotYet(e)) if attempt.is_multiple_of(10) => {
                    tracing::warn!(store = %self.url, error = %e, "cannot reach Redis; retrying every second");
                }
                Err(Refused::NotYet(_)) => {}
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A connection to the server `--store` names, or to its Cluster when it is a Cluster node.
    async fn open(&self) -> Result<Link, Refused> {
        // One connection attempt per call that finds the connection lost, no backoff of the
        // client's own: calls wait on a reconnection in progress, so its retries would hold them
        // (and the sweep, which tries every 100 ms while not ready) up to a second after Redis is
        // back.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(self.settings.response_timeout)
            .set_number_of_retries(0);
        let mut one = ConnectionManager::new_with_config(self.client.clone(), config).await.map_err(|e| {
            // The connection SELECTs `--store`'s database, which a Cluster node refuses, and one
            // server refuses past its `databases`.
            let why = e.to_string();
            if self.db != 0 && why.contains("cluster mode") {
                Refused::Never(format!("a Redis Cluster has database 0 only, not database {}", self.db))
            } else if why.contains("DB index is out of range") {
                Refused::Never(format!("Redis has no database {} (see its `databases` setting)", self.db))
            } else {
                Refused::NotYet(why)
            }
        })?;
        // The slot of the store's keys, which only a Cluster node knows. `CLUSTER` is not in
        // @dangerous, as INFO is, so a user that may not run it could not run the Cluster client
        // either (it needs CLUSTER SLOTS): such a user is taken to be on one server.
        let slot: u16 = match redis::cmd("CLUSTER").arg("KEYSLOT").arg(&self.tag).query_async(&mut one).await {
            Ok(slot) => slot,
            Err(e) if e.to_string().contains("cluster support disabled") || e.code() == Some("NOPERM") => {
                return Ok(Link::One(one));
            }
            Err(e) => return Err(Refused::NotYet(format!("CLUSTER KEYSLOT: {e}"))),
        };
        let cluster = ClusterClient::builder(vec![self.client.get_connection_info().clone()])
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(self.settings.response_timeout)
            .retries(0)
            .build()
            .map_err(|e| Refused::Never(format!("the Redis Cluster client refuses its settings: {e}")))?;
        let conn = cluster
            .get_async_connection()
            .await
            .map_err(|e| Refused::NotYet(format!("the Cluster's slot map: {e}")))?;
        Ok(Link::Cluster(conn, slot))
    }

    /// Whether Redis answered the last call that says (a redirection on a Cluster does not).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Resolves once a call has found Redis out of reach since the last time it resolved: the
    /// store is not ready, and only a call that reaches Redis makes it ready again.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }

    /// The server's default pool configuration.
    pub fn defaults(&self) -> &PoolConfig {
        &self.settings.defaults
    }

    fn pool_key(&self, pool: &str) -> String {
        format!("{}:p:{pool}", self.tag)
    }

    /// Loads the library into Redis and makes the `default` pool when the store has none: at
    /// connect, and again when a Redis that lost its data (and the library with it) came back.
    /// On a Cluster it is sent to the primary of the store's slot (its replicas copy it), not to
    /// every primary: a primary of other slots that is down does not stop the store.
    async fn load(&self, mut conn: Link) -> Result<(), PoolError> {
        let mut command = redis::cmd("FUNCTION");
        command.arg("LOAD").arg("REPLACE").arg(&self.library);
        let loaded = match &mut conn {
            Link::One(one) => command.query_async::<Value>(one).await,
            Link::Cluster(cluster, slot) => {
                let primary = Route::new(*slot, SlotAddr::Master);
                cluster
                    .route_command(&command, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(primary)))
                    .await
            }
        };
        loaded.map_err(|e| self.failed("FUNCTION LOAD", "", &e, &conn))?;
        self.ensure_default(conn).await
    }

    /// Makes the `default` pool when the store has none (a Redis that lost its data, a FLUSHALL).
    async fn ensure_default(&self, mut conn: Link) -> Result<(), PoolError> {
        let answer =
            self.command("ensure_default", DEFAULT_POOL, self.default_fields.clone()).query_async(&mut conn).await;
        match answer {
            Ok(value) => self.reply("ensure_default", DEFAULT_POOL, value).map(drop),
            Err(e) => Err(self.failed("ensure_default", DEFAULT_POOL, &e, &conn)),
        }
    }

    /// The FCALL of the library's `op` on `pool` with the common arguments and then `args`.
    fn command(&self, op: &str, pool: &str, args: Vec<Vec<u8>>) -> redis::Cmd {
        let mut command = redis::cmd("FCALL");
        command
            .arg(&self.function)
            .arg(1)
            .arg(self.pool_key(pool))
            .arg(op)
            .arg(&self.tag)
            .arg(pool)
            .arg(self.settings.max_sessions)
            .arg(self.settings.retention.num_microseconds().unwrap_or(i64::MAX))
            .arg(BOUND)
            .arg(args);
        command
    }

    /// Runs the library's `op` on `pool` with `args` after the common ones, in one round trip;
    /// answers its reply, or the error it refused with.
    async fn call(&self, op: &str, pool: &str, args: Vec<Vec<u8>>) -> Result<Reply, PoolError> {
        let Some(mut conn) = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(PoolError::Unavailable("not connected to Redis yet".into()));
        };
        let command = self.command(op, pool, args);
        let mut answer = command.query_async::<Value>(&mut conn).await;
        let lost_library = matches!(&answer, Err(e) if e.to_string().contains("Function not found"));
        // `default` always exists; a Redis that lost it (restarted without its data, flushed)
        // gets it back before the call is answered.
        let lost_default = pool == DEFAULT_POOL && is_pool_not_found(&answer);
        if lost_library || lost_default {
            if lost_library {
                self.load(conn.clone()).await?;
            } else {
                self.ensure_default(conn.clone()).await?;
            }
            answer = command.query_async::<Value>(&mut conn).await;
        }
        match answer {
            Ok(value) => {
                self.answered();
                self.reply(op, pool, value)
            }
            Err(e) => Err(self.failed(op, pool, &e, &conn)),
        }
    }

    /// The error a failed call answers. A Redis that cannot be reached or cannot serve (down, slow,
    /// loading, out of memory, refusing writes, refusing the password) makes the store not ready;
    /// one that ran the call and refused it (a script error) proves it can be reached.
    fn failed(&self, op: &str, pool: &str, e: &RedisError, link: &Link) -> PoolError {
        // On a Cluster a redirection (the slot moved in a failover) is answered 503 like the rest,
        // but says nothing of whether Redis can be reached, so it leaves readiness as it is; to the
        // single-server client it means `--store` became a Cluster node, which it cannot follow
        // until the sweep makes a new client.
        let redirected = matches!(e.kind(), ErrorKind::Moved | ErrorKind::Ask | ErrorKind::TryAgain);
        // The client that made the call: the sweep may have replaced the store's since.
        let on_cluster = matches!(link, Link::Cluster(..));
        let unreachable = (redirected && !on_cluster)
            || e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::BusyLoadingError
                    | ErrorKind::ClusterDown
                    | ErrorKind::MasterDown
                    | ErrorKind::ReadOnly
                    | ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::AuthenticationFailed
            )
            || matches!(e.code(), Some("OOM" | "BUSY" | "MISCONF" | "NOREPLICAS" | "NOAUTH" | "WRONGPASS"));
        if !(redirected || unreachable) {
            self.answered();
            tracing::error!(store = %self.url, op, pool, error = %e, "Redis refused a call");
            return PoolError::Damaged(format!("Redis refused {op} on pool {pool:?}: {e}"));
        }
        if !unreachable {
            tracing::warn!(store = %self.url, op, pool, error = %e, "a call to Redis was redirected");
        } else if self.ready.swap(false, Ordering::AcqRel) {
            self.lost.notify_one();
            self.outage().warned = Some(Instant::now());
            tracing::warn!(store = %self.url, op, pool, error = %e, "Redis cannot be reached: not ready until it answers");
        } else if self.outage().warn_again() {
            tracing::warn!(store = %self.url, op, pool, error = %e, "Redis still cannot be reached");
        } else {
            tracing::debug!(store = %self.url, op, pool, error = %e, "Redis still cannot be reached");
        }
        // The client sees what kind of trouble, not Redis's own text (which names Cluster nodes).
        PoolError::Unavailable(
            if e.is_timeout() {
                "Redis did not answer in time"
            } else if redirected && on_cluster {
                "the store's slot is moving to another Redis node (a failover)"
            } else {
                "Redis cannot be reached or cannot serve calls now"
            }
            .into(),
        )
    }

    fn outage(&self) -> MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that Redis answered a call: the store is ready.
    fn answered(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(store = %self.url, "Redis answers again: ready");
        }
    }

    /// Replaces the client with a new one, at most once a [`RELINK_INTERVAL`]: while the store is
    /// not ready, and when Redis refuses the sweep. redis-rs's client reconnects by itself after an I/O error only; after
    /// another failure to connect (a password Redis refuses) it answers that failure to every call
    /// for good, and a single-server client cannot follow `--store` into a Cluster. A new client
    /// gets past both.
    async fn relink_now_and_then(&self) {
        {
            let mut outage = self.outage();
            if outage.relinked.is_some_and(|at| at.elapsed() < RELINK_INTERVAL) {
                return;
            }
            outage.relinked = Some(Instant::now());
        }
        match self.open().await {
            Ok(link) => *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(link),
            Err(Refused::NotYet(why)) => {
                tracing::debug!(store = %self.url, error = %why, "a new Redis client cannot connect yet");
            }
            Err(Refused::Never(why)) => {
                if self.outage().warn_again() {
                    tracing::error!(store = %self.url, error = %why, "Redis will not serve this --store");
                }
            }
        }
    }

    fn reply(&self, op: &str, pool: &str, value: Value) -> Result<Reply, PoolError> {
        let damaged = |what: &str| {
            tracing::error!(store = %self.url, op, pool, what, "an answer of the Redis script does not read");
            PoolError::Damaged(format!("the answer to {op} on pool {pool:?}: {what}"))
        };
        let Value::Array(mut items) = value else { return Err(damaged("not a list")) };
        if items.len() < 3 {
            return Err(damaged("too short"));
        }
        let rest = items.split_off(3);
        let status = text(&items[0]).ok_or_else(|| damaged("no status"))?.to_owned();
        if status == "err" {
            let code = text(&items[1]).unwrap_or("").to_owned();
            let detail = text(&items[2]).unwrap_or("").to_owned();
            if let Some(Value::Array(events)) = rest.first() {
                count(events);
            }
            return Err(match code.as_str() {
                "POOL_NOT_FOUND" => PoolError::PoolNotFound(detail),
                "SESSION_NOT_FOUND" => PoolError::SessionNotFound(detail),
                "SESSION_EXISTS" => PoolError::SessionExists(detail),
                "LEASE_MISMATCH" => PoolError::LeaseMismatch(detail),
                "NO_SESSION" => PoolError::NoSessionAvailable,
                "LIMIT" => PoolError::LimitReached(detail),
                "LIMIT_SESSIONS" => PoolError::LimitReached(format!(
                    "the server holds its maximum of {} sessions (--max-sessions)",
                    self.settings.max_sessions
                )),
                "CONFLICT" => PoolError::Conflict,
                _ => damaged(&format!("the script failed: {code} {detail}")),
            });
        }
        let now = text(&items[1])
            .and_then(|raw| raw.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| damaged("no time"))?;
        if let Value::Array(events) = &items[2] {
            count(events);
        }
        Ok(Reply { now, rest })
    }

    /// The sessions of a page in a reply: a list of `[id, fields]`.
    fn page_of(&self, pool: &str, page: Option<&Value>) -> Result<Vec<Session>, PoolError> {
        let damaged = || PoolError::Damaged(format!("a page of pool {pool:?} from Redis does not read"));
        let Some(Value::Array(page)) = page else { return Err(damaged()) };
        let mut sessions = Vec::with_capacity(page.len());
        for entry in page {
            let Value::Array(pair) = entry else { return Err(damaged()) };
            let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1)) else {
                return Err(damaged());
            };
            sessions.push(self.session_of(pool, id, fields)?);
        }
        Ok(sessions)
    }

    /// The session of a reply's `[id, fields]` at `at`.
    fn session_at(&self, reply: &Reply, at: usize, pool: &str) -> Result<Session, PoolError> {
        let id = reply.rest.get(at).and_then(text);
        let fields = match reply.rest.get(at + 1) {
            Some(Value::Array(fields)) => Some(fields),
            _ => None,
        };
        let (Some(id), Some(fields)) = (id, fields) else {
            return Err(PoolError::Damaged(format!("an answer on pool {pool:?} holds no session")));
        };
        self.session_of(pool, id, fields)
    }

    fn session_of(&self, pool: &str, id: &str, fields: &[Value]) -> Result<Session, PoolError> {
        session_of(id, fields).map(|(session, _)| session).map_err(|what| {
            tracing::error!(store = %self.url, pool, session = id, what, "a session stored in Redis does not read");
            PoolError::Damaged(format!("session {id:?} of pool {pool:?} in Redis: {what}"))
        })
    }

    /// Calls `op` with `args` and the default config, with which the call makes the pool when it
    /// is missing: one round trip either way. (Sending the defaults only after a first call found
    /// the pool missing saved 1-2% on acquire over HTTP, under the 5% a trick must buy.)
    async fn call_making_pool(&self, op: &str, pool: &str, mut args: Vec<Vec<u8>>) -> Result<Reply, PoolError> {
        args.extend(self.default_fields.iter().cloned());
        self.call(op, pool, args).await
    }

    /// Hands out a session of `pool` (made with the defaults when missing), leased for `lease`.
    ///
    /// # Errors
    /// As [`crate::pool::Pool::acquire`], and [`PoolError::Unavailable`].
    pub async fn acquire<R>(
        &self,
        pool: &str,
        lease: Option<TimeDelta>,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        let started = std::time::Instant::now();
        let lease_us = lease.map(|l| l.num_microseconds().unwrap_or(i64::MAX).to_string()).unwrap_or_default();
        let args = vec![
            lease_us.into_bytes(),
            Uuid::new_v4().simple().to_string().into_bytes(),
            Uuid::new_v4().simple().to_string().into_bytes(),
            self.settings.max_pools.to_string().into_bytes(),
        ];
        let reply = self.call_making_pool("acquire", pool, args).await?;
        let session = self.session_at(&reply, 0, pool)?;
        metrics::histogram!(names::ACQUIRE_DURATION, "pool" => pool.to_owned()).record(started.elapsed().as_secs_f64());
        Ok(render(&session, reply.now))
    }

    /// Creates a session in `pool` (made with the defaults when missing).
    ///
    /// # Errors
    /// As [`crate::pool::Pool::create`], and [`PoolError::Unavailable`].
    pub async fn create<R>(
        &self,
        pool: &str,
        new: CreateSession,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        new.settings.validate()?;
        let settings = &new.settings;
        let mut given: Vec<(&str, String)> = Vec::new();
        if let Some(v) = settings.max_age_secs {
            given.push(("ma", v.to_string()));
        }
        if let Some(v) = settings.max_usage_count {
            given.push(("mu", v.to_string()));
        }
        if let Some(v) = settings.max_error_score {
            given.push(("me", v.to_string()));
        }
        if let Some(v) = settings.error_score_decrement {
            given.push(("d", v.to_string()));
        }
        if let Some(v) = &settings.blocked_status_codes {
            given.push(("b", codec::codes(v)));
        }
        match &new.proxy_url {
            Some(Some(url)) => given.push(("p", url.clone())),
            Some(None) => given.push(("np", "1".into())),
            None => {}
        }
        if !new.user_data.is_empty() {
            given.push(("ud", serde_json::Value::Object(new.user_data.clone()).to_string()));
        }
        if let Some(jar) = codec::jar(&new.cookies) {
            given.push(("j", jar));
        }
        let mut args = vec![
            new.id.clone().unwrap_or_default().into_bytes(),
            Uuid::new_v4().simple().to_string().into_bytes(),
            self.settings.max_pools.to_string().into_bytes(),
        ];
        push_fields(&mut args, &given);
        let reply = self.call_making_pool("create", pool, args).await?;
        let session = self.session_at(&reply, 0, pool)?;
        Ok(render(&session, reply.now))
    }

    /// The session `id` of `pool`.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::SessionNotFound`], [`PoolError::Unavailable`].
    pub async fn get<R>(
        &self,
        pool: &str,
        id: &str,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        let reply = self.call("get", pool, vec![id.as_bytes().to_vec()]).await?;
        let session = self.session_at(&reply, 0, pool)?;
        Ok(render(&session, reply.now))
    }

    /// A page of `pool`'s sessions in `state`, in id order after `after`.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::Unavailable`].
    pub async fn list<R>(
        &self,
        pool: &str,
        filter: StateFilter,
        after: Option<&str>,
        limit: usize,
        render: impl FnOnce(&[&Session], Option<&str>, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        let state = match filter {
            StateFilter::All => "all",
            StateFilter::Usable => "usable",
            StateFilter::Retired => "retired",
            StateFilter::Leased => "leased",
        };
        let args = vec![state.into(), after.unwrap_or("").into(), limit.to_string().into_bytes()];
        let reply = self.call("list", pool, args).await?;
        let sessions = self.page_of(pool, reply.rest.first())?;
        let next = reply.rest.get(1).and_then(text).filter(|id| !id.is_empty());
        let page: Vec<&Session> = sessions.iter().collect();
        Ok(render(&page, next, reply.now))
    }

    /// PATCH: the user data merge patch and the cookie upserts.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::SessionNotFound`], [`PoolError::Unavailable`].
    pub async fn edit<R>(
        &self,
        pool: &str,
        id: &str,
        user_data: Option<serde_json::Map<String, serde_json::Value>>,
        jar: Vec<JarOp>,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        for _ in 0..CAS_ATTEMPTS {
            // Without user data the cookie upserts apply in one step; with it, the merge patch is
            // applied to the version read and written only if no other call changed it meanwhile.
            let (version, data) = match &user_data {
                None => (String::new(), String::new()),
                Some(patch) => {
                    let reply = self.call("get", pool, vec![id.as_bytes().to_vec()]).await?;
                    let Some(Value::Array(fields)) = reply.rest.get(1) else {
                        return Err(PoolError::Damaged(format!("an answer on pool {pool:?} holds no session")));
                    };
                    let (mut session, version) = session_of(id, fields).map_err(|what| {
                        PoolError::Damaged(format!("session {id:?} of pool {pool:?} in Redis: {what}"))
                    })?;
                    // As the script's `session_version`: a session made again under this id
                    // since the read is a change too.
                    let version = format!("{}.{version}", codec::micros(session.created_at));
                    session::merge_patch(&mut session.user_data, patch.clone());
                    (version, serde_json::Value::Object(session.user_data).to_string())
                }
            };
            let mut args = vec![id.as_bytes().to_vec(), version.into_bytes(), data.into_bytes()];
            push_jar(&mut args, &jar);
            match self.call("edit", pool, args).await {
                Err(PoolError::Conflict) => continue,
                Err(e) => return Err(e),
                Ok(reply) => {
                    let session = self.session_at(&reply, 0, pool)?;
                    return Ok(render(&session, reply.now));
                }
            }
        }
        Err(kept_changing("session", id, pool))
    }

    /// Deletes the session `id` of `pool`.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::SessionNotFound`], [`PoolError::Unavailable`].
    pub async fn delete_session(&self, pool: &str, id: &str) -> Result<(), PoolError> {
        self.call("delete", pool, vec![id.as_bytes().to_vec()]).await.map(drop)
    }

    /// A mark, retire, status report or cookie store, with the jar operations applied first.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::SessionNotFound`], [`PoolError::Unavailable`].
    pub async fn mark<R>(
        &self,
        pool: &str,
        id: &str,
        mark: Mark<'_>,
        lease_id: Option<&str>,
        jar: Vec<JarOp>,
        render: impl FnOnce(&Session, bool, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        let (kind, status): (&str, Option<&session::StatusReport<'_>>) = match &mark {
            Mark::Good => ("good", None),
            Mark::Bad => ("bad", None),
            Mark::Retire => ("retire", None),
            Mark::Status(report) => ("status", Some(report)),
            Mark::Nothing => ("none", None),
        };
        let mut args = vec![
            id.as_bytes().to_vec(),
            kind.into(),
            lease_id.map(normal_lease_id).unwrap_or_default().into_bytes(),
            status.map(|s| s.status_code.to_string()).unwrap_or_default().into_bytes(),
            status.map(|s| codec::codes(s.additional_blocked)).unwrap_or_default().into_bytes(),
            status.map(|s| codec::codes(s.ignored)).unwrap_or_default().into_bytes(),
            if status.is_some_and(|s| s.mark) { "1" } else { "0" }.into(),
        ];
        push_jar(&mut args, &jar);
        let reply = self.call("mark", pool, args).await?;
        let session = self.session_at(&reply, 0, pool)?;
        let blocked = matches!(reply.rest.get(2), Some(Value::Int(1)));
        Ok(render(&session, blocked, reply.now))
    }

    /// Ends the lease `lease_id` of the session `id`.
    ///
    /// # Errors
    /// As [`crate::pool::Pool::release`], and [`PoolError::Unavailable`].
    pub async fn release<R>(
        &self,
        pool: &str,
        id: &str,
        lease_id: &str,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        // An id that is no lease id matches no lease: "-" is never one.
        let normal = Some(normal_lease_id(lease_id)).filter(|l| !l.is_empty()).unwrap_or_else(|| "-".into());
        let reply = match self.call("release", pool, vec![id.as_bytes().to_vec(), normal.into_bytes()]).await {
            Err(PoolError::LeaseMismatch(_)) => return Err(PoolError::LeaseMismatch(lease_id.to_owned())),
            other => other?,
        };
        let session = self.session_at(&reply, 0, pool)?;
        Ok(render(&session, reply.now))
    }

    /// Every pool, sorted by name, with the sessions held by all of them, read 100 pools a round
    /// trip: each page is as of its own call (a pool made or deleted meanwhile may show or
    /// not), so that no script holds Redis for a walk over every pool.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    pub async fn pools(&self) -> Result<(Vec<PoolInfo>, usize), PoolError> {
        let mut pools = Vec::new();
        let mut after = String::new();
        loop {
            let args = vec![POOLS_PAGE.to_string().into_bytes(), after.into_bytes()];
            let reply = self.call("pools", "", args).await?;
            if let Some(Value::Array(list)) = reply.rest.first() {
                for status in list {
                    pools.push(self.pool_info(status)?);
                }
            }
            let held = reply.rest.get(1).and_then(text).and_then(|h| h.parse().ok()).ok_or_else(|| {
                PoolError::Damaged(format!("{}:held, the sessions held by every pool, is not a count", self.tag))
            })?;
            match reply.rest.get(2).and_then(text) {
                Some("") => return Ok((pools, held)),
                Some(last) => after = last.to_owned(),
                None => return Err(PoolError::Damaged("the answer to pools: no name to go on after".into())),
            }
        }
    }

    fn pool_info(&self, status: &Value) -> Result<PoolInfo, PoolError> {
        let damaged = |what: &str| PoolError::Damaged(format!("a pool's status in Redis: {what}"));
        let Value::Array(fields) = status else { return Err(damaged("not a list")) };
        let field = |i: usize| fields.get(i).and_then(text).ok_or_else(|| damaged("a field is missing"));
        let int = |i: usize| field(i).and_then(|v| v.parse::<usize>().map_err(|_| damaged("a count is not a number")));
        let name = field(0)?.to_owned();
        let config = config_of(field(1)?, &self.settings.defaults).map_err(|e| damaged(&e))?;
        let created_at = field(2)?
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| damaged("ca is not an instant"))?;
        let (sessions, usable, leased) = (int(3)?, int(4)?, int(5)?);
        let counts = PoolCounts { sessions, usable, retired: sessions.saturating_sub(usable), leased };
        Ok(PoolInfo { name, config, counts, created_at })
    }

    /// The pool `name`.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::Unavailable`].
    pub async fn pool(&self, name: &str) -> Result<PoolInfo, PoolError> {
        let reply = self.call("pool", name, Vec::new()).await?;
        self.pool_info(reply.rest.first().unwrap_or(&Value::Nil))
    }

    /// Creates the pool with `config`, or reconfigures it; answers whether it was created.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`, [`PoolError::Unavailable`].
    pub async fn put_pool(&self, name: &str, config: PoolConfig) -> Result<(PoolInfo, bool), PoolError> {
        let mut args = vec![self.settings.max_pools.to_string().into_bytes()];
        push_fields(&mut args, &config_fields(&config));
        let reply = self.call("put", name, args).await?;
        let info = self.pool_info(reply.rest.first().unwrap_or(&Value::Nil))?;
        Ok((info, matches!(reply.rest.get(1), Some(Value::Int(1)))))
    }

    /// Deletes the pool; `default` is emptied and reset to the server's defaults instead. Its
    /// sessions' keys are dropped by the sweep, a bounded number at a time.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::Unavailable`].
    pub async fn delete_pool(&self, name: &str) -> Result<(), PoolError> {
        self.call("delete_pool", name, self.default_fields.clone()).await.map(drop)
    }

    /// The pool's configuration and every session it holds, in id order. Read a page of sessions
    /// per round trip; a pool deleted meanwhile is [`PoolError::PoolNotFound`].
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`], [`PoolError::Unavailable`].
    pub async fn export<R>(
        &self,
        pool: &str,
        render: impl FnOnce(&PoolConfig, &mut dyn Iterator<Item = &Session>, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        let mut sessions: Vec<Session> = Vec::new();
        let mut config = None;
        let mut generation: Option<String> = None;
        let mut now = None;
        let mut after = String::new();
        loop {
            let args = vec![EXPORT_PAGE.to_string().into_bytes(), after.into_bytes()];
            let reply = self.call("export", pool, args).await?;
            let this_generation = reply.rest.get(2).and_then(text).map(str::to_owned);
            if generation.is_some() && generation != this_generation {
                return Err(PoolError::PoolNotFound(pool.to_owned()));
            }
            generation = this_generation;
            if config.is_none() {
                let raw = reply.rest.first().and_then(text).unwrap_or("");
                config = Some(
                    config_of(raw, &self.settings.defaults)
                        .map_err(|what| PoolError::Damaged(format!("the config of pool {pool:?} in Redis: {what}")))?,
                );
            }
            now.get_or_insert(reply.now);
            sessions.extend(self.page_of(pool, reply.rest.get(1))?);
            after = reply.rest.get(3).and_then(text).unwrap_or("").to_owned();
            if after.is_empty() {
                break;
            }
        }
        let (Some(config), Some(now)) = (config, now) else {
            return Err(PoolError::PoolNotFound(pool.to_owned()));
        };
        Ok(render(&config, &mut sessions.iter(), now))
    }

    /// Imports `sessions` into `pool`, all or nothing; a missing pool is created with `config`.
    /// Answers what was imported and skipped (the pool held the id), and whether the pool was
    /// created.
    ///
    /// # Errors
    /// As [`crate::pool::Pool::import`], and [`PoolError::Unavailable`].
    pub async fn import<T: Incoming + Clone>(
        &self,
        pool: &str,
        config: PoolConfig,
        sessions: Vec<T>,
    ) -> Result<(Imported<T>, bool), PoolError> {
        let mut seen = std::collections::HashSet::with_capacity(sessions.len());
        if let Some(twice) = sessions.iter().find(|s| !seen.insert(s.id().to_owned())) {
            return Err(PoolError::SessionExists(twice.id().to_owned()));
        }
        for _ in 0..CAS_ATTEMPTS {
            // The settings a session does not give come from the pool's, so they are read first;
            // the import applies only if the pool's config is still the one read.
            let reply = self.call("config", pool, Vec::new()).await?;
            let (raw, version) =
                (reply.rest.first().and_then(text).unwrap_or(""), reply.rest.get(1).and_then(text).unwrap_or(""));
            let base = if raw.is_empty() {
                std::sync::Arc::clone(&config.session)
            } else {
                config_of(raw, &self.settings.defaults)
                    .map_err(|what| PoolError::Damaged(format!("the config of pool {pool:?} in Redis: {what}")))?
                    .session
            };
            let mut args = vec![version.as_bytes().to_vec(), self.settings.max_pools.to_string().into_bytes()];
            push_fields(&mut args, &config_fields(&config));
            args.push(sessions.len().to_string().into_bytes());
            for incoming in &sessions {
                let settings = std::sync::Arc::new(incoming.settings(&base)?);
                let session = incoming.clone().into_session(settings, reply.now);
                let fields = codec::session_fields(&session, reply.now);
                args.push(session.id.as_bytes().to_vec());
                args.push(fields.len().to_string().into_bytes());
                for (field, value) in fields {
                    args.push(field.into());
                    args.push(value.into_bytes());
                }
            }
            match self.call("import", pool, args).await {
                // The pool was made or reconfigured between the read and the import.
                Err(PoolError::Conflict) => continue,
                Err(e) => return Err(e),
                Ok(done) => {
                    let imported = done.rest.first().and_then(text).and_then(|n| n.parse().ok()).unwrap_or(0);
                    let skipped: std::collections::HashSet<&str> = match done.rest.get(1) {
                        Some(Value::Array(list)) => list.iter().filter_map(text).collect(),
                        _ => std::collections::HashSet::new(),
                    };
                    let skipped = sessions.into_iter().filter(|s| skipped.contains(s.id())).collect();
                    return Ok((Imported { imported, skipped }, matches!(done.rest.get(2), Some(Value::Int(1)))));
                }
            }
        }
        Err(kept_changing("pool", pool, pool))
    }

    /// The counts of every pool and the sessions held, for `/metrics`.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    pub async fn gauges(&self) -> Result<(Vec<(String, PoolCounts)>, usize), PoolError> {
        let (pools, held) = self.pools().await?;
        Ok((pools.into_iter().map(|p| (p.name, p.counts)).collect(), held))
    }

    /// The sweep: applies the clock to the pools with a timer due (`pool.lua` keeps them in a
    /// sorted set, so an idle store costs it the same however many pools it holds), purges what is
    /// due and drops deleted pools' keys, a bounded amount per call, calling again at once while
    /// work is left (at most a hundred calls a sweep).
    pub async fn tick(&self) {
        if !self.is_ready() {
            self.relink_now_and_then().await;
        }
        for _ in 0..100 {
            // The sweep also brings `default` back to a Redis that lost it.
            match self.call("tick", "", self.default_fields.clone()).await {
                Ok(reply) if matches!(reply.rest.first(), Some(Value::Int(1))) => continue,
                Ok(_) | Err(PoolError::Unavailable(_)) => return,
                // The sweep's script refuses nothing it is given, so a refusal may be the client
                // handing back a failure to connect it keeps (a database Redis refused to select):
                // a new client, once a second, gets past that.
                Err(_) => return self.relink_now_and_then().await,
            }
        }
    }
}

/// Counts a script's events in the metrics: `kind\tpool`, count, ...
fn count(events: &[Value]) {
    for pair in events.chunks(2) {
        let [key, Value::Int(n)] = pair else { continue };
        let Some((kind, pool)) = text(key).and_then(|k| k.split_once('\t')) else { continue };
        let (n, pool) = (*n as u64, pool.to_owned());
        match kind {
            "c" => metrics::counter!(names::SESSIONS_CREATED, "pool" => pool).increment(n),
            "a" => metrics::counter!(names::ACQUIRES, "pool" => pool, "result" => "ok").increment(n),
            "x" => metrics::counter!(names::ACQUIRES, "pool" => pool, "result" => "exhausted").increment(n),
            "g" => metrics::counter!(names::MARKS, "pool" => pool, "outcome" => "good").increment(n),
            "b" => metrics::counter!(names::MARKS, "pool" => pool, "outcome" => "bad").increment(n),
            _ => {
                if let Some(reason) = kind.strip_prefix("r:").and_then(RetiredReason::parse) {
                    metrics::counter!(names::RETIREMENTS, "pool" => pool, "reason" => reason.as_str()).increment(n);
                }
            }
        }
    }
}

/// How often a read-then-compare-and-set call tries before it gives up.
const CAS_ATTEMPTS: usize = 100;

/// The error of a compare-and-set that lost every attempt: the record changed between each read
/// and its write, so the caller may try again later (503 with `Retry-After`).
fn kept_changing(what: &str, name: &str, pool: &str) -> PoolError {
    tracing::warn!(pool, what, name, attempts = CAS_ATTEMPTS, "a compare-and-set lost every attempt");
    PoolError::Unavailable(format!(
        "the {what} {name:?} of pool {pool:?} changed between each of {CAS_ATTEMPTS} reads and writes"
    ))
}

/// Whether a script answered that the call's pool does not exist.
fn is_pool_not_found(answer: &redis::RedisResult<Value>) -> bool {
    let Ok(Value::Array(items)) = answer else { return false };
    items.first().and_then(text) == Some("err") && items.get(1).and_then(text) == Some("POOL_NOT_FOUND")
}

/// A lease id as the script compares it: the simple form of a UUID, or `""` when it is none.
fn normal_lease_id(raw: &str) -> String {
    Uuid::try_parse(raw).map(|id| id.simple().to_string()).unwrap_or_default()
}

fn push_fields(args: &mut Vec<Vec<u8>>, fields: &[(&str, String)]) {
    args.push(fields.len().to_string().into_bytes());
    for (field, value) in fields {
        args.push(field.as_bytes().to_vec());
        args.push(value.as_bytes().to_vec());
    }
}

fn push_jar(args: &mut Vec<Vec<u8>>, jar: &[JarOp]) {
    args.push(jar.len().to_string().into_bytes());
    for op in jar {
        match op {
            JarOp::Put(cookie) => {
                args.push(b"put".to_vec());
                args.push(cookie_key(cookie).into_bytes());
                args.push(cookie_json(cookie).into_bytes());
            }
            JarOp::Delete { name, domain, path } => {
                args.push(b"del".to_vec());
                args.push(cookie_key_of(name, domain, path).into_bytes());
            }
        }
    }
}
