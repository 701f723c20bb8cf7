//! A pool's configuration, its checks, the one input shape of it ([`PoolConfigPatch`]), and how new
//! sessions get their sticky proxy.

use std::sync::Arc;

use serde::Deserialize;

use crate::json::strict::{Fields, Obj};
use crate::session::settings::SettingsPatch;
use crate::session::{self, SessionSettings};

/// The largest `max_pool_size` a pool may have.
pub const MAX_POOL_SIZE_LIMIT: u32 = 1_000_000;
/// Crawlee's default pool size.
pub const DEFAULT_MAX_POOL_SIZE: u32 = 1000;
/// The pool that always exists.
pub const DEFAULT_POOL: &str = "default";
/// The placeholder a proxy URL template substitutes with the session id.
pub const SESSION_ID_PLACEHOLDER: &str = "{session_id}";

/// What a pool is configured with; sessions it creates take their settings from here.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// How many usable sessions acquire fills the pool to; 0 makes a consume-only pool.
    pub max_pool_size: u32,
    /// Settings of the sessions the pool creates.
    pub session: Arc<SessionSettings>,
    /// Proxy URLs handed to new sessions round-robin.
    pub proxy_urls: Vec<String>,
    /// A proxy URL with `{session_id}` in it; wins over `proxy_urls`.
    pub proxy_url_template: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_pool_size: DEFAULT_MAX_POOL_SIZE,
            session: Arc::new(SessionSettings::default()),
            proxy_urls: Vec::new(),
            proxy_url_template: None,
        }
    }
}

impl PoolConfig {
    /// Checks the pool size, the session settings and every proxy URL.
    ///
    /// # Errors
    /// [`session::Error::InvalidSetting`] naming the field.
    pub fn validate(&self) -> Result<(), session::Error> {
        if self.max_pool_size > MAX_POOL_SIZE_LIMIT {
            return Err(session::Error::InvalidSetting {
                field: "max_pool_size",
                reason: format!("must be in 0..={MAX_POOL_SIZE_LIMIT}"),
            });
        }
        self.session.validate()?;
        for url in &self.proxy_urls {
            validate_proxy_url(url).map_err(|reason| session::Error::InvalidSetting { field: "proxy_urls", reason })?;
        }
        if let Some(template) = &self.proxy_url_template {
            if !template.contains(SESSION_ID_PLACEHOLDER) {
                return Err(session::Error::InvalidSetting {
                    field: "proxy_url_template",
                    reason: format!("must contain {SESSION_ID_PLACEHOLDER}"),
                });
            }
            let sample = template.replace(SESSION_ID_PLACEHOLDER, "0123456789abcdef0123456789abcdef");
            validate_proxy_url(&sample)
                .map_err(|reason| session::Error::InvalidSetting { field: "proxy_url_template", reason })?;
        }
        Ok(())
    }

    /// The proxy of a new session `id`: the template filled in, or the next of `proxy_urls` after
    /// `cursor` (which moves on), or none.
    pub(super) fn proxy_for(&self, id: &str, cursor: &mut usize) -> Option<Box<str>> {
        if let Some(template) = &self.proxy_url_template {
            return Some(template.replace(SESSION_ID_PLACEHOLDER, id).into_boxed_str());
        }
        if self.proxy_urls.is_empty() {
            return None;
        }
        let url = &self.proxy_urls[*cursor % self.proxy_urls.len()];
        *cursor = cursor.wrapping_add(1);
        Some(url.clone().into_boxed_str())
    }
}

/// A pool's configuration as an input gives it: `PUT /v1/pools/{pool}` (unknown fields refused) and
/// an import's `config` (which reads only [`Fields::FIELDS`] of its object, and of its `session`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfigPatch {
    /// `max_pool_size`, when given.
    #[serde(default, deserialize_with = "crate::json::int::opt")]
    pub max_pool_size: Option<u32>,
    /// `session`, when given: the settings it gives.
    pub session: Option<Obj<SettingsPatch>>,
    /// `proxy_urls`, when given.
    pub proxy_urls: Option<Vec<String>>,
    /// `proxy_url_template`, when given.
    pub proxy_url_template: Option<String>,
}

impl Fields for PoolConfigPatch {
    const FIELDS: &'static [&'static str] = &["max_pool_size", "session", "proxy_urls", "proxy_url_template"];
}

impl PoolConfigPatch {
    /// The configuration it gives, validated. It replaces: a missing field takes `defaults`' value
    /// (the server's), not a pool's previous one.
    ///
    /// # Errors
    /// [`session::Error::InvalidSetting`] naming the first field out of range.
    pub fn resolve(self, defaults: &PoolConfig) -> Result<PoolConfig, session::Error> {
        let settings = self.session.map(|Obj(s)| s).unwrap_or_default();
        let config = PoolConfig {
            max_pool_size: self.max_pool_size.unwrap_or(defaults.max_pool_size),
            session: Arc::new(settings.resolve(&defaults.session)?),
            proxy_urls: self.proxy_urls.unwrap_or_default(),
            proxy_url_template: self.proxy_url_template,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Accepts absolute http, https, socks5 and socks5h URLs with a host. The error never repeats the
/// URL, which may carry credentials.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn validate_proxy_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
        return Err(format!("scheme {:?} is not one of http, https, socks5, socks5h", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_field_list_is_the_structs() {
        assert_eq!(crate::json::strict::serde_fields::<PoolConfigPatch>(), PoolConfigPatch::FIELDS);
    }
}
