//! session-pool: an HTTP service that keeps the sessions of a web-scraping cluster.
//!
//! A *session* is one simulated user (cookies, sticky proxy, user data) with a health record that
//! decides when the target site has had enough of it. Scrapers in many processes acquire sessions,
//! use them and report back; the service retires burnt sessions and hands out fresh ones, with
//! Crawlee's `Session`/`SessionPool` numbers and formulas.
//!
//! # Layout
//! - [`session`]: the domain core: one session, its settings, its retirement rules, its cookies.
//!   No HTTP, no clock: time comes in as `now`.
//! - [`pool`]: a pool of sessions and the registry of named pools: the structures that keep every
//!   call O(1) or O(log n) in the pool's size.
//! - [`store`]: where the pools live, the one interface the handlers call for every pool operation;
//!   its memory store is the registry of [`pool`].
//! - [`interop`]: conversions between sessions and the documents that move pools in and out, one
//!   file per form (the own export form, Crawlee for Python's and for JavaScript's pool states).
//! - [`json`]: the JSON rules every input shares: strict parsing (duplicate keys, depth, errors that
//!   name the field path) and integers as JSON Schema counts them (`403.0` is `403`). No HTTP.
//! - [`clock`]: the server's clock and the one way an instant is written (RFC 3339).
//! - [`api`]: the axum router, one module per resource, the extractors built on [`json`]; [`api::edge`]
//!   is the middleware every request passes (request id, access log, metrics, keys, readiness).
//! - [`serve`]: the accept loop: the header-read timeout counted from a connection's start, the cap
//!   on open connections, the open-files limit.
//! - [`error`]: `ApiError`, the only place that knows HTTP status codes (problem+json).
//! - [`persist`]: the state on disk (SQLite), written incrementally in bounded chunks by a thread of
//!   its own, restored at start.
//! - [`config`]: the flags and `SESSION_POOL_*` environment variables.
//! - [`migrate`]: `session-pool migrate`, every pool copied from one store to another.
//! - [`logging`]: log lines, text or JSON, written by a background thread.
//! - [`metric_names`]: the name of every metric, for the code that records it and `/metrics`.
//!
//! The library never picks an address: [`run`] serves on the listener it is given.

pub mod api;
pub mod clock;
pub mod config;
pub mod error;
pub mod interop;
pub mod json;
pub mod logging;
pub mod metric_names;
pub mod migrate;
pub mod persist;
pub mod pool;
pub mod serve;
pub mod session;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::{app, AppState};
pub use config::Config;

/// How long in-flight requests may take to finish once shutdown has begun.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the background sweep waits between two sweeps, each of which applies the clock to the
/// pools with a timer due (lease ends, expiries, purges): the memory store looks at every pool, the
/// Redis store keeps the pools due in an index.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the sweep tries a store that is not ready.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` resolves.
///
/// Binds nothing itself. Locks and opens the state in `--data-dir` first (a directory in use or a
/// state it cannot read is an error before anything is served), then serves at once: `/readyz` and
/// `/v1` answer 503 until the state is restored. On `shutdown` it stops accepting, lets in-flight
/// requests finish (at most [`DRAIN_TIMEOUT`]), writes what changed, and returns.
///
/// # Errors
/// An invalid `config`, a data directory in use, an unreadable state, a failure of the listener or
/// of the final write; on the Redis store, a `--store` Redis will never serve.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    api::service::metrics_handle();
    match config.store.clone() {
        config::Store::Memory => run_memory(listener, config, shutdown).await,
        config::Store::Redis(url) => run_redis(listener, config, &url, shutdown).await,
    }
}

/// [`run`] with the memory store, persisted in `--data-dir`.
async fn run_memory(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (data_dir, cache_mb) = (config.data_dir.clone(), config.store_cache_mb);
    let persist_interval = Duration::from_secs_f64(config.persist_interval_secs);
    let mut store = tokio::task::spawn_blocking(move || persist::Store::open(&data_dir, cache_mb))
        .await
        .context("opening the state")??;
    tracing::info!(address = %listener.local_addr()?, file = %store.path().display(), "listening");
    // The memory store: persistence works on its registry directly.
    let registry = Arc::new(api::memory_registry(&config));
    let state = AppState::with_store(config, crate::store::Store::Memory(Arc::clone(&registry)));
    let mut serving = Serving::start(listener, &state, shutdown);

    let restoring = {
        let registry = Arc::clone(&registry);
        tokio::task::spawn_blocking(move || store.restore(&registry, clock::now()).map(|stats| (store, stats)))
    };
    let restored = tokio::select! {
        restored = restoring => restored.context("the restore task failed").and_then(|r| r),
        served = &mut serving.server => {
            served.context("the server task failed")?;
            return Ok(());
        }
    };
    let (store, stats) = match restored {
        Ok(restored) => restored,
        Err(e) => {
            let _ = serving.stop.send(true);
            let _ = serving.server.await;
            return Err(e);
        }
    };
    tracing::info!(pools = stats.pools, sessions = stats.sessions, file = %store.path().display(), "state restored");
    state.lifecycle.set_ready();

    let sweeper = Background::spawn(sweep(state.clone()));
    let (stop_writer, stop_rx) = std::sync::mpsc::channel();
    let writer = {
        std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || persist::write_until_stopped(store, &registry, persist_interval, &stop_rx))
            .context("cannot start the persist thread")?
    };
    serving.finish().await?;
    drop(sweeper);
    let _ = stop_writer.send(());
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("the persist thread failed")?
        .map_err(|_| anyhow::anyhow!("the persist thread panicked"))?;
    let stats = written.context("the final write of the state failed")?;
    tracing::info!(sessions_written = stats.sessions, "state written; stopped");
    Ok(())
}

/// [`run`] with the Redis store: no data directory and no lock, so any number of servers share
/// it. Serves at once; `/readyz` and `/v1` answer 503 until Redis has answered (a Redis that is
/// down at start is waited for), and again while it cannot be reached. A `--store` Redis will
/// never serve (another database than 0 on a Cluster) stops the server with an error.
async fn run_redis(
    listener: TcpListener,
    config: Config,
    url: &config::RedisUrl,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = config.redis_settings(store::redis::RESPONSE_TIMEOUT);
    let redis = store::redis::RedisStore::new(url, settings)?;
    tracing::info!(address = %listener.local_addr()?, store = %url, "listening");
    let state = AppState::with_store(config, store::Store::Redis(Box::new(redis)));
    // A `--store` the store can never use (not one it cannot reach yet) stops the server.
    let (refused_tx, mut refused) = watch::channel(None::<String>);
    let shutdown = {
        let mut refused = refused.clone();
        async move {
            tokio::select! {
                () = shutdown => {},
                // The sender is gone without a refusal when its task panicked: no reason to stop.
                gone = async { refused.wait_for(Option::is_some).await.is_err() } => {
                    if gone {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    };
    let serving = Serving::start(listener, &state, shutdown);
    let connecting = {
        let (state, label) = (state.clone(), url.to_string());
        Background::spawn(async move {
            if let store::Store::Redis(redis) = &state.store {
                if let Err(e) = redis.connect().await {
                    tracing::error!(store = %label, error = %e, "Redis will never serve this --store; stopping");
                    let _ = refused_tx.send(Some(format!("--store {label}: {e:#}")));
                    return;
                }
            }
            state.lifecycle.set_ready();
            sweep(state).await;
        })
    };
    serving.finish().await?;
    drop(connecting);
    if let Some(why) = refused.borrow_and_update().clone() {
        anyhow::bail!(why);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The server task, and what stops it.
struct Serving {
    server: JoinHandle<()>,
    stop: watch::Sender<bool>,
    draining: watch::Receiver<bool>,
}

impl Serving {
    /// Serves the app on `listener` until `shutdown` resolves or [`Serving::stop`] says so; then
    /// `/readyz` and `/v1` answer 503 while in-flight requests drain.
    fn start(listener: TcpListener, state: &AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (stop, mut stop_rx) = watch::channel(false);
        let (draining_tx, draining) = watch::channel(false);
        let lifecycle = state.lifecycle.clone();
        let signal = async move {
            tokio::select! {
                () = shutdown => {},
                _ = stop_rx.wait_for(|stop| *stop) => {},
            }
            lifecycle.begin_shutdown();
            tracing::info!("shutdown requested: draining in-flight requests");
            let _ = draining_tx.send(true);
        };
        let limits = serve::Limits::from_config(&state.config);
        tracing::info!(max_connections = limits.max_connections, "accepting connections");
        let server = tokio::spawn(serve::serve(listener, app(state.clone()), limits, signal));
        Self { server, stop, draining }
    }

    /// Waits until the server stopped: shutdown began and in-flight requests finished, or
    /// [`DRAIN_TIMEOUT`] passed.
    async fn finish(mut self) -> anyhow::Result<()> {
        let mut draining = self.draining.clone();
        let drain_deadline = async move {
            if draining.wait_for(|draining| *draining).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            served = &mut self.server => served.context("the server task failed")?,
            () = drain_deadline => {
                tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
                self.server.abort();
            }
        }
        drop(self.stop);
        Ok(())
    }
}

/// Applies the clock to every pool on a timer, so leases end, sessions expire and retired ones are
/// purged (freeing memory) even in pools nobody calls. It is also what tries a store that is not
/// ready (Redis out of reach): at once when a call finds it so, then every [`PROBE_INTERVAL`]
/// until it answers, so that one failed call does not keep `/v1` refused for a whole interval.
async fn sweep(state: AppState) {
    loop {
        let wait = if state.store.is_ready() { SWEEP_INTERVAL } else { PROBE_INTERVAL };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.store.lost() => {}
        }
        state.store.tick().await;
        // Histogram samples queue up until upkeep folds them in; without a scrape they would grow.
        api::service::metrics_handle().run_upkeep();
    }
}

/// A spawned background task that stops when this guard is dropped.
#[derive(Debug)]
pub struct Background(JoinHandle<()>);

impl Background {
    /// Spawns `task` on the current runtime.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}
