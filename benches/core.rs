//! Criterion benches of the core: what one acquire + mark_good costs from 1k to 1M sessions (the
//! operations are the same at every size, nothing scans the pool; what differs is how much of the
//! pool the caches hold), and how long filling a 100k pool takes.
//!
//! `cargo bench --bench core` (add `-- --quick` for a fast look).

/// The allocator the service runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use session_pool::pool::{Pool, PoolConfig, SessionBudget};
use session_pool::session::SessionSettings;

/// Pool sizes from "fits in L1/L2" to "far larger than the last-level cache", so the curve shows
/// where memory latency, not the algorithm, sets the cost.
const SIZES: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];

fn pool_of(size: u32) -> Pool {
    // Sessions that never wear out, so every iteration measures the same two operations.
    let session = SessionSettings { max_usage_count: u32::MAX, max_error_score: 1e12, ..SessionSettings::default() };
    let config = PoolConfig { max_pool_size: size, session: Arc::new(session), ..PoolConfig::default() };
    Pool::new("bench", config, TimeDelta::seconds(600), Arc::new(SessionBudget::new(usize::MAX)), Utc::now())
}

fn acquire_and_mark_good(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_mark_good");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut pool = pool_of(size);
        let now = Utc::now();
        pool.acquire(None, now).expect("fills the pool");
        // The service copies the id into its answer and the scraper sends it back; the loop copies it
        // into a reused buffer (holding the session itself would skip the id map and the copy).
        let mut id = String::with_capacity(64);
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                id.clear();
                id.push_str(&pool.acquire(None, now).expect("a session").id);
                black_box(pool.mark_good(&id, None, now).expect("marked").usage_count)
            })
        });
    }
    group.finish();
}

fn leased_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_leased_mark_good_with_lease");
    group.throughput(Throughput::Elements(1));
    for size in [1_000u32, 1_000_000] {
        let mut pool = pool_of(size);
        let now = Utc::now();
        pool.acquire(None, now).expect("fills the pool");
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                let session = pool.acquire(Some(TimeDelta::seconds(30)), now).expect("a session");
                let id = session.id.clone();
                let lease = session.lease.expect("leased").id.simple().to_string();
                black_box(pool.mark_good(&id, Some(&lease), now).expect("marked").usage_count)
            })
        });
    }
    group.finish();
}

fn fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("fill");
    group.sample_size(10);
    group.bench_function("100k", |b| {
        b.iter_batched(
            || pool_of(100_000),
            |mut pool| {
                pool.acquire(None, Utc::now()).expect("fills the pool");
                pool
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, acquire_and_mark_good, leased_cycle, fill);
criterion_main!(benches);
