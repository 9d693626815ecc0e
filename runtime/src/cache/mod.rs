//! The resource cache: a moka cache per scope and resource, with our own TTL (on Tokio's clock,
//! so tests can pause time), LRU `max_entries`, single flight, and release hooks that run exactly
//! once however a value leaves.
//!
//! How a value leaves, and who runs its hook:
//! * `invalidate`, `clear`, session end, shutdown: removed with `remove`, hook awaited by the caller.
//! * TTL expiry: found by the runtime's maintenance tick (or by a caller that meets the expired
//!   value, which then treats it as a miss), removed conditionally, hook run in a background task.
//! * `max_entries`: moka's LRU eviction notifies us (`Size`), hook run in a background task.
//! * A replaced value (same key, new value: only [`ResourceCache::insert`] does that) is released
//!   like any other removal, with cause `Replaced`.
//!
//! moka notifies `Explicit` for our own `remove` calls too; the listener ignores those, because
//! the code that removed the value releases it itself. Each removal is observed by exactly one
//! party, so each hook runs exactly once.

mod release;
mod set;

use std::collections::BTreeMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use tokio::time::Instant;

pub use release::{BoxFuture, HookError, ReleaseHook};
pub(crate) use release::{ReleaseTracker, Releaser};
#[allow(unused_imports)]
pub(crate) use set::CacheKey;
pub(crate) use set::CacheSet;

use crate::error::{Error, ReleaseReport};
use crate::stats::{CacheStats, RemovalCause, StatsSnapshot};

/// The hasher of cache keys: foldhash, seeded per cache (hashbrown's default; several times
/// cheaper than SipHash on the hit path).
type KeyHasher = foldhash::fast::RandomState;

/// How many expired entries a maintenance pass removes before letting other tasks run.
const SWEEP_BATCH: usize = 256;

/// The settings of one cache.
#[derive(Clone)]
pub struct CacheConfig<V> {
    /// Name used in statistics, logs and errors.
    pub name: Arc<str>,
    /// Time to live of each value (`None`: until removed otherwise).
    pub ttl: Option<Duration>,
    /// Maximum number of values (least recently used evicted first).
    pub max_entries: Option<u64>,
    /// Hook run exactly once for each value that leaves.
    pub on_release: Option<ReleaseHook<V>>,
}

impl<V> CacheConfig<V> {
    /// A cache named `name` with no TTL, no bound and no hook.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CacheConfig { name: name.into(), ttl: None, max_entries: None, on_release: None }
    }
}

struct Slot<V> {
    value: V,
    id: u64,
    expires_at: Option<Instant>,
}

impl<V> Slot<V> {
    /// Reads the clock only for values that can expire.
    fn is_live(&self) -> bool {
        self.expires_at.is_none_or(|t| Instant::now() < t)
    }
}

/// Why a cached load did not produce a value.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The loader returned this error (shared with every caller that waited for the same load;
    /// nothing was cached).
    Failed(Arc<E>),
    /// The scope could not be used: no session, session ended, runtime shut down.
    Scope(Error),
}

/// A cache of values of one resource in one scope. Cheap to clone.
pub struct ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        ResourceCache { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka: Cache<K, Arc<Slot<V>>, KeyHasher>,
    ttl: Option<Duration>,
    deadlines: Mutex<BTreeMap<(Instant, u64), K>>,
    next_id: AtomicU64,
    closed: OnceLock<Error>,
    releaser: Arc<Releaser<V>>,
    stats: Arc<CacheStats>,
}

impl<K, V> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig<V>, tracker: Arc<ReleaseTracker>) -> Self {
        let stats = Arc::new(CacheStats::default());
        let releaser = Arc::new(Releaser {
            resource: Arc::clone(&config.name),
            hook: config.on_release,
            stats: Arc::clone(&stats),
            tracker,
        });
        let listener = Arc::clone(&releaser);
        let mut builder = Cache::builder()
            .name(&config.name)
            // LRU, not TinyLFU: a freshly built connection must never be refused and closed at birth.
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_key, slot: Arc<Slot<V>>, cause| {
                let cause = match cause {
                    moka::notification::RemovalCause::Size => RemovalCause::Size,
                    moka::notification::RemovalCause::Replaced => RemovalCause::Replaced,
                    moka::notification::RemovalCause::Expired => RemovalCause::Expired,
                    // Our own `remove` calls: the remover releases the value itself.
                    moka::notification::RemovalCause::Explicit => return,
                };
                listener.release_in_background(slot.value.clone(), cause);
            });
        if let Some(max) = config.max_entries {
            builder = builder.max_capacity(max);
        }
        ResourceCache {
            inner: Arc::new(Inner {
                moka: builder.build_with_hasher(KeyHasher::default()),
                ttl: config.ttl,
                deadlines: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                closed: OnceLock::new(),
                releaser,
                stats,
            }),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.releaser.resource
    }

    /// The live value for `key`, if any (counts a hit or a miss).
    pub async fn get(&self, key: &K) -> Option<V> {
        let inner = &*self.inner;
        if let Some(slot) = inner.moka.get(key).await {
            if slot.is_live() {
                inner.stats.hit();
                return Some(slot.value.clone());
            }
            self.expire(key, slot.id).await;
        }
        inner.stats.miss();
        None
    }

    /// The value for `key`, loading it with `loader` on a miss. Concurrent callers of a missing
    /// key run one loader and share its result (single flight). An `Err` is returned to all of
    /// them and not cached. A loader that panics caches nothing: its caller panics, the others
    /// retry. A caller that is cancelled mid-load does not block the others: one of them loads.
    pub async fn try_get_with<E, F>(&self, key: K, loader: F) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.get(&key).await {
            return Ok(v);
        }
        // Boxed on a miss only: a large loader future (a query) then travels through the
        // layers below as a pointer, instead of being copied into each of their states.
        self.load(key, Box::pin(loader), Closed::Release).await
    }

    /// Like [`try_get_with`](Self::try_get_with) for a loader that cannot fail.
    pub async fn get_with<F>(&self, key: K, loader: F) -> Result<V, Error>
    where
        F: Future<Output = V>,
    {
        if let Some(v) = self.get(&key).await {
            return Ok(v);
        }
        let loader = Box::pin(loader);
        match self.load(key, async { Ok::<V, std::convert::Infallible>(loader.await) }, Closed::Release).await
        {
            Ok(v) => Ok(v),
            Err(LoadError::Scope(e)) => Err(e),
            Err(LoadError::Failed(never)) => match *never {},
        }
    }

    /// For cached functions that return the caller's own error type `E`: the caller whose
    /// loader failed gets its error back untouched; callers that waited for that load get
    /// [`Error::SharedLoadFailed`] (with the message) through `E: From<Error>`, as do scope
    /// errors (no session, session ended, shut down).
    pub async fn try_get_with_own_error<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
        E: From<Error> + std::fmt::Display,
    {
        if let Some(v) = self.get(&key).await {
            return Ok(v);
        }
        self.miss_own_error(key, Box::pin(loader)).await
    }

    /// The miss path of [`try_get_with_own_error`](Self::try_get_with_own_error), for a caller
    /// that already looked the key up (and counted the miss).
    pub(crate) async fn miss_own_error<E, F>(&self, key: K, loader: Pin<Box<F>>) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
        E: From<Error> + std::fmt::Display,
    {
        let mut own: Option<E> = None;
        let own_slot = &mut own;
        let shared = async {
            loader.await.map_err(|e| {
                let failure = SharedFailure(e.to_string());
                *own_slot = Some(e);
                failure
            })
        };
        match self.load(key, shared, Closed::Release).await {
            Ok(v) => Ok(v),
            Err(LoadError::Scope(e)) => Err(e.into()),
            Err(LoadError::Failed(failure)) => Err(match own {
                Some(e) => e,
                None => Error::SharedLoadFailed { resource: self.name().to_owned(), source: failure }.into(),
            }),
        }
    }

    /// For cached functions that cannot report an error: the value for `key`, loading it on a
    /// miss; when the scope is closed (runtime shut down) the loader simply runs uncached.
    pub async fn get_or_run<F>(&self, key: K, loader: F) -> V
    where
        F: Future<Output = V>,
    {
        if let Some(v) = self.get(&key).await {
            return v;
        }
        self.miss_or_run(key, Box::pin(loader)).await
    }

    /// The miss path of [`get_or_run`](Self::get_or_run).
    pub(crate) async fn miss_or_run<F>(&self, key: K, loader: Pin<Box<F>>) -> V
    where
        F: Future<Output = V>,
    {
        if self.inner.closed.get().is_some() {
            return loader.await;
        }
        let loader = async { Ok::<V, std::convert::Infallible>(loader.await) };
        match self.load(key, loader, Closed::HandBack).await {
            Ok(v) => v,
            Err(LoadError::Failed(never)) => match *never {},
            // `HandBack` never reports a closed scope after loading, and the check above
            // ran before: only a close in between lands here, and then the value was handed back.
            Err(LoadError::Scope(_)) => unreachable!("connscope: closed scope reported after hand-back"),
        }
    }

    async fn load<E, F>(&self, key: K, loader: F, on_closed: Closed) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        if let Some(e) = inner.closed.get() {
            return Err(LoadError::Scope(e.clone()));
        }
        let _ = on_closed;
        let my_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let init = async {
            inner.stats.load();
            let guard = FailureOnUnwind(&inner.stats);
            let result = loader.await;
            std::mem::forget(guard);
            match result {
                Ok(value) => {
                    let expires_at = inner.ttl.map(|ttl| Instant::now() + ttl);
                    Ok(Arc::new(Slot { value, id: my_id, expires_at }))
                }
                Err(e) => {
                    inner.stats.load_failure();
                    Err(e)
                }
            }
        };
        let slot = inner.moka.try_get_with(key.clone(), init).await.map_err(LoadError::Failed)?;
        if slot.id == my_id {
            if let Some(at) = slot.expires_at {
                inner.deadlines.lock().unwrap_or_else(|p| p.into_inner()).insert((at, my_id), key.clone());
            }
            // A load that finished after the scope was closed must not leave a value behind.
            if let Some(e) = inner.closed.get()
                && let Some(removed) = inner.moka.remove(&key).await
            {
                if on_closed == Closed::HandBack {
                    return Ok(removed.value.clone());
                }
                let _ =
                    Arc::clone(&inner.releaser).release(removed.value.clone(), RemovalCause::Shutdown).await;
                return Err(LoadError::Scope(e.clone()));
            }
        }
        Ok(slot.value.clone())
    }

    /// Stores `value` under `key`. A value already there is released (cause `Replaced`).
    pub async fn insert(&self, key: K, value: V) {
        let inner = &*self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_at = inner.ttl.map(|ttl| Instant::now() + ttl);
        if let Some(at) = expires_at {
            inner.deadlines.lock().unwrap_or_else(|p| p.into_inner()).insert((at, id), key.clone());
        }
        inner.moka.insert(key, Arc::new(Slot { value, id, expires_at })).await;
    }

    /// Removes `key` and returns once its release hook has finished. Returns whether a value was
    /// there. A failing hook is logged and counted in [`stats`](Self::stats).
    pub async fn invalidate(&self, key: &K) -> bool {
        match self.inner.moka.remove(key).await {
            Some(slot) => {
                let _ = Arc::clone(&self.inner.releaser)
                    .release(slot.value.clone(), RemovalCause::Explicit)
                    .await;
                true
            }
            None => false,
        }
    }

    /// Removes every value and returns once all their release hooks have finished. A failing or
    /// panicking hook does not stop the others; the report lists them.
    pub async fn clear(&self) -> ReleaseReport {
        self.drain(RemovalCause::Explicit).await
    }

    /// Statistics of this cache.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// How many live values the cache holds (after pending maintenance).
    pub async fn len(&self) -> u64 {
        self.inner.moka.run_pending_tasks().await;
        self.inner.moka.entry_count()
    }

    /// Whether the cache holds no value.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    pub(crate) fn stats_handle(&self) -> &Arc<CacheStats> {
        &self.inner.stats
    }

    async fn drain(&self, cause: RemovalCause) -> ReleaseReport {
        let inner = &*self.inner;
        let keys: Vec<Arc<K>> = inner.moka.iter().map(|(k, _)| k).collect();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(slot) = inner.moka.remove(&*key).await {
                values.push(slot.value.clone());
            }
        }
        inner.moka.run_pending_tasks().await;
        inner.releaser.release_all(values, cause).await
    }

    /// Removes `key` if it still holds the value with `id`; releases it in the background.
    async fn expire(&self, key: &K, id: u64) {
        let result = self
            .inner
            .moka
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let same = entry.is_some_and(|e| e.value().id == id);
                std::future::ready(if same { Op::Remove } else { Op::Nop })
            })
            .await;
        if let CompResult::Removed(entry) = result {
            self.inner
                .releaser
                .release_in_background(entry.into_value().value.clone(), RemovalCause::Expired);
        }
    }

    /// One maintenance pass: expire values whose TTL has passed (in batches, yielding between
    /// them) and let moka apply pending LRU evictions.
    pub(crate) async fn sweep(&self, now: Instant) {
        let due: Vec<((Instant, u64), K)> = {
            let mut map = self.inner.deadlines.lock().unwrap_or_else(|p| p.into_inner());
            let later = map.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *map, later).into_iter().collect()
        };
        for (i, ((_, id), key)) in due.into_iter().enumerate() {
            self.expire(&key, id).await;
            if (i + 1) % SWEEP_BATCH == 0 {
                self.inner.moka.run_pending_tasks().await;
                tokio::task::yield_now().await;
            }
        }
        self.inner.moka.run_pending_tasks().await;
    }

    /// Marks the cache closed (loads fail from now on) and releases every value.
    pub(crate) async fn close(&self, cause: RemovalCause, reason: Error) -> ReleaseReport {
        let _ = self.inner.closed.set(reason);
        let report = self.drain(cause).await;
        self.inner.deadlines.lock().unwrap_or_else(|p| p.into_inner()).clear();
        report
    }
}

/// What a load that finishes after its scope closed does with its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Release it and report the closed scope.
    Release,
    /// Hand it to the caller uncached.
    HandBack,
}

/// A loader's failure as seen by callers that waited for it.
#[derive(Debug)]
struct SharedFailure(String);

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SharedFailure {}

/// Counts a load failure if the loader unwinds (panics).
struct FailureOnUnwind<'a>(&'a CacheStats);

impl Drop for FailureOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.load_failure();
        }
    }
}

impl<K, V> Drop for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // moka sends no notification when a cache is dropped: release what is still here.
        // (A closed cache is already empty.)
        for (_, slot) in self.moka.iter() {
            self.releaser.release_in_background(slot.value.clone(), RemovalCause::Shutdown);
        }
    }
}
