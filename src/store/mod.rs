//! Temporary stand-ins for the store boundary's types (replaced by the boundary branch at merge).

pub mod redis;

use serde_json::{Map, Value};

use crate::pool::PoolConfig;
use crate::pool::PoolCounts;
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, StatusReport, Timestamp};

/// What a mark-like call does.
pub enum Mark<'a> {
    /// mark_good.
    Good,
    /// mark_bad.
    Bad,
    /// retire.
    Retire,
    /// status_code.
    Status(StatusReport<'a>),
    /// Only the jar operations.
    Nothing,
}

/// A change to a cookie jar.
pub enum JarOp {
    /// Upsert by (name, domain, path).
    Put(Cookie),
    /// Remove by (name, domain, path).
    Delete {
        /// Name.
        name: String,
        /// Domain.
        domain: String,
        /// Path.
        path: String,
    },
}

/// A session to create.
pub struct CreateSession {
    /// Id.
    pub id: Option<String>,
    /// Settings.
    pub settings: SettingsPatch,
    /// User data.
    pub user_data: Map<String, Value>,
    /// Cookies.
    pub cookies: Vec<Cookie>,
    /// Proxy.
    pub proxy_url: Option<Option<String>>,
}

/// A pool's status.
pub struct PoolInfo {
    /// Name.
    pub name: String,
    /// Config.
    pub config: PoolConfig,
    /// Counts.
    pub counts: PoolCounts,
    /// Created.
    pub created_at: Timestamp,
}

/// Temporary.
pub fn merge_patch(_: &mut Map<String, Value>, _: Map<String, Value>) {}
