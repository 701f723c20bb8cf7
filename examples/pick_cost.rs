//! What acquire + mark_good costs in a large pool while part of it is leased: the cycle of the core
//! bench, with a share of the sessions held under long leases first. It shows where drawing over
//! the slots (and redrawing leased ones) stops paying against drawing from the free vector.
//!
//! `cargo run --release --example pick_cost -- 1000000 0 10 19 21 40` (sessions, then leased
//! percentages; each is a fresh pool).

/// The allocator the service runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use session_pool::pool::{Pool, PoolConfig, SessionBudget};
use session_pool::session::SessionSettings;

const CYCLES: u32 = 10_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let mut shares: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    if shares.is_empty() {
        shares = vec![0, 10, 19, 21, 40];
    }
    for percent in shares {
        // Sessions that never wear out, so every cycle does the same work.
        let session =
            SessionSettings { max_usage_count: u32::MAX, max_error_score: 1e12, ..SessionSettings::default() };
        let config = PoolConfig { max_pool_size: size, session: Arc::new(session), ..PoolConfig::default() };
        let budget = Arc::new(SessionBudget::new(usize::MAX));
        let now = Utc::now();
        let mut pool = Pool::new("pick_cost", config, TimeDelta::seconds(600), budget, now);
        pool.acquire(None, now).expect("fills the pool");
        let leased = u64::from(size) * u64::from(percent.min(99)) / 100;
        for _ in 0..leased {
            pool.acquire(Some(TimeDelta::days(1)), now).expect("a free session");
        }
        let mut id = String::with_capacity(64);
        let started = Instant::now();
        for _ in 0..CYCLES {
            id.clear();
            id.push_str(&pool.acquire(None, now).expect("a session").id);
            black_box(pool.mark_good(&id, None, now).expect("marked").usage_count);
        }
        let per_cycle = started.elapsed().as_secs_f64() * 1e9 / f64::from(CYCLES);
        println!("{size} sessions, {percent}% leased: {per_cycle:.1} ns per acquire + mark_good");
    }
}
