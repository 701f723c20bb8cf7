//! Pools of sessions and the registry of named pools: the data structures that make every call cost
//! O(1) or O(log n) in the pool's size.
//!
//! - `slots`: the slab of sessions, the id map, the free vector (a uniform pick among free
//!   sessions is one random index) and the counts, all kept in step by one function;
//! - `timers`: what the clock does without a call (lease ends, expiries, purges), in min-heaps
//!   keyed by time; every operation first applies the clock, so a read never shows a state the clock
//!   has already left behind, and no call scans the pool;
//! - `changes`: what changed since the last persist cycle, so writing costs O(changes);
//! - `budget`: `--max-sessions`, shared by every pool, and when some pool may give places back;
//! - `registry`: the named pools, each behind its own lock, and the calls that span pools;
//! - `operations`: the pool itself and its operations; `import`: an import, all or nothing;
//! - `config`: a pool's configuration and proxies; `metrics`: its metric handles; `error`: what
//!   can go wrong.

mod budget;
mod changes;
mod config;
mod error;
mod import;
mod metrics;
mod operations;
mod registry;
mod slots;
mod timers;

#[cfg(test)]
mod tests;

pub use budget::SessionBudget;
pub use changes::ChangeSet;
pub use config::{
    validate_proxy_url, PoolConfig, PoolConfigPatch, DEFAULT_MAX_POOL_SIZE, DEFAULT_POOL, MAX_POOL_SIZE_LIMIT,
    SESSION_ID_PLACEHOLDER,
};
pub use error::PoolError;
pub use import::{Imported, Incoming};
pub use operations::{NewSession, Pool, PoolCounts, PoolKey, StateFilter};
pub use registry::{PoolGuard, Registry, RegistryLimits};
