//! Persistence costs on a large pool: the first full write, one cycle after 1k changes, and a
//! restore of everything.
//!
//! `cargo run --release --example persist_bench -- 1000000 1000`
//! (sessions, then changes per cycle). Targets: a cycle after 1k changes in a 1M-session pool
//! under 50 ms; restoring 1M sessions under 5 s.

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use session_pool::persist::Store;
use session_pool::pool::{PoolConfig, Registry, RegistryLimits, StateFilter};
use session_pool::session::SessionId;

fn registry(size: u32) -> Registry {
    let defaults = PoolConfig { max_pool_size: size, ..PoolConfig::default() };
    let limits = RegistryLimits { max_pools: 10, max_sessions: usize::MAX, retention: TimeDelta::seconds(600) };
    Registry::new(defaults, limits, Utc::now())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let size: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let dir = std::env::temp_dir().join(format!("session-pool-persist-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let mut store = Store::open(&dir, 16)?;
    let live = Arc::new(registry(size));
    let started = Instant::now();
    let ids: Vec<SessionId> = {
        let mut pool = live.lock("default", false, Utc::now()).await?;
        pool.acquire(None, Utc::now())?;
        let mut ids = Vec::with_capacity(size as usize);
        let mut cursor: Option<SessionId> = None;
        loop {
            let (page, next) = pool.list(StateFilter::All, cursor.as_deref(), 1000, Utc::now());
            ids.extend(page.iter().map(|s| s.id.clone()));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ids
    };
    println!("filled {} sessions in {:.2} s", ids.len(), started.elapsed().as_secs_f64());

    // The writer blocks on the disk and on pool locks: it runs on a thread of its own, as in the
    // server.
    let write_all = |mut store: Store, live: Arc<Registry>| {
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let stats = store.write_all(&live);
            (store, stats, started.elapsed())
        })
    };
    let (returned, first, elapsed) = write_all(store, Arc::clone(&live)).await?;
    store = returned;
    let first = first?;
    println!(
        "first write: {} sessions, {:.1} MiB in {:.2} s",
        first.sessions,
        first.bytes as f64 / 1048576.0,
        elapsed.as_secs_f64()
    );

    let mut cycles = Vec::new();
    for round in 0..5 {
        {
            let mut pool = live.lock("default", false, Utc::now()).await?;
            let now = Utc::now();
            for i in 0..changes {
                let id = &ids[(i * 7919 + round * 104_729) % ids.len()];
                pool.mark_good(id, None, now)?;
            }
        }
        let (returned, stats, elapsed) = write_all(store, Arc::clone(&live)).await?;
        store = returned;
        let stats = stats?;
        cycles.push(elapsed.as_secs_f64() * 1000.0);
        println!("cycle {round}: {} sessions written in {:.1} ms", stats.sessions, elapsed.as_secs_f64() * 1000.0);
    }
    cycles.sort_by(f64::total_cmp);
    println!("cycle after {changes} changes in a {size}-session pool: median {:.1} ms", cycles[cycles.len() / 2]);
    drop(store);

    let started = Instant::now();
    let restored = registry(size);
    let mut store = Store::open(&dir, 16)?;
    let stats = tokio::task::spawn_blocking(move || {
        let stats = store.restore(&restored, Utc::now());
        (stats, restored)
    })
    .await?;
    let (stats, restored) = (stats.0?, stats.1);
    println!("restore: {} pools, {} sessions in {:.2} s", stats.pools, stats.sessions, started.elapsed().as_secs_f64());
    assert_eq!(restored.sessions_held(), ids.len());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
