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
//! - [`api`]: the axum router, one module per resource, the strict JSON extractors.
//! - [`error`]: `ApiError`, the only place that knows HTTP status codes (problem+json).
//! - [`config`]: the flags and `SESSION_POOL_*` environment variables.
//!
//! The library never picks an address: [`run`] serves on the listener it is given.

pub mod api;
pub mod config;
pub mod error;
pub mod pool;
pub mod session;

use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::{app, AppState};
pub use config::Config;

/// How long in-flight requests may take to finish once shutdown has begun.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the background sweep applies the clock to every pool (lease ends, expiry, purges).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (at most [`DRAIN_TIMEOUT`]) and returns.
///
/// # Errors
/// An invalid `config`, or a failure of the listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    api::service::metrics_handle();
    let state = AppState::new(config);
    let _sweeper = Background::spawn(sweep(state.clone()));

    let (draining_tx, mut draining_rx) = watch::channel(false);
    let lifecycle = state.lifecycle.clone();
    let signal = async move {
        shutdown.await;
        lifecycle.begin_shutdown();
        tracing::info!("shutdown requested: draining in-flight requests");
        let _ = draining_tx.send(true);
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal).into_future();
    let drain_deadline = async move {
        if draining_rx.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = server => served?,
        () = drain_deadline => tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies the clock to every pool on a timer, so leases end, sessions expire and retired ones are
/// purged (freeing memory) even in pools nobody calls.
async fn sweep(state: AppState) {
    let mut timer = tokio::time::interval(SWEEP_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let now = api::now();
        for pool in state.registry.pools() {
            pool.lock().await.tick(now);
        }
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
