//! The server's settings: one `Config`, parsed by clap from flags and `SESSION_POOL_*` environment
//! variables (flags win). Fields are plain and public so tests build a `Config` directly.
//!
//! Every range is checked by the flag's value parser, so a bad value is refused naming where it came
//! from: the flag, or the variable ([`FromEnv`]); [`Config::validate`] repeats the checks for a
//! `Config` built in code.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;

use crate::pool::{PoolConfig, DEFAULT_MAX_POOL_SIZE, MAX_POOL_SIZE_LIMIT};
use crate::session::settings::{
    DEFAULT_ERROR_SCORE_DECREMENT, DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_ERROR_SCORE, DEFAULT_MAX_USAGE_COUNT,
    MAX_AGE_LIMIT_SECS,
};
use crate::session::SessionSettings;

/// Default address to listen on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The longest interval or timeout accepted, in seconds (about 31 years): a `Duration` and the
/// clock stay in range.
pub const MAX_SECS: f64 = 1e9;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the state lives (`--store`). An enum, so a store is one more variant with its parsed
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Store {
    /// In this process, persisted in `--data-dir`.
    #[default]
    Memory,
    /// A Redis or Valkey server, shared by every server on it.
    Redis(RedisUrl),
}

/// A `redis://` or `rediss://` URL: a host, an optional port and an optional database number
/// (`/DB`); credentials may sit in the user info. Displayed with the password hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: url::Url,
    /// The database number (`/DB`), 0 when the URL has none.
    pub db: u32,
}

impl RedisUrl {
    /// The URL as given, credentials included.
    pub fn as_url(&self) -> &url::Url {
        &self.url
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl std::str::FromStr for Store {
    type Err = String;

    /// Parses a `--store` value: `memory`, or a `redis://` / `rediss://` URL.
    fn from_str(raw: &str) -> Result<Self, String> {
        store(raw)
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Memory => f.write_str("memory"),
            Store::Redis(url) => url.fmt(f),
        }
    }
}

/// A list of HTTP status codes given as one flag value (a newtype, so clap parses the whole list at
/// once and `none` can say "no codes", which a delimited list of numbers cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCodes(pub Vec<u16>);

/// Every setting of the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (host:port).
    #[arg(long, env = "SESSION_POOL_LISTEN", default_value = DEFAULT_LISTEN, value_parser = FromEnv(parsed::<SocketAddr>))]
    pub listen: SocketAddr,

    /// Directory where the state is persisted.
    #[arg(long, env = "SESSION_POOL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Seconds between two snapshots of the state (fractions allowed).
    #[arg(long, env = "SESSION_POOL_PERSIST_INTERVAL_SECS", default_value_t = 5.0, value_parser = FromEnv(positive_secs))]
    pub persist_interval_secs: f64,

    /// Megabytes of page cache for the state file (SQLite's cache; memory the state costs on top of
    /// the sessions themselves).
    #[arg(long, env = "SESSION_POOL_STORE_CACHE_MB", default_value_t = 16, value_parser = FromEnv(clap::value_parser!(u32)))]
    pub store_cache_mb: u32,

    /// Seconds a retired session stays readable before it is purged (fractions allowed).
    #[arg(long, env = "SESSION_POOL_RETIRED_RETENTION_SECS", default_value_t = 600.0,
          value_parser = FromEnv(non_negative_secs))]
    pub retired_retention_secs: f64,

    /// API key clients must send as `Authorization: Bearer KEY` (repeatable; comma-separated in the
    /// environment). None means no authentication.
    #[arg(long = "api-key", env = "SESSION_POOL_API_KEY", value_delimiter = ',', hide_env_values = true,
          value_parser = FromEnv(api_key))]
    pub api_key: Vec<String>,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SESSION_POOL_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = FromEnv(parsed::<usize>))]
    pub max_body_bytes: usize,

    /// Most pools the server holds, `default` included.
    #[arg(long, env = "SESSION_POOL_MAX_POOLS", default_value_t = 1000, value_parser = FromEnv(at_least_one))]
    pub max_pools: usize,

    /// Most sessions the server holds, all pools and retired sessions included.
    #[arg(long, env = "SESSION_POOL_MAX_SESSIONS", default_value_t = 2_000_000,
          value_parser = FromEnv(parsed::<usize>))]
    pub max_sessions: usize,

    /// Where the state lives: `memory` (in this process, persisted in --data-dir) or
    /// `redis://HOST:PORT/DB` (also `rediss://`, credentials in the URL): Redis or Valkey, shared by
    /// every server on it; --data-dir is then unused. On Redis Cluster, any node, database 0.
    #[arg(long, env = "SESSION_POOL_STORE", default_value = "memory", value_parser = FromEnv(store), hide_env_values = true)]
    pub store: Store,

    /// The prefix of every key the Redis store writes, so several independent services can share
    /// one Redis database. It is also the keys' hash tag: on Redis Cluster all of them sit in one
    /// slot, which the server follows to whichever primary serves it. Letters, digits, `_`, `-`,
    /// `.` and `:`, 1 to 64 of them.
    #[arg(long, env = "SESSION_POOL_REDIS_KEY_PREFIX", default_value = "session-pool",
          value_parser = FromEnv(key_prefix))]
    pub redis_key_prefix: String,

    /// Seconds a client may take to send a request's head, counted from when it connects or its last
    /// answer was written (fractions allowed); a connection that stays silent longer is closed.
    #[arg(long, env = "SESSION_POOL_HEADER_TIMEOUT_SECS", default_value_t = 10.0, value_parser = FromEnv(positive_secs))]
    pub header_timeout_secs: f64,

    /// Most connections open at once; past it a new connection is closed as soon as it is accepted.
    /// Default: the open-files limit less what the server itself needs.
    #[arg(long, env = "SESSION_POOL_MAX_CONNECTIONS", value_parser = FromEnv(clap::value_parser!(u64).range(1..)))]
    pub max_connections: Option<u64>,

    /// Log format.
    #[arg(long, env = "SESSION_POOL_LOG_FORMAT", default_value = "text",
          value_parser = FromEnv(EnumValueParser::<LogFormat>::new()))]
    pub log_format: LogFormat,

    /// Default pool size: how many usable sessions acquire fills a pool to (0..=1000000).
    #[arg(long, env = "SESSION_POOL_MAX_POOL_SIZE", default_value_t = DEFAULT_MAX_POOL_SIZE,
          value_parser = FromEnv(clap::value_parser!(u32).range(0..=i64::from(MAX_POOL_SIZE_LIMIT))))]
    pub max_pool_size: u32,

    /// Default session lifetime in seconds (fractions allowed).
    #[arg(long, env = "SESSION_POOL_MAX_AGE_SECS", default_value_t = DEFAULT_MAX_AGE_SECS, value_parser = FromEnv(max_age))]
    pub max_age_secs: f64,

    /// Default number of uses before a session retires.
    #[arg(long, env = "SESSION_POOL_MAX_USAGE_COUNT", default_value_t = DEFAULT_MAX_USAGE_COUNT,
          value_parser = FromEnv(clap::value_parser!(u32).range(1..)))]
    pub max_usage_count: u32,

    /// Default error score at which a session is blocked.
    #[arg(long, env = "SESSION_POOL_MAX_ERROR_SCORE", default_value_t = DEFAULT_MAX_ERROR_SCORE, value_parser = FromEnv(positive_number))]
    pub max_error_score: f64,

    /// Default amount a good use takes off the error score.
    #[arg(long, env = "SESSION_POOL_ERROR_SCORE_DECREMENT", default_value_t = DEFAULT_ERROR_SCORE_DECREMENT,
          value_parser = FromEnv(non_negative_number))]
    pub error_score_decrement: f64,

    /// Default status codes that retire a session at once (comma-separated; `none` for none).
    #[arg(long, env = "SESSION_POOL_BLOCKED_STATUS_CODES", default_value = "401,403,429",
          value_parser = FromEnv(status_code_list))]
    pub blocked_status_codes: StatusCodes,
}

impl Default for Config {
    fn default() -> Self {
        let session = SessionSettings::default();
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: PathBuf::from("./data"),
            persist_interval_secs: 5.0,
            store_cache_mb: 16,
            retired_retention_secs: 600.0,
            api_key: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_pools: 1000,
            max_sessions: 2_000_000,
            store: Store::Memory,
            redis_key_prefix: "session-pool".into(),
            header_timeout_secs: 10.0,
            max_connections: None,
            log_format: LogFormat::Text,
            max_pool_size: DEFAULT_MAX_POOL_SIZE,
            max_age_secs: session.max_age_secs,
            max_usage_count: session.max_usage_count,
            max_error_score: session.max_error_score,
            error_score_decrement: session.error_score_decrement,
            blocked_status_codes: StatusCodes(session.blocked_status_codes.to_vec()),
        }
    }
}

impl Config {
    /// The default configuration of pools, from the `--max-pool-size` and session flags.
    pub fn pool_defaults(&self) -> PoolConfig {
        PoolConfig {
            max_pool_size: self.max_pool_size,
            session: Arc::new(SessionSettings {
                max_age_secs: self.max_age_secs,
                max_usage_count: self.max_usage_count,
                max_error_score: self.max_error_score,
                error_score_decrement: self.error_score_decrement,
                blocked_status_codes: Arc::from(self.blocked_status_codes.0.as_slice()),
            }),
            proxy_urls: Vec::new(),
            proxy_url_template: None,
        }
    }

    /// What the Redis store needs of these settings, with calls waiting `response_timeout` for Redis
    /// (the server and a migration wait differently long).
    pub fn redis_settings(&self, response_timeout: Duration) -> crate::store::redis::Settings {
        crate::store::redis::Settings {
            prefix: self.redis_key_prefix.clone(),
            max_pools: self.max_pools,
            max_sessions: self.max_sessions,
            retention: crate::session::secs_to_delta(self.retired_retention_secs),
            defaults: self.pool_defaults(),
            response_timeout,
        }
    }

    /// Checks the ranges for a `Config` built in code, which skips clap's parsers (they refuse the
    /// same values, naming the flag or the variable they came from).
    ///
    /// # Errors
    /// A message naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.pool_defaults().validate().map_err(|e| anyhow::anyhow!("invalid default pool setting: {e}"))?;
        anyhow::ensure!(
            self.persist_interval_secs > 0.0 && self.persist_interval_secs <= MAX_SECS,
            "--persist-interval-secs must be > 0 and at most {MAX_SECS}"
        );
        anyhow::ensure!(
            (0.0..=MAX_SECS).contains(&self.retired_retention_secs),
            "--retired-retention-secs must be in 0..={MAX_SECS}"
        );
        anyhow::ensure!(
            self.header_timeout_secs > 0.0 && self.header_timeout_secs <= MAX_SECS,
            "--header-timeout-secs must be > 0 and at most {MAX_SECS}"
        );
        key_prefix(&self.redis_key_prefix).map_err(|e| anyhow::anyhow!("--redis-key-prefix: {e}"))?;
        anyhow::ensure!(self.max_connections != Some(0), "--max-connections must be at least 1");
        anyhow::ensure!(self.max_pools >= 1, "--max-pools must be at least 1 (the default pool counts)");
        anyhow::ensure!(self.api_key.iter().all(|k| !k.is_empty()), "--api-key must not be empty");
        Ok(())
    }
}

/// A Redis key prefix: 1 to 64 of letters, digits, `_`, `-`, `.` and `:` (no braces, which would
/// break the hash tag).
fn key_prefix(raw: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err("expected 1 to 64 of letters, digits, _, -, . and :".into())
    }
}

/// `memory`, or a `redis://` / `rediss://` URL with a host, an optional port and an optional
/// database number.
fn store(raw: &str) -> Result<Store, String> {
    let raw = raw.trim();
    if raw == "memory" {
        return Ok(Store::Memory);
    }
    let scheme = raw.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
        return Err("expected `memory` or a redis://HOST:PORT/DB (or rediss://) URL".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a Redis URL ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a Redis URL needs a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a Redis URL takes no query or fragment".into());
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db.parse().map_err(|_| format!("the database {db:?} is not a number (redis://HOST:PORT/DB)"))?,
    };
    Ok(Store::Redis(RedisUrl { url, db }))
}

/// `401,403,429` (spaces allowed), or `none` / an empty value for no codes; each in 100..=599.
fn status_code_list(raw: &str) -> Result<StatusCodes, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
        return Ok(StatusCodes(Vec::new()));
    }
    raw.split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<u16>()
                .ok()
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| format!("{part:?} is not a status code in 100..=599"))
        })
        .collect::<Result<_, _>>()
        .map(StatusCodes)
}

/// A flag's value parser that, when the value came from the flag's environment variable, makes the
/// error name the variable: clap's message names only the flag, which the user may never have typed.
#[derive(Debug, Clone)]
pub struct FromEnv<P>(pub P);

impl<P: TypedValueParser> TypedValueParser for FromEnv<P> {
    type Value = P::Value;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<P::Value, clap::Error> {
        self.0.parse_ref(cmd, arg, value)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<P::Value, clap::Error> {
        self.0.parse_ref_(cmd, arg, value, source).map_err(|mut error| {
            if let (ValueSource::EnvVariable, Some(arg)) = (source, arg) {
                if let (Some(variable), Some(flag)) = (arg.get_env(), arg.get_long()) {
                    let named = format!("{} (--{flag})", variable.to_string_lossy());
                    error.insert(ContextKind::InvalidArg, ContextValue::String(named));
                }
            }
            error
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// Any type read by its `FromStr`.
fn parsed<T: std::str::FromStr>(raw: &str) -> Result<T, T::Err> {
    raw.parse()
}

/// An API key: any text but the empty one (`a,,b` in the environment is a mistake, not a key).
fn api_key(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        Err("an API key must not be empty".into())
    } else {
        Ok(raw.to_owned())
    }
}

/// A count of at least 1.
fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_number(raw: &str) -> Result<f64, String> {
    let value: f64 = raw.trim().parse().map_err(|_| format!("{raw:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{raw:?} is not a finite number"))
    }
}

fn positive_number(raw: &str) -> Result<f64, String> {
    parse_number(raw).and_then(|v| if v > 0.0 { Ok(v) } else { Err(format!("{raw} must be > 0")) })
}

fn non_negative_number(raw: &str) -> Result<f64, String> {
    parse_number(raw).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("{raw} must be >= 0")) })
}

fn at_most(raw: &str, value: f64, limit: f64) -> Result<f64, String> {
    if value <= limit {
        Ok(value)
    } else {
        Err(format!("{raw} must be at most {limit}"))
    }
}

fn positive_secs(raw: &str) -> Result<f64, String> {
    positive_number(raw).and_then(|v| at_most(raw, v, MAX_SECS))
}

fn non_negative_secs(raw: &str) -> Result<f64, String> {
    non_negative_number(raw).and_then(|v| at_most(raw, v, MAX_SECS))
}

fn max_age(raw: &str) -> Result<f64, String> {
    positive_number(raw).and_then(|v| at_most(raw, v, MAX_AGE_LIMIT_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn flag_defaults_equal_config_default() {
        let parsed = Cli::try_parse_from(["session-pool"]).unwrap().config;
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.pool_defaults(), default.pool_defaults());
        assert_eq!(parsed.retired_retention_secs, default.retired_retention_secs);
        assert_eq!(parsed.max_sessions, default.max_sessions);
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.header_timeout_secs, default.header_timeout_secs);
        assert_eq!(parsed.max_connections, default.max_connections);
        assert_eq!(parsed.log_format, default.log_format);
        default.validate().unwrap();
    }

    #[test]
    fn fractions_and_lists_parse() {
        let config = Cli::try_parse_from([
            "session-pool",
            "--max-age-secs",
            "0.2",
            "--blocked-status-codes",
            "403,503",
            "--api-key",
            "a",
            "--api-key",
            "b",
        ])
        .unwrap()
        .config;
        assert_eq!(config.max_age_secs, 0.2);
        assert_eq!(config.blocked_status_codes, StatusCodes(vec![403, 503]));
        assert_eq!(config.api_key, vec!["a", "b"]);
    }

    #[test]
    fn blocked_status_codes_can_be_none() {
        let parse =
            |value: &str| Cli::try_parse_from(["session-pool", "--blocked-status-codes", value]).map(|cli| cli.config);
        for none in ["none", "NONE", "", " "] {
            let config = parse(none).unwrap();
            assert_eq!(config.blocked_status_codes, StatusCodes(vec![]), "{none:?}");
            assert!(config.pool_defaults().session.blocked_status_codes.is_empty());
        }
        assert_eq!(parse(" 401 , 429").unwrap().blocked_status_codes, StatusCodes(vec![401, 429]));
        for bad in ["401,,429", "401,none", "600", "abc", "401;403"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_store_is_memory_by_default_and_a_redis_url_parses_with_its_password_hidden() {
        let parse = |value: &str| Cli::try_parse_from(["session-pool", "--store", value]).map(|cli| cli.config);
        assert_eq!(Cli::try_parse_from(["session-pool"]).unwrap().config.store, Store::Memory);
        assert_eq!(parse("memory").unwrap().store, Store::Memory);
        for (raw, db, tls) in [
            ("redis://localhost", 0, false),
            ("redis://cache.internal:6380/3", 3, false),
            ("rediss://user:secret@cache.example:6379/0", 0, true),
            ("REDIS://[::1]:6379/", 0, false),
        ] {
            let config = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let Store::Redis(url) = &config.store else { panic!("{raw} is not a Redis store") };
            assert_eq!((url.db, url.tls()), (db, tls), "{raw}");
            config.validate().unwrap_or_else(|e| panic!("{raw}: {e}"));
            let shown = url.to_string();
            assert!(!shown.contains("secret"), "the password must not be shown: {shown}");
        }
        for bad in ["", "Memory", "disk", "redis:/x", "redis://", "redis://host/x", "redis://host/0?x=1", "http://host"]
        {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        for args in [
            ["session-pool", "--max-age-secs", "0"],
            ["session-pool", "--max-usage-count", "0"],
            ["session-pool", "--blocked-status-codes", "42"],
            ["session-pool", "--max-pool-size", "1000001"],
            ["session-pool", "--max-error-score", "nan"],
            ["session-pool", "--header-timeout-secs", "0"],
            ["session-pool", "--max-connections", "0"],
            // What validate refuses, the parsers refuse too (so the message can name the variable).
            ["session-pool", "--max-age-secs", "4e8"],
            ["session-pool", "--retired-retention-secs", "2e9"],
            ["session-pool", "--header-timeout-secs", "2e9"],
            ["session-pool", "--persist-interval-secs", "1e300"],
            ["session-pool", "--max-pools", "0"],
            ["session-pool", "--api-key", ""],
            ["session-pool", "--log-format", "xml"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
        let huge = Config { persist_interval_secs: 1e300, ..Config::default() };
        assert!(huge.validate().unwrap_err().to_string().starts_with("--persist-interval-secs"));
    }

    #[test]
    fn an_invalid_value_from_the_environment_names_the_variable() {
        // Each argument in turn reads PATH, which every test process has and no numeric, address,
        // store or enum setting accepts; tests must not set variables of their own.
        let base = Cli::command();
        let mut accepted = Vec::new();
        for arg in base.get_arguments().filter(|arg| arg.get_env().is_some()) {
            let (id, flag) = (arg.get_id().clone(), arg.get_long().unwrap_or_default().to_owned());
            let command = base.clone().mut_arg(&id, |arg| arg.env("PATH"));
            match command.clone().try_get_matches_from(["session-pool"]) {
                Ok(_) => accepted.push(id.to_string()),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(&format!("for 'PATH (--{flag})'")), "{id}: {message}");
                }
            }
            // From the flag, the message names the flag, as clap writes it.
            if let Err(e) = command.try_get_matches_from(["session-pool".to_owned(), format!("--{flag}=x!")]) {
                let message = e.to_string();
                assert!(message.contains(&format!("'--{flag} <")) && !message.contains("PATH"), "{id}: {message}");
            }
        }
        assert_eq!(accepted, ["data_dir", "api_key"], "only these settings take any text");
    }
}
