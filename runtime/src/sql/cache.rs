//! Where cached query results live: one cache per scope instance (the connection's runtime or
//! session) and ttl, keyed by connection identity + SQL + binds + row type; and the generation
//! counters that make tag invalidation and clearing O(1).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::SqlStr;

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
    /// Bumped by `clear_query_cache` and tag invalidation: old entries become unreachable.
    pub(crate) generation: u64,
    pub(crate) sql: SqlStr,
    pub(crate) binds: Arc<[SqlValue]>,
    pub(crate) shape: Shape,
    pub(crate) row: TypeId,
}

/// The identity of a connection's settings: backend, URL, user, password (hashed, never
/// shown), provider type. An in-memory SQLite database is its own identity per instance.
pub(crate) fn identity<P: SqlProvider>(p: &P) -> u64 {
    *p.state().identity.get_or_init(|| {
        let mut h = DefaultHasher::new();
        TypeId::of::<P>().hash(&mut h);
        if <P::Db as super::Backend>::is_in_memory(p.url()) {
            p.state().instance.hash(&mut h);
        }
        (p.url(), p.user(), p.password().map(|s| s.expose())).hash(&mut h);
        h.finish()
    })
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum GenKey {
    Connection(u64),
    Tag(Arc<str>),
}

static GENERATIONS: LazyLock<Mutex<HashMap<GenKey, u64>>> = LazyLock::new(Default::default);

/// The current generation of a query on connection `identity` with `tags`.
pub(crate) fn generation(identity: u64, tags: &[Arc<str>]) -> u64 {
    let gens = GENERATIONS.lock().unwrap_or_else(|p| p.into_inner());
    if gens.is_empty() {
        return 0;
    }
    let mut h = DefaultHasher::new();
    gens.get(&GenKey::Connection(identity)).copied().unwrap_or(0).hash(&mut h);
    for tag in tags {
        gens.get(&GenKey::Tag(Arc::clone(tag))).copied().unwrap_or(0).hash(&mut h);
    }
    h.finish()
}

/// Makes every cached query tagged `tag` stale, in every scope (the next call runs it again).
pub fn invalidate(tag: &str) {
    bump(GenKey::Tag(Arc::from(tag)));
}

pub(crate) fn clear_connection(identity: u64) {
    bump(GenKey::Connection(identity));
}

fn bump(key: GenKey) {
    *GENERATIONS.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(0) += 1;
}

/// The cache id of query caches with this ttl and bound (the same id in every scope).
fn cache_id(ttl: Duration, max_entries: u64) -> u64 {
    static IDS: LazyLock<Mutex<HashMap<(Duration, u64), u64>>> = LazyLock::new(Default::default);
    *IDS.lock().unwrap_or_else(|p| p.into_inner()).entry((ttl, max_entries)).or_insert_with(next_resource_id)
}

/// The query cache with `ttl` of the scope `conn` belongs to: its runtime's global scope or its
/// session. A handle built by hand (`Conn::new`) uses the current scope instead.
pub(crate) fn query_cache<P: SqlProvider>(
    conn: &Conn<P>,
    ttl: Duration,
    max_entries: u64,
) -> Result<ResourceCache<QueryKey, Cached>, Error> {
    let id = cache_id(ttl, max_entries);
    let config = || {
        let mut c = CacheConfig::new(format!("sql queries (ttl {})", humantime::format_duration(ttl)));
        c.ttl = Some(ttl);
        c.max_entries = Some(max_entries);
        c
    };
    let in_session = |s: &Session| {
        s.check_active()?;
        let rt = s.runtime();
        rt.ensure_maintainer();
        Ok(s.inner.caches.get_or_create(id, &rt.shared.tracker, config))
    };
    let in_runtime = |rt: &Runtime| {
        if rt.is_shut_down() {
            return Err(Error::RuntimeShutDown);
        }
        Ok(rt.global_cache(id, config))
    };
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
            Scope::Session => Session::with_current(|s| match s {
                Some(s) => in_session(s),
                None => {
                    Err(Error::NoActiveSession { what: format!("queries on connection `{}`", conn.name()) })
                }
            }),
        },
    }
}
