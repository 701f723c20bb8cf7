//! Resident memory of bare sessions: fills one pool with N sessions (no cookies, empty user data)
//! and prints the process's RSS before and after.
//!
//! `cargo run --release --example memory -- 1000000`

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use session_pool::pool::{Pool, PoolConfig, SessionBudget};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let before = rss_kib();
    let config = PoolConfig { max_pool_size: n, ..PoolConfig::default() };
    let mut pool =
        Pool::new("memory", config, TimeDelta::seconds(600), Arc::new(SessionBudget::new(usize::MAX)), Utc::now());
    let started = Instant::now();
    pool.acquire(None, Utc::now()).expect("fills the pool");
    let elapsed = started.elapsed();
    let after = rss_kib();
    let per_session = (after - before) as f64 * 1024.0 / f64::from(n);
    println!(
        "{n} sessions: filled in {:.3} s, RSS {:.1} MiB -> {:.1} MiB ({per_session:.0} bytes per session)",
        elapsed.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    assert_eq!(pool.len(), n as usize);
}
