//! Where cached query results live: per scope instance (the connection's runtime or session),
//! keyed by connection identity + generation + SQL + binds + row type.
//!
//! Each entry carries its own deadline (the call's ttl). The caches of a scope are few and
//! fixed: one per ttl *bucket* (the next power of two of milliseconds at or above the ttl), whose
//! own ttl (the bucket's) lets maintenance free an entry at most about twice its ttl after it
//! was loaded; a hit checks the entry's exact deadline first. Distinct per-call ttls therefore
//! share a bounded set of caches instead of each creating one in every scope.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::SqlStr;
use tokio::time::Instant;

use super::generations::Pins;
use super::settings::SqlProvider;
use super::value::SqlValue;
use crate::cache::{CacheConfig, ResourceCache};
use crate::conn::{Conn, Home};
use crate::error::Error;
use crate::resource::next_resource_id;
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::session::Session;

/// A cached result, type-erased (the key's `row` and `shape` say what it holds).
pub(crate) type Cached = Arc<dyn Any + Send + Sync>;

/// A cached result, its deadline, and pins on the generation counters it was read at.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) value: Cached,
    /// `None`: a ttl too long to represent; it never expires by its own deadline.
    expires_at: Option<Instant>,
    _pins: Pins,
}

impl Entry {
    /// An entry loaded just now, served for `ttl`.
    pub(crate) fn new(value: Cached, ttl: Duration, pins: Pins) -> Self {
        Entry { value, expires_at: Instant::now().checked_add(ttl), _pins: pins }
    }

    /// Whether its own ttl has passed (the bucket's cache may still hold it).
    pub(crate) fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// What a query call returns: every row, exactly one, or at most one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    All,
    One,
    Optional,
}

/// The cache key of one query result.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct QueryKey {
    /// The connection's identity: its settings (never the name alone).
    pub(crate) identity: u64,
    /// Changed by `clear_query_cache` and tag invalidation: old entries become unreachable.
    pub(crate) generation: u64,
    pub(crate) sql: SqlStr,
    pub(crate) binds: Arc<[SqlValue]>,
    pub(crate) shape: Shape,
    pub(crate) row: TypeId,
}

/// What makes two reads the same result on any instance (the shared tier's key, with the generations read from Redis).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct ReadKey<'a> {
    pub(crate) sql: &'a str,
    pub(crate) binds: &'a [SqlValue],
    pub(crate) shape: Shape,
    pub(crate) tags: &'a [Arc<str>],
    /// The row type's name and size (a changed row type reads no old bytes).
    pub(crate) row: (&'static str, usize),
}

/// The identity of a connection's settings: backend, URL, user, password, provider type.
/// An in-memory SQLite database is its own identity per instance. The digest is keyed per
/// process, as every digest of settings holding a secret is.
pub(crate) fn identity<P: SqlProvider>(p: &P) -> u64 {
    *p.state().identity.get_or_init(|| {
        let instance = <P::Db as super::Backend>::is_in_memory(p.url()).then(|| p.state().instance);
        crate::secrets::keyed_digest((
            TypeId::of::<P>(),
            instance,
            p.url(),
            p.user(),
            p.password().map(|s| s.expose()),
        ))
    })
}

/// The longest bucket: beyond it (about 139 years) a cache has no ttl of its own.
const MAX_BUCKET_MS: u64 = 1 << 42;

/// The ttl of the cache that holds entries with `ttl`: the next power of two of milliseconds
/// at or above it (`None`: longer than any bucket).
fn bucket(ttl: Duration) -> Option<Duration> {
    let ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).ok()?.max(1);
    (ms <= MAX_BUCKET_MS).then(|| Duration::from_millis(ms.next_power_of_two()))
}

type CacheIds = HashMap<(Option<Duration>, u64), u64>;

static IDS: LazyLock<Mutex<CacheIds>> = LazyLock::new(Default::default);

/// The cache id of query caches with this bucket and bound (the same id in every scope).
fn cache_id(bucket: Option<Duration>, max_entries: u64) -> u64 {
    *IDS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((bucket, max_entries))
        .or_insert_with(next_resource_id)
}

/// How many kinds of query cache (bucket and bound) exist in this process: each may have one
/// cache in every scope. A test hook: however many distinct ttls calls use, this stays small.
#[doc(hidden)]
pub fn query_cache_kinds() -> usize {
    IDS.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// The query cache for entries with `ttl` of the scope `conn` belongs to: its runtime's global
/// scope or its session (the current session with `per_session`). A handle built by hand
/// (`Conn::new`) uses the current scope instead. With it, the runtime when the scope is global
/// (a session's results are never shared).
pub(crate) fn query_cache<P: SqlProvider>(
    conn: &Conn<P>,
    ttl: Duration,
    max_entries: u64,
    per_session: bool,
) -> Result<(ResourceCache<QueryKey, Entry>, Option<Runtime>), Error> {
    let bucket = bucket(ttl);
    let id = cache_id(bucket, max_entries);
    let config = || {
        let name = match bucket {
            Some(b) => format!("sql queries (ttl up to {})", humantime::format_duration(b)),
            None => "sql queries (long ttl)".to_owned(),
        };
        let mut c = CacheConfig::new(name);
        c.ttl = bucket;
        c.max_entries = Some(max_entries);
        c
    };
    let in_session = |s: &Session| {
        s.check_active()?;
        let rt = s.runtime();
        rt.ensure_maintainer();
        Ok((s.inner.caches.get_or_create(id, &rt.shared.tracker, config), None))
    };
    let in_runtime = |rt: &Runtime| {
        if rt.is_shut_down() {
            return Err(Error::RuntimeShutDown);
        }
        Ok((rt.global_cache(id, config), Some(rt.clone())))
    };
    let current_session = || {
        Session::with_current(|s| match s {
            Some(s) => in_session(s),
            None => Err(Error::NoActiveSession { what: format!("queries on connection `{}`", conn.name()) }),
        })
    };
    if per_session {
        return current_session();
    }
    match conn.home() {
        Some(Home::Global(weak)) => match weak.upgrade() {
            Some(shared) => in_runtime(&Runtime { shared }),
            None => Err(Error::RuntimeShutDown),
        },
        Some(Home::Session(weak)) => match weak.upgrade() {
            Some(inner) => in_session(&Session { inner }),
            None => Err(Error::LoginRequired {
                connection: conn.name().to_owned(),
                reason: "the session this connection belonged to is gone; get a fresh one",
            }),
        },
        None => match P::scope() {
            Scope::Global => in_runtime(&Runtime::current()),
            Scope::Session => current_session(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Entry, bucket};

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_at_its_own_ttl_not_its_buckets() {
        let ttl = Duration::from_millis(513);
        assert_eq!(bucket(ttl), Some(Duration::from_millis(1024)));
        let entry = Entry::new(Arc::new(1u8), ttl, Default::default());
        tokio::time::advance(Duration::from_millis(512)).await;
        assert!(!entry.is_expired());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(entry.is_expired(), "served for its ttl exactly, though its cache keeps it for 1024 ms");
        let forever = Entry::new(Arc::new(1u8), Duration::MAX, Default::default());
        tokio::time::advance(Duration::from_secs(1 << 32)).await;
        assert!(!forever.is_expired());
    }

    #[test]
    fn a_bucket_holds_its_ttl_and_at_most_twice_it() {
        let ms = Duration::from_millis;
        assert_eq!(bucket(Duration::from_nanos(1)), Some(ms(1)));
        assert_eq!(bucket(ms(1)), Some(ms(1)));
        assert_eq!(bucket(Duration::from_micros(1500)), Some(ms(2)));
        assert_eq!(bucket(ms(300)), Some(ms(512)));
        assert_eq!(bucket(Duration::from_secs(60)), Some(ms(65_536)));
        assert_eq!(bucket(Duration::MAX), None);
        for n in 1..5000u64 {
            let ttl = Duration::from_micros(n * 997);
            let b = bucket(ttl).unwrap();
            assert!(b >= ttl && b < ttl * 2 + ms(1), "{ttl:?} -> {b:?}");
        }
        let distinct: std::collections::HashSet<_> =
            (1..100_000u64).map(|n| bucket(Duration::from_millis(n))).collect();
        assert!(distinct.len() <= 18, "{}", distinct.len());
    }
}
