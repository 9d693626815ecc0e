//! The `[redis]` settings: where the shared tier lives (`url`, or `REDIS_URL`), the key prefix
//! of this app, the invalidation bound, the lock expiry of a cross-instance load and the
//! timeout of one Redis command.

use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

use crate::secrets::Secret;

/// The environment variable that enables the shared tier when `[redis]` gives no `url`.
pub const REDIS_URL_VAR: &str = "REDIS_URL";

/// Default bound within which an invalidation reaches every instance (see
/// [`RedisSettings::invalidation_bound`]).
pub const DEFAULT_INVALIDATION_BOUND: Duration = Duration::from_secs(1);
/// Default expiry of the lock a cross-instance load holds (renewed while its body runs).
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);
/// Default timeout of one Redis command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Settings of the shared tier, from `[redis]` in the secrets file (or `REDIS_URL`), or given in
/// code with [`RuntimeBuilder::redis`](crate::RuntimeBuilder::redis).
///
/// ```toml
/// [redis]
/// url = "redis://127.0.0.1:6379"
/// prefix = "sales-dashboard"     # default: the executable's name
/// invalidation_bound = "1s"      # no instance serves an invalidated value longer than this
/// lock_ttl = "10s"               # a dead instance's load is taken over after this
/// command_timeout = "500ms"
/// ```
#[derive(Clone)]
pub struct RedisSettings {
    pub(crate) url: Secret,
    pub(crate) prefix: String,
    pub(crate) invalidation_bound: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) command_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("invalidation_bound", &self.invalidation_bound)
            .field("lock_ttl", &self.lock_ttl)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl RedisSettings {
    /// Settings for the Redis at `url` (`redis://host:port/db`), with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: Secret::new(url),
            prefix: default_prefix(),
            invalidation_bound: DEFAULT_INVALIDATION_BOUND,
            lock_ttl: DEFAULT_LOCK_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The prefix of every key and of the bus channel: one per app, so two apps sharing a Redis
    /// never read each other's values (default: the executable's file name).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// No instance serves a value more than this after it was invalidated anywhere, even one
    /// that lost its connection to Redis and missed the message (default 1 s). Instances
    /// confirm their bus connection four times per bound; one that cannot drops its local
    /// copies of shared values, and keeps them no longer than this while Redis is away.
    pub fn invalidation_bound(mut self, bound: Duration) -> Self {
        self.invalidation_bound = bound.max(Duration::from_millis(20));
        self
    }

    /// Expiry of the lock held by the instance computing a missing value (renewed while its
    /// body runs): when that instance dies, another takes over after at most this long.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// Timeout of one Redis command: past it the call goes on without Redis (default 500 ms).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// From the `[redis]` table of the secrets file and the `REDIS_URL` variable (the table's
    /// `url` wins). `Ok(None)`: nothing configures Redis.
    pub(crate) fn resolve(table: Option<&Table>, env_url: Option<&str>) -> Result<Option<Self>, String> {
        let url = match table.and_then(|t| t.get("url")) {
            Some(Value::String(url)) => Some(url.clone()),
            Some(_) => return Err("`url` must be a string like \"redis://127.0.0.1:6379\"".to_owned()),
            None => env_url.map(str::to_owned),
        };
        let Some(url) = url.filter(|u| !u.trim().is_empty()) else { return Ok(None) };
        let mut settings = RedisSettings::new(url);
        let Some(table) = table else { return Ok(Some(settings)) };
        for (field, value) in table {
            match field.as_str() {
                "url" => {}
                "prefix" => match value {
                    Value::String(p) if !p.is_empty() => settings.prefix = p.clone(),
                    _ => return Err("`prefix` must be a non-empty string".to_owned()),
                },
                "invalidation_bound" => settings = settings.invalidation_bound(duration(field, value)?),
                "lock_ttl" => settings = settings.lock_ttl(duration(field, value)?),
                "command_timeout" => settings = settings.command_timeout(duration(field, value)?),
                other => {
                    return Err(format!(
                        "unknown field `{other}`: expected one of url, prefix, invalidation_bound, lock_ttl, command_timeout"
                    ));
                }
            }
        }
        Ok(Some(settings))
    }
}

fn duration(field: &str, value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("`{field}`: {e}; write a duration like \"1s\" or \"250ms\"")),
        Value::Integer(n) if *n > 0 => Ok(Duration::from_secs(*n as u64)),
        _ => Err(format!("`{field}` must be a duration like \"1s\" or \"250ms\"")),
    }
}

/// The executable's file name: one prefix per app by default.
fn default_prefix() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map_or_else(|| "connscope".to_owned(), |name| format!("connscope:{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_table_wins_over_the_variable_and_fields_are_read() {
        let t =
            table("url = \"redis://a:1\"\nprefix = \"app\"\ninvalidation_bound = \"250ms\"\nlock_ttl = 3");
        let s = RedisSettings::resolve(Some(&t), Some("redis://b:2")).unwrap().unwrap();
        assert_eq!(s.url.expose(), "redis://a:1");
        assert_eq!(s.prefix, "app");
        assert_eq!(s.invalidation_bound, Duration::from_millis(250));
        assert_eq!(s.lock_ttl, Duration::from_secs(3));
    }

    #[test]
    fn the_variable_alone_enables_it_and_nothing_means_none() {
        assert!(RedisSettings::resolve(None, Some("redis://b:2")).unwrap().is_some());
        assert!(RedisSettings::resolve(None, None).unwrap().is_none());
        assert!(RedisSettings::resolve(None, Some(" ")).unwrap().is_none());
    }

    #[test]
    fn bad_fields_say_what_to_write_and_never_quote_the_url() {
        let t = table("url = \"redis://:hunter2@a:1\"\nlock_tll = \"1s\"");
        let e = RedisSettings::resolve(Some(&t), None).unwrap_err();
        assert!(e.contains("unknown field `lock_tll`") && e.contains("lock_ttl"), "{e}");
        assert!(!e.contains("hunter2"));
        let t = table("url = \"redis://a:1\"\ninvalidation_bound = \"soon\"");
        let e = RedisSettings::resolve(Some(&t), None).unwrap_err();
        assert!(e.contains("like \"1s\""), "{e}");
        let s = RedisSettings::new("redis://:hunter2@a:1");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
