//! The resource cache: values of one resource in one scope, with a TTL (on Tokio's clock, so
//! tests can pause time), exact LRU `max_entries`, single flight, and release hooks that run
//! exactly once however a value leaves.
//!
//! How a value leaves, and who runs its hook (always in a task of its own, see `release`):
//! * `invalidate`, `clear`, session end, shutdown: removed under the lock, hook awaited by the
//!   caller (a caller dropped meanwhile strands nothing: the hook runs on).
//! * TTL expiry: found by the runtime's maintenance (or by a caller that meets the expired value,
//!   which then treats it as a miss), hook run in the background.
//! * `max_entries`: the least recently used value (as the calls define it) is evicted when a new
//!   one is stored, hook run in the background.
//! * A replaced value (same key, new value: only [`ResourceCache::insert`] does that): cause
//!   `Replaced`, in the background.
//!
//! Every removal happens under the cache's lock and hands the value to exactly one party, so each
//! hook runs exactly once. A load stores its value only if no invalidate, clear or insert of its
//! key ran while it loaded (its caller still gets the value), and never into a closed cache.

mod background;
mod flight;
mod freshness;
mod index;
mod outcome;
mod own_error;
mod refresh;
mod release;
mod set;
mod shards;
mod slots;
mod state;
mod timers;

use std::any::Any;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use background::{own as own_runtime, spawn as spawn_background};
#[cfg(feature = "redis")]
pub(crate) use freshness::fresh_for_at_most;
pub(crate) use outcome::Outcome;
pub use release::{BoxFuture, DEFAULT_HOOK_TIMEOUT, HookError, ReleaseHook};
pub(crate) use release::{ReleaseTracker, Releaser, unfinished, within};
#[allow(unused_imports)]
pub(crate) use set::CacheKey;
pub(crate) use set::CacheSet;
pub(crate) use timers::{Due, Timers};

use self::flight::{Flight, Outcome as LoadOutcome};
use self::refresh::Owner;
use self::shards::{Shards, Tally};
use self::state::{Closed, Displaced, Found, State};
use crate::error::{Error, ReleaseReport};
use crate::stats::{CacheStats, RemovalCause, StatsSnapshot};

/// How many expired entries a maintenance visit removes under one hold of the lock.
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
    /// Background refresh of values past their ttl (needs a `ttl`).
    pub refresh: Option<Refresh<V>>,
    /// A releaser to share (the resource's, in the runtime it was made for): used when its
    /// tracker is the cache's.
    pub(crate) releaser: Option<Arc<Releaser<V>>>,
    /// Whether many threads may hit it at once (a global cache): without `max_entries` its
    /// store then has a read index that hits use without its lock.
    pub(crate) concurrent: bool,
}

impl<V> CacheConfig<V> {
    /// A cache named `name` with no TTL, no bound and no hook.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CacheConfig {
            name: name.into(),
            ttl: None,
            max_entries: None,
            on_release: None,
            refresh: None,
            releaser: None,
            concurrent: false,
        }
    }
}

/// Background refresh (stale-while-revalidate): a value past its ttl is still served for
/// `max_stale` more, while one refresh per key runs; past that it is gone and a call waits for
/// a fresh load.
pub struct Refresh<V> {
    /// How long past its ttl a value may still be served while it is refreshed.
    pub max_stale: Duration,
    /// Whether a refresh returned the very instance it replaces (then the old value is not
    /// released: it is still in use). `Arc::ptr_eq` for `Arc` values.
    pub same_instance: fn(&V, &V) -> bool,
}

impl<V> Clone for Refresh<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Refresh<V> {}

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
    shards: Shards<K, V>,
    /// How long a value is kept, in nanoseconds: its ttl plus the refresh window if any
    /// (`u64::MAX`: no ttl). 8 bytes where an `Option<Duration>` takes 16.
    ttl_nanos: u64,
    timers: Arc<Timers>,
    releaser: Arc<Releaser<V>>,
    stats: Arc<CacheStats>,
}

/// Who leads a load, or waits for one.
enum Role<V> {
    Lead(Arc<Flight<V>>),
    Wait(Arc<Flight<V>>),
    /// Refresh this stale value (its id), claimed by this caller.
    Refresh(V, u64),
}

impl<K, V> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig<V>, tracker: Arc<ReleaseTracker>, timers: Arc<Timers>) -> Self {
        let stats = Arc::new(CacheStats::default());
        // Refresh needs a ttl to be past.
        let refresh = config.refresh.filter(|_| config.ttl.is_some());
        let window = refresh.map(|r| r.max_stale);
        let releaser = match config.releaser {
            Some(shared) if Arc::ptr_eq(&shared.tracker, &tracker) => shared,
            _ => Arc::new(Releaser {
                resource: Arc::clone(&config.name),
                hook: config.on_release,
                same_instance: refresh.map(|r| r.same_instance),
                tracker,
            }),
        };
        ResourceCache {
            inner: Arc::new(Inner {
                // A read index for a global cache (see `shards`).
                shards: Shards::new(config.concurrent, || State::new(config.max_entries, window)),
                ttl_nanos: config.ttl.map_or(u64::MAX, |ttl| {
                    let kept = ttl.saturating_add(window.unwrap_or_default());
                    u64::try_from(kept.as_nanos()).unwrap_or(u64::MAX - 1).min(u64::MAX - 1)
                }),
                timers,
                releaser,
                stats,
            }),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.releaser.resource
    }

    /// The store of `key`, locked.
    fn lock(&self, key: &K) -> MutexGuard<'_, State<K, V>> {
        self.inner.shards.lock(key).0
    }

    fn deadline(&self) -> Option<Instant> {
        match self.inner.ttl_nanos {
            u64::MAX => None,
            // A deadline past what an `Instant` can hold never comes: no deadline.
            nanos => Instant::now().checked_add(Duration::from_nanos(nanos)),
        }
    }

    /// The fresh value for `key` (counts a hit, or a miss); `None` also for a stale value, which
    /// the caller's load path then serves and refreshes.
    pub(crate) fn fresh(&self, key: &K) -> Option<V> {
        self.inner.hit(key)
    }

    /// The live value for `key`, if any, a stale one (inside the refresh window) included
    /// (counts a hit or a miss).
    pub async fn get(&self, key: &K) -> Option<V> {
        let stats = &self.inner.stats;
        match self.inner.peek(key) {
            (Peek::Hit(v) | Peek::Stale(v), tally) => {
                tally.hit(stats);
                Some(v)
            }
            (Peek::Miss, tally) => {
                tally.miss(stats);
                None
            }
        }
    }

    /// The value for `key`, loading it with `loader` on a miss. Concurrent callers of a missing
    /// key run one loader and share its result (single flight). An `Err` is returned to all of
    /// them and not cached. A loader that panics caches nothing: its caller panics, the others
    /// retry. A caller that is cancelled mid-load does not block the others: one of them loads.
    /// A load that an `invalidate`, `clear` or `insert` of its key overtook returns its value to
    /// its callers without caching it.
    pub async fn try_get_with<E, F>(&self, key: K, loader: F) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.inner.hit(&key) {
            return Ok(v);
        }
        // Boxed on a miss only: a large loader future (a query) then travels through the
        // layers below as a pointer, instead of being copied into each of their states.
        self.load(key, Box::pin(loader), OnClosed::Refuse).await
    }

    /// Like [`try_get_with`](Self::try_get_with) for a loader that cannot fail.
    pub async fn get_with<F>(&self, key: K, loader: F) -> Result<V, Error>
    where
        F: Future<Output = V>,
    {
        if let Some(v) = self.inner.hit(&key) {
            return Ok(v);
        }
        let loader = Box::pin(loader);
        match self
            .load(key, async { Ok::<V, std::convert::Infallible>(loader.await) }, OnClosed::Refuse)
            .await
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
        if let Some(v) = self.inner.hit(&key) {
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
        match self.load(key, shared, OnClosed::Refuse).await {
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
        if let Some(v) = self.inner.hit(&key) {
            return v;
        }
        self.miss_or_run(key, Box::pin(loader)).await
    }

    /// The miss path of [`get_or_run`](Self::get_or_run).
    pub(crate) async fn miss_or_run<F>(&self, key: K, loader: Pin<Box<F>>) -> V
    where
        F: Future<Output = V>,
    {
        let loader = async { Ok::<V, std::convert::Infallible>(loader.await) };
        match self.load(key, loader, OnClosed::RunUncached).await {
            Ok(v) => v,
            Err(LoadError::Failed(never)) => match *never {},
            // `RunUncached` answers a closed scope with the loader's own value.
            Err(LoadError::Scope(_)) => unreachable_closed(),
        }
    }

    /// The miss path shared by every loading method: wait for a load in flight, or lead one.
    async fn load<E, F>(&self, key: K, loader: F, on_closed: OnClosed) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        loop {
            let role = {
                let mut state = self.lock(&key);
                match &state.closed {
                    Some(closed) => Err(closed.reason.clone()),
                    None => Ok(match state.lookup(&key, Instant::now) {
                        Found::Hit(v) => return Ok(v),
                        Found::Stale { value, id } => {
                            if !state.claim_refresh(&key, id) {
                                drop(state);
                                self.inner.stats.hit();
                                return Ok(value);
                            }
                            (Role::Refresh(value, id), None)
                        }
                        Found::Loading(flight) => (Role::Wait(flight), None),
                        Found::Missing { expired } => (Role::Lead(state.start_flight(key.clone())), expired),
                    }),
                }
            };
            let role = match role {
                Err(reason) => return self.closed_before_load(reason, loader, on_closed).await,
                Ok((role, expired)) => {
                    if let Some(v) = expired {
                        self.inner.release_in_background(v, RemovalCause::Expired);
                    }
                    role
                }
            };
            let flight = match role {
                Role::Lead(flight) => return self.lead(key, flight, loader, on_closed).await,
                Role::Wait(flight) => flight,
                Role::Refresh(old, id) => {
                    // This caller refreshes, in place: it gets the new value (the old one if
                    // the refresh fails). Callers meanwhile get the old one.
                    self.inner.stats.hit();
                    let refreshed = self.refresh(key, old, id, loader, Owner::Caller, on_closed);
                    return refreshed.await.map_err(LoadError::Scope);
                }
            };
            match flight.wait().await {
                LoadOutcome::Value(v) => return Ok(v),
                LoadOutcome::Failed(e) => {
                    if let Ok(e) = e.downcast::<E>() {
                        return Err(LoadError::Failed(e));
                    }
                    // A caller with another error type: it loads for itself.
                }
                LoadOutcome::Abandoned => {}
                LoadOutcome::Closed(reason) => {
                    return self.closed_before_load(reason, loader, on_closed).await;
                }
            }
        }
    }

    async fn closed_before_load<E, F>(
        &self,
        reason: Error,
        loader: F,
        on_closed: OnClosed,
    ) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
    {
        match on_closed {
            OnClosed::Refuse => Err(LoadError::Scope(reason)),
            OnClosed::RunUncached => loader.await.map_err(|e| LoadError::Failed(Arc::new(e))),
        }
    }

    /// Runs the loader for `flight` and stores its value if the flight still holds the key.
    async fn lead<E, F>(
        &self,
        key: K,
        flight: Arc<Flight<V>>,
        loader: F,
        on_closed: OnClosed,
    ) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.inner.stats.load();
        let guard = Abandon { cache: self, key: &key, flight: &flight };
        let (result, fresh) = freshness::noting(loader).await;
        std::mem::forget(guard);
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                self.inner.stats.load_failure();
                self.lock(&key).abandon_flight(&key, flight.id);
                let e = Arc::new(e);
                flight.finish(LoadOutcome::Failed(Arc::clone(&e) as Arc<dyn Any + Send + Sync>));
                return Err(LoadError::Failed(e));
            }
        };
        let stored = {
            let mut state = self.lock(&key);
            match state.closed.as_deref().cloned() {
                Some(closed) => Err(closed),
                None => {
                    let deadline = freshness::capped(self.deadline(), fresh, state.window());
                    Ok(state.finish_flight(&key, flight.id, value.clone(), deadline))
                }
            }
        };
        match stored {
            Ok(displaced) => {
                flight.finish(LoadOutcome::Value(value.clone()));
                if let Some(displaced) = displaced {
                    self.release_displaced(displaced);
                }
                Ok(value)
            }
            Err(Closed { cause, reason }) => {
                // Waiters never receive a value that is being released.
                flight.finish(LoadOutcome::Closed(reason.clone()));
                match on_closed {
                    OnClosed::RunUncached => Ok(value),
                    OnClosed::Refuse => {
                        // Loaded into a closed scope: released once, as the close would have.
                        let _ = self.inner.release(value, cause).await;
                        Err(LoadError::Scope(reason))
                    }
                }
            }
        }
    }

    fn release_displaced(&self, displaced: Displaced<V>) {
        if let Some(at) = displaced.wake {
            let me: std::sync::Weak<dyn Due> = Arc::downgrade(&self.inner) as _;
            self.inner.timers.schedule(at, me);
        }
        if let Some(old) = displaced.replaced {
            self.inner.release_in_background(old, RemovalCause::Replaced);
        }
        for v in displaced.evicted {
            self.inner.release_in_background(v, RemovalCause::Size);
        }
    }

    /// Stores `value` under `key`. A value already there is released (cause `Replaced`); a load
    /// of `key` in flight keeps its result to its own callers (loads never replace).
    ///
    /// A closed cache (its session ended, the runtime shut down) refuses the value: it is
    /// released (cause `SessionEnd` / `Shutdown`) and the error says why.
    pub async fn insert(&self, key: K, value: V) -> Result<(), Error> {
        let stored = {
            let mut state = self.lock(&key);
            match state.closed.as_deref().cloned() {
                Some(closed) => Err((closed, value)),
                None => Ok(state.store(key, value, self.deadline())),
            }
        };
        match stored {
            Ok(displaced) => {
                self.release_displaced(displaced);
                Ok(())
            }
            Err((Closed { cause, reason }, value)) => {
                let _ = self.inner.release(value, cause).await;
                Err(reason)
            }
        }
    }

    /// Removes `key` and returns once its release hook has finished. Returns whether a value was
    /// there. A load of `key` in flight will not be cached. A failing hook is logged and counted
    /// in [`stats`](Self::stats).
    pub async fn invalidate(&self, key: &K) -> bool {
        let removed = self.lock(key).remove(key);
        self.release_removed(removed).await
    }

    /// Removes `key` only if its value is the one `pred` accepts (e.g. the connection a caller
    /// found closed, not one stored a moment later); awaits its release hook. Returns whether a
    /// value was removed.
    pub async fn invalidate_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> bool {
        let removed = self.lock(key).remove_if(key, pred);
        self.release_removed(removed).await
    }

    async fn release_removed(&self, removed: Option<V>) -> bool {
        match removed {
            Some(v) => {
                let _ = self.inner.release(v, RemovalCause::Explicit).await;
                true
            }
            None => false,
        }
    }

    /// Removes every value and returns once all their release hooks have finished. A failing or
    /// panicking hook does not stop the others; the report lists them. Loads in flight will not
    /// be cached.
    pub async fn clear(&self) -> ReleaseReport {
        let mut values = Vec::new();
        for state in self.inner.shards.all() {
            let (taken, _overtaken) = lock(state).take_all();
            values.extend(taken);
        }
        self.inner.release_all(values, RemovalCause::Explicit).await
    }

    /// Statistics of this cache.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.snapshot()
    }

    /// How many live values the cache holds.
    pub async fn len(&self) -> u64 {
        let now = Instant::now();
        self.inner.shards.all().map(|state| lock(state).live_len(now) as u64).sum()
    }

    /// Whether the cache holds no value.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    pub(crate) fn stats_handle(&self) -> &Arc<CacheStats> {
        &self.inner.stats
    }

    /// Marks the cache closed (loads and inserts are refused from now on; loads in flight
    /// release their value when they finish) and releases every value.
    /// `closed` (its cause and reason) is the scope's, shared by its caches.
    async fn close_with(&self, closed: Arc<Closed>) -> ReleaseReport {
        let Closed { cause, ref reason } = *closed;
        // Store by store, each closed and emptied under its lock: a load or insert that reaches
        // a store after it closed is refused there; one that came before is taken here.
        let (mut values, mut flights) = (Vec::new(), Vec::new());
        for state in self.inner.shards.all() {
            let mut state = lock(state);
            if state.closed.is_some() {
                return ReleaseReport::default();
            }
            state.closed = Some(Arc::clone(&closed));
            let (v, f) = state.take_all();
            values.extend(v);
            flights.extend(f);
        }
        for flight in flights {
            flight.finish(LoadOutcome::Closed(reason.clone()));
        }
        // Called by a session end or a shutdown, tasks of their own that run to their end.
        self.inner.release_all_here(values, cause).await
    }

    /// Marks a cache that holds nothing yet as closed (created after its scope closed).
    fn close_empty(&self, closed: &Arc<Closed>) {
        for state in self.inner.shards.all() {
            let mut state = lock(state);
            debug_assert_eq!(state.ready_len(), 0);
            state.closed.get_or_insert_with(|| Arc::clone(closed));
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The fresh value for `key`, if any: counts a hit, or a miss when there is no usable
    /// value; a stale value (to refresh) gives `None` and counts nothing, for the caller's load
    /// path to serve and refresh it.
    pub(crate) fn hit(&self, key: &K) -> Option<V> {
        match self.peek(key) {
            (Peek::Hit(v), tally) => {
                tally.hit(&self.stats);
                Some(v)
            }
            (Peek::Stale(_), _) => None,
            (Peek::Miss, tally) => {
                tally.miss(&self.stats);
                None
            }
        }
    }

    /// Like [`hit`](Self::hit), counting a hit only: for a caller that goes on to a path that
    /// counts the miss itself.
    pub(crate) fn hit_only(&self, key: &K) -> Option<V> {
        match self.peek(key) {
            (Peek::Hit(v), tally) => {
                tally.hit(&self.stats);
                Some(v)
            }
            (Peek::Stale(_) | Peek::Miss, _) => None,
        }
    }

    /// Looks `key` up, counting nothing (the tally says where to count); an expired value met
    /// here is removed and released in the background.
    fn peek(&self, key: &K) -> (Peek<V>, Tally<'_>) {
        if let Some((v, tally)) = self.shards.hit_unlocked(key) {
            return (Peek::Hit(v), tally);
        }
        let (mut state, mut tally) = self.shards.lock(key);
        let found = state.lookup(key, Instant::now);
        if matches!(found, Found::Hit(_)) {
            // Counted while the lock is held: a plain add, no atomic.
            state.count_hit();
            tally = Tally::Counted;
        }
        drop(state);
        let peek = match found {
            Found::Hit(v) => Peek::Hit(v),
            Found::Stale { value, .. } => Peek::Stale(value),
            Found::Missing { expired } => {
                if let Some(v) = expired {
                    self.release_in_background(v, RemovalCause::Expired);
                }
                Peek::Miss
            }
            Found::Loading(_) => Peek::Miss,
        };
        (peek, tally)
    }

    /// The statistics: the cache's counters plus its stores' own hit and miss counts.
    fn snapshot(&self) -> StatsSnapshot {
        self.shards.snapshot(&self.stats)
    }
}

/// Releases, counted in this cache's statistics.
impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    async fn release(&self, value: V, cause: RemovalCause) -> Result<(), crate::error::ReleaseFailure> {
        self.releaser.release(&self.stats, value, cause).await
    }

    fn release_in_background(&self, value: V, cause: RemovalCause) {
        self.releaser.release_in_background(&self.stats, value, cause);
    }

    async fn release_all(&self, values: Vec<V>, cause: RemovalCause) -> ReleaseReport {
        self.releaser.release_all(&self.stats, values, cause).await
    }

    async fn release_all_here(&self, values: Vec<V>, cause: RemovalCause) -> ReleaseReport {
        self.releaser.release_all_here(&self.stats, values, cause).await
    }
}

/// What a lookup that counts nothing found.
enum Peek<V> {
    Hit(V),
    /// Inside the refresh window.
    Stale(V),
    Miss,
}

impl<K, V> Due for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A maintenance visit: releases the values whose TTL has passed (hooks in the background),
    /// then schedules the next deadline.
    fn run_due(self: Arc<Self>, now: Instant, timers: &Arc<Timers>) {
        let mut next: Option<Instant> = None;
        for state in self.shards.all() {
            let shard_next = loop {
                let mut state = lock(state);
                let due = state.expire_due(now, SWEEP_BATCH);
                let more = due.len() == SWEEP_BATCH;
                let next = if more { None } else { state.reschedule() };
                drop(state);
                for v in due {
                    self.release_in_background(v, RemovalCause::Expired);
                }
                if !more {
                    break next;
                }
            };
            next = match (next, shard_next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(at) = next {
            let me: std::sync::Weak<dyn Due> = Arc::downgrade(&self) as _;
            timers.schedule(at, me);
        }
    }
}

/// A loader that unwinds or is dropped mid-way gives up its flight: its waiters start over.
struct Abandon<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache: &'a ResourceCache<K, V>,
    key: &'a K,
    flight: &'a Arc<Flight<V>>,
}

impl<K, V> Drop for Abandon<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cache.inner.stats.load_failure();
        }
        self.cache.lock(self.key).abandon_flight(self.key, self.flight.id);
        self.flight.finish(LoadOutcome::Abandoned);
    }
}

/// Locks a store (a panic elsewhere never leaves it inconsistent: its methods do not unwind
/// midway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cold]
fn unreachable_closed() -> ! {
    unreachable!("connscope: a closed scope is answered by running the loader uncached")
}

/// What a load does when it finds, or leaves, its scope closed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnClosed {
    /// Report the closed scope (a value loaded meanwhile is released).
    Refuse,
    /// Run the loader uncached and hand its value to the caller (functions with no error type).
    RunUncached,
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

impl<K, V> Drop for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // A cache dropped while it still holds values (its scope never closed): release them.
        // (A closed cache is already empty.)
        let mut values = Vec::new();
        for state in self.shards.all_mut() {
            values.extend(state.take_all().0);
        }
        for v in values {
            self.release_in_background(v, RemovalCause::Shutdown);
        }
    }
}
