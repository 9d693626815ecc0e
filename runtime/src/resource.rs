//! Cached resources: a `static` description of a cached function (name, scope, ttl,
//! max_entries, release hook) that finds the right cache for the current scope. This is what
//! `#[cached_resource]` expands to, and it can be used by hand.

use std::convert::Infallible;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::{BoxFuture, CacheConfig, HookError, LoadError, Refresh, Releaser, ResourceCache};
use crate::error::{Error, ReleaseReport};
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::session::Session;
use crate::stats::StatsSnapshot;

static NEXT_RESOURCE_ID: AtomicU64 = AtomicU64::new(1);

/// A new id for a resource, unique in the process.
pub(crate) fn next_resource_id() -> u64 {
    NEXT_RESOURCE_ID.fetch_add(1, Ordering::Relaxed)
}

/// Background refresh as declared: `max_stale` (`None`: one ttl) and the same-instance test.
type RefreshSpec<V> = (Option<Duration>, fn(&V, &V) -> bool);

/// The default of [`Resource::same_instance`]: values are never taken for the same instance.
const fn never_same<V>(_: &V, _: &V) -> bool {
    false
}

/// A release hook as a plain function pointer, so it fits in a `static`.
pub type ReleaseFn<V> = fn(V) -> BoxFuture<'static, Result<(), HookError>>;

/// A cached resource: one cache per scope instance (the runtime for `global`, each session for
/// `session`), all with the same settings. Declare it as a `static`.
///
/// ```
/// use connscope::{Resource, Scope};
/// use std::time::Duration;
///
/// static SQUARES: Resource<u64, u64> =
///     Resource::new("squares", Scope::Global, Some(Duration::from_secs(60)), None, None);
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let v = SQUARES.get_with(7, async { 49 }).await.unwrap();
/// assert_eq!(v, 49);
/// assert_eq!(SQUARES.stats().loads, 1);
/// # }
/// ```
pub struct Resource<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    name: &'static str,
    scope: Scope,
    ttl: Option<Duration>,
    max_entries: Option<u64>,
    on_release: Option<ReleaseFn<V>>,
    /// Background refresh: how long past the ttl a value may be served (`None`: one ttl), and
    /// how to tell that a refresh returned the same instance.
    refresh: Option<RefreshSpec<V>>,
    id: OnceLock<u64>,
    /// The releaser (name and hook) every cache of this resource shares in the first runtime
    /// that used it (other runtimes keep theirs, see `Runtime::releaser`).
    shared: OnceLock<Arc<Releaser<V>>>,
    /// The global cache of the first runtime that used this resource: a hit on it needs no
    /// map lookup and no reference-count traffic.
    fast: OnceLock<(u64, ResourceCache<K, V>)>,
    /// Shared through Redis with other instances (global scope only).
    #[cfg(feature = "redis")]
    tier: Option<crate::redis::SharedSpec<K, V>>,
}

impl<K, V> Resource<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Describes a resource. `ttl` and `max_entries` apply to each scope instance separately.
    pub const fn new(
        name: &'static str,
        scope: Scope,
        ttl: Option<Duration>,
        max_entries: Option<u64>,
        on_release: Option<ReleaseFn<V>>,
    ) -> Self {
        Resource {
            name,
            scope,
            ttl,
            max_entries,
            on_release,
            refresh: None,
            id: OnceLock::new(),
            shared: OnceLock::new(),
            fast: OnceLock::new(),
            #[cfg(feature = "redis")]
            tier: None,
        }
    }

    /// Shares this global resource's values with the other instances of the app through Redis
    /// (configured by `[redis]`, `REDIS_URL` or [`RuntimeBuilder::redis`](crate::RuntimeBuilder::redis)):
    /// a local miss reads Redis, or computes the value once for every instance; `invalidate`
    /// and `clear` reach every instance. Hits stay local. Without Redis configured, or while it
    /// is away, the resource behaves as an unshared one. Ignored for a session resource.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub const fn shared(mut self, spec: crate::redis::SharedSpec<K, V>) -> Self {
        self.tier = Some(spec);
        self
    }

    /// What `#[cached_resource(shared = true)]` calls: [`shared`](Self::shared) with generated
    /// codecs, and a compile error naming the `redis` feature when it is off.
    #[doc(hidden)]
    pub const fn __shared<F: crate::macro_support::RedisFeature>(
        self,
        fns: crate::macro_support::SharedFns<K, V>,
    ) -> Self {
        #[cfg(feature = "redis")]
        {
            self.shared(crate::redis::SharedSpec::from_fns(fns))
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = fns;
            self
        }
    }

    /// Whether misses go through the shared tier (a global resource declared `shared`).
    #[inline]
    fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.tier.is_some() && matches!(self.scope, Scope::Global)
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// Refreshes values in the background (stale-while-revalidate): a value past its ttl is
    /// served for `max_stale` more (`None`: one ttl) while one refresh per key runs, through
    /// [`try_get_refreshing`](Self::try_get_refreshing) and
    /// [`get_or_run_refreshing`](Self::get_or_run_refreshing) (other calls refresh in place: the
    /// caller that meets the stale value waits for its refresh). Needs a ttl.
    ///
    /// The old value is released after the new one is stored, unless `same_instance` says the
    /// refresh returned the very same instance (see [`same_instance`](Self::same_instance)).
    ///
    /// ```
    /// use connscope::{Resource, Scope};
    /// use std::{sync::Arc, time::Duration};
    ///
    /// static RATES: Resource<String, Arc<f64>> =
    ///     Resource::new("rates", Scope::Global, Some(Duration::from_secs(60)), None, None)
    ///         .refresh_in_background(Some(Duration::from_secs(600)))
    ///         .same_instance(Arc::ptr_eq);
    /// ```
    pub const fn refresh_in_background(mut self, max_stale: Option<Duration>) -> Self {
        let same = match self.refresh {
            Some((_, same)) => same,
            None => never_same::<V>,
        };
        self.refresh = Some((max_stale, same));
        self
    }

    /// How to tell that a refresh returned the instance it replaces (e.g. `Arc::ptr_eq`): that
    /// value is then not released, since it is still cached. Without it, every refresh
    /// releases the old value.
    pub const fn same_instance(mut self, same: fn(&V, &V) -> bool) -> Self {
        let max_stale = match self.refresh {
            Some((max_stale, _)) => max_stale,
            None => None,
        };
        self.refresh = Some((max_stale, same));
        self
    }

    /// The resource's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The resource's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn id(&self) -> u64 {
        *self.id.get_or_init(next_resource_id)
    }

    fn config(&self, rt: &Runtime) -> CacheConfig<V> {
        let tracker = &rt.shared.tracker;
        // Made once per runtime and shared by this resource's caches in every session: the
        // first runtime that uses it keeps it here, any other in the runtime itself.
        let make = || Releaser {
            resource: Arc::from(self.name),
            hook: self.on_release.map(|f| Arc::new(f) as crate::cache::ReleaseHook<V>),
            same_instance: self.refresh.map(|(_, same)| same),
            tracker: Arc::clone(tracker),
        };
        let first = self.shared.get_or_init(|| Arc::new(make()));
        let shared = if Arc::ptr_eq(&first.tracker, tracker) {
            Arc::clone(first)
        } else {
            rt.releaser(self.id(), make)
        };
        CacheConfig {
            name: Arc::clone(&shared.resource),
            ttl: self.ttl,
            max_entries: self.max_entries,
            on_release: shared.hook.clone(),
            releaser: Some(shared),
            concurrent: false,
            refresh: self.refresh.and_then(|(max_stale, same_instance)| {
                Some(Refresh { max_stale: max_stale.or(self.ttl)?, same_instance })
            }),
        }
    }

    /// The cache of the current scope: the current session's (session scope), or the current
    /// runtime's (global scope; the session's runtime inside a session, else the default one).
    pub fn cache(&'static self) -> Result<ResourceCache<K, V>, Error> {
        self.with_cache(|c| c.clone())
    }

    fn with_cache<R>(&'static self, f: impl FnOnce(&ResourceCache<K, V>) -> R) -> Result<R, Error> {
        let key = self.id();
        Session::with_current(|session| match (self.scope, session) {
            (Scope::Session, None) => Err(Error::NoActiveSession { what: self.name.to_owned() }),
            (Scope::Session, Some(s)) => {
                s.check_active()?;
                let rt = s.runtime();
                let config = || {
                    rt.ensure_maintainer();
                    self.config(rt)
                };
                Ok(f(&s.inner.caches.get_or_create(key, &rt.shared.tracker, config)))
            }
            (Scope::Global, s) => {
                let rt = match s {
                    Some(s) => s.runtime(),
                    None => Runtime::global(),
                };
                if let Some((id, cache)) = self.fast.get()
                    && *id == rt.id()
                {
                    return Ok(f(cache));
                }
                if rt.is_shut_down() {
                    return Err(Error::RuntimeShutDown);
                }
                let cache = rt.global_cache(key, || self.config(rt));
                let _ = self.fast.set((rt.id(), cache.clone()));
                Ok(f(&cache))
            }
        })
    }

    /// A hit in the current session's cache, looked up in place (no reference counting). `None`
    /// on a miss (not counted) or when there is no cache or usable session: the caller then takes
    /// the full path, which counts the miss.
    fn session_hit(&'static self, key: &K) -> Option<V> {
        if self.scope != Scope::Session {
            return None;
        }
        let id = *self.id.get()?;
        Session::with_current(|s| {
            let s = s.filter(|s| !s.is_ended())?;
            s.inner.caches.hit(id, key)
        })
    }

    /// The fast path: the first runtime's global cache, borrowed for `'static`.
    fn fast_cache(&'static self) -> Option<&'static ResourceCache<K, V>> {
        if self.scope != Scope::Global {
            return None;
        }
        let (id, cache) = self.fast.get()?;
        let rt_id = Session::with_current(|s| s.map_or_else(|| Runtime::global().id(), |s| s.runtime().id()));
        (*id == rt_id).then_some(cache)
    }

    /// The value for `key` in the current scope, loading it on a miss (single flight). Only
    /// `Ok` is cached.
    pub async fn try_get_with<E, F>(&'static self, key: K, loader: F) -> Result<V, LoadError<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(cache) = self.fast_cache() {
            return cache.try_get_with(key, loader).await;
        }
        if let Some(v) = self.session_hit(&key) {
            return Ok(v);
        }
        let cache = self.cache().map_err(LoadError::Scope)?;
        cache.try_get_with(key, loader).await
    }

    /// The value for `key` in the current scope, loading it on a miss (single flight).
    pub async fn get_with<F>(&'static self, key: K, loader: F) -> Result<V, Error>
    where
        F: Future<Output = V>,
    {
        if let Some(cache) = self.fast_cache() {
            return cache.get_with(key, loader).await;
        }
        if let Some(v) = self.session_hit(&key) {
            return Ok(v);
        }
        self.cache()?.get_with(key, loader).await
    }

    /// Like [`try_get_with`](Self::try_get_with), returning the caller's own error type: the
    /// caller whose loader failed gets its error untouched; callers that waited for it, and
    /// scope errors (no session, session ended, shut down), arrive through `E: From<Error>`.
    /// This is what a `#[cached_resource]` function returning `Result<T, E>` calls.
    // Not `async fn`s: an `async fn` keeps a second copy of each by-value argument in its state
    // (the argument, then the local it is moved into), which would double the size of a large
    // loader future. An `async move` block uses its captures in place; the loader is boxed on a
    // miss only, so a hit allocates nothing.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
    pub fn try_get<E, F>(&'static self, key: K, loader: F) -> impl Future<Output = Result<V, E>>
    where
        F: Future<Output = Result<V, E>>,
        E: From<Error> + std::fmt::Display,
    {
        async move {
            if let Some(cache) = self.fast_cache() {
                if let Some(v) = cache.fresh(&key) {
                    return Ok(v);
                }
                return cache.miss_own_error(key, Box::pin(loader)).await;
            }
            if let Some(v) = self.session_hit(&key) {
                return Ok(v);
            }
            match self.cache() {
                Ok(cache) => match cache.fresh(&key) {
                    Some(v) => Ok(v),
                    None => cache.miss_own_error(key, Box::pin(loader)).await,
                },
                Err(e) => Err(e.into()),
            }
        }
    }

    /// Like [`try_get`](Self::try_get), for a loader with any error type (`sqlx::Error`,
    /// `String`, ...): nothing is asked of `E`, because connscope never makes one up. A failed
    /// load is not shared: a caller that waited for it runs its own loader next (one at a time
    /// per key), so every error a caller receives is the one its own loader returned. Where there
    /// is no usable scope (no session for a session resource, runtime shut down), the loader
    /// runs uncached. This is what a `scope = "global"` `#[cached_resource]` function returning
    /// `Result<T, E>` calls.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see `try_get`
    pub fn try_get_or_run<E, F>(&'static self, key: K, loader: F) -> impl Future<Output = Result<V, E>>
    where
        F: Future<Output = Result<V, E>>,
    {
        async move {
            if let Some(cache) = self.fast_cache() {
                if let Some(v) = cache.fresh(&key) {
                    return Ok(v);
                }
                if self.is_shared() {
                    let loader = self.shared_loader(cache, &key, loader);
                    return cache.miss_or_try(key, loader).await;
                }
                return cache.miss_or_try(key, Box::pin(loader)).await;
            }
            if let Some(v) = self.session_hit(&key) {
                return Ok(v);
            }
            match self.cache() {
                Ok(cache) => match cache.fresh(&key) {
                    Some(v) => Ok(v),
                    None if self.is_shared() => {
                        let loader = self.shared_loader(&cache, &key, loader);
                        cache.miss_or_try(key, loader).await
                    }
                    None => cache.miss_or_try(key, Box::pin(loader)).await,
                },
                Err(_) => Box::pin(loader).await,
            }
        }
    }

    /// The value for `key` in the current scope, loading it on a miss (single flight). Where
    /// there is no usable scope (no session for a session resource, runtime shut down), the
    /// loader runs uncached. This is what a `#[cached_resource]` function returning a plain
    /// `T` calls.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see `try_get`
    pub fn get_or_run<F>(&'static self, key: K, loader: F) -> impl Future<Output = V>
    where
        F: Future<Output = V>,
    {
        async move {
            if let Some(v) = self.session_hit(&key) {
                return v;
            }
            let cache = match self.fast_cache() {
                Some(cache) => std::borrow::Cow::Borrowed(cache),
                None => match self.cache() {
                    Ok(cache) => std::borrow::Cow::Owned(cache),
                    Err(_) => return Box::pin(loader).await,
                },
            };
            match cache.fresh(&key) {
                Some(v) => v,
                None if self.is_shared() => {
                    let loader =
                        self.shared_loader(&cache, &key, async { Ok::<V, Infallible>(loader.await) });
                    match cache.miss_or_try(key, loader).await {
                        Ok(v) => v,
                        Err(never) => match never {},
                    }
                }
                None => cache.miss_or_run(key, Box::pin(loader)).await,
            }
        }
    }

    /// Like [`try_get`](Self::try_get), refreshing in the background (see
    /// [`refresh_in_background`](Self::refresh_in_background)): a stale value is returned at
    /// once while `loader`, moved to a task of its own, refreshes it. This is what a
    /// `#[cached_resource(refresh = "background")]` function returning `Result<T, E>` calls.
    // Not `async fn`s, for the reason `try_get` gives: a hit never builds the refresh path's
    // future, and the loader is not copied into a second state.
    #[allow(clippy::manual_async_fn)]
    pub fn try_get_refreshing<E, F>(&'static self, key: K, loader: F) -> impl Future<Output = Result<V, E>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: From<Error> + std::fmt::Display + Send + 'static,
    {
        async move {
            if let Some(cache) = self.fast_cache() {
                return match cache.fresh(&key) {
                    Some(v) => Ok(v),
                    None => {
                        let loader = self.refresh_loader(cache, &key, loader);
                        cache.stale_or_load_own_error(key, loader).await
                    }
                };
            }
            if let Some(v) = self.session_hit(&key) {
                return Ok(v);
            }
            let cache = self.cache()?;
            match cache.fresh(&key) {
                Some(v) => Ok(v),
                None => {
                    let loader = self.refresh_loader(&cache, &key, loader);
                    cache.stale_or_load_own_error(key, loader).await
                }
            }
        }
    }

    /// Like [`try_get_or_run`](Self::try_get_or_run) (any error type), refreshing in the
    /// background (see [`try_get_refreshing`](Self::try_get_refreshing)). This is what a
    /// `scope = "global"` `#[cached_resource(refresh = "background")]` function returning
    /// `Result<T, E>` calls.
    #[allow(clippy::manual_async_fn)] // see `try_get_refreshing`
    pub fn try_get_or_run_refreshing<E, F>(
        &'static self,
        key: K,
        loader: F,
    ) -> impl Future<Output = Result<V, E>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        async move {
            if let Some(cache) = self.fast_cache() {
                return match cache.fresh(&key) {
                    Some(v) => Ok(v),
                    None => {
                        let loader = self.refresh_loader(cache, &key, loader);
                        cache.stale_or_try(key, loader).await
                    }
                };
            }
            if let Some(v) = self.session_hit(&key) {
                return Ok(v);
            }
            match self.cache() {
                Ok(cache) => match cache.fresh(&key) {
                    Some(v) => Ok(v),
                    None => {
                        let loader = self.refresh_loader(&cache, &key, loader);
                        cache.stale_or_try(key, loader).await
                    }
                },
                Err(_) => Box::pin(loader).await,
            }
        }
    }

    /// Like [`get_or_run`](Self::get_or_run), refreshing in the background (see
    /// [`try_get_refreshing`](Self::try_get_refreshing)).
    #[allow(clippy::manual_async_fn)] // see `try_get_refreshing`
    pub fn get_or_run_refreshing<F>(&'static self, key: K, loader: F) -> impl Future<Output = V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        async move {
            if let Some(v) = self.session_hit(&key) {
                return v;
            }
            let cache = match self.fast_cache() {
                Some(cache) => std::borrow::Cow::Borrowed(cache),
                None => match self.cache() {
                    Ok(cache) => std::borrow::Cow::Owned(cache),
                    Err(_) => return Box::pin(loader).await,
                },
            };
            match cache.fresh(&key) {
                Some(v) => v,
                None if self.is_shared() => {
                    let loader =
                        self.refresh_loader(&cache, &key, async { Ok::<V, Infallible>(loader.await) });
                    match cache.stale_or_try(key, loader).await {
                        Ok(v) => v,
                        Err(never) => match never {},
                    }
                }
                None => cache.stale_or_run(key, loader).await,
            }
        }
    }

    /// Loads each of `keys` that the current scope does not hold yet (or holds stale), ahead of
    /// use, with `load(key)`; returns how many loaded. A failed load is skipped (nothing is
    /// cached for it) and counted in [`stats`](Self::stats).
    ///
    /// ```
    /// use connscope::{Resource, Scope};
    ///
    /// static SQUARES: Resource<u64, u64> = Resource::new("warm_squares", Scope::Global, None, None, None);
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loaded = SQUARES.warm(1..=3, |k| async move { Ok::<_, std::io::Error>(k * k) }).await;
    /// assert_eq!(loaded, 3);
    /// assert_eq!(SQUARES.get_with(2, async { unreachable!() }).await.unwrap(), 4);
    /// # }
    /// ```
    pub async fn warm<I, F, Fut, E>(&'static self, keys: I, load: F) -> usize
    where
        I: IntoIterator<Item = K>,
        F: Fn(K) -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let Ok(cache) = self.cache() else { return 0 };
        let mut loaded = 0;
        for key in keys {
            let before = cache.stats().loads;
            let fut = load(key.clone());
            if cache.try_get_with(key, fut).await.is_ok() && cache.stats().loads > before {
                loaded += 1;
            }
        }
        loaded
    }

    /// Removes `key` from the current scope's cache, awaiting its release hook. Returns whether
    /// a value was there (false also when there is no current session for a session resource).
    ///
    /// A [`shared`](Self::shared) resource also removes it from Redis and from every other
    /// instance (within the invalidation bound; kept and sent later while Redis is away).
    pub async fn invalidate(&'static self, key: &K) -> bool {
        let removed = match self.cache() {
            Ok(cache) => cache.invalidate(key).await,
            Err(_) => false,
        };
        #[cfg(feature = "redis")]
        self.broadcast(Some(key)).await;
        removed
    }

    /// Clears the current scope's cache, awaiting every release hook. A
    /// [`shared`](Self::shared) resource is cleared in Redis and on every other instance too.
    pub async fn clear(&'static self) -> ReleaseReport {
        let report = match self.cache() {
            Ok(cache) => cache.clear().await,
            Err(_) => ReleaseReport::default(),
        };
        #[cfg(feature = "redis")]
        self.broadcast(None).await;
        report
    }

    /// Statistics of the current scope's cache (zero when there is none yet).
    pub fn stats(&'static self) -> StatsSnapshot {
        self.with_cache(|c| c.stats()).unwrap_or_default()
    }

    /// Statistics summed over the global scope and every live session of `rt`.
    pub fn stats_in(&'static self, rt: &Runtime) -> StatsSnapshot {
        rt.resource_stats(self.id())
    }
}

/// The shared tier's side of a resource: misses through Redis, invalidations broadcast.
impl<K, V> Resource<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The miss loader of a shared resource: Redis first, the body once across instances. The
    /// plain loader when Redis is not configured or the key cannot be encoded. (Boxed: a hit
    /// never builds it; `Send` when the loader is.)
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    fn shared_loader<'a, E, F>(
        &'static self,
        cache: &ResourceCache<K, V>,
        key: &K,
        loader: F,
    ) -> Pin<Box<impl Future<Output = Result<V, E>> + 'a>>
    where
        F: Future<Output = Result<V, E>> + 'a,
        E: 'a,
    {
        #[cfg(feature = "redis")]
        let through = self.tier_of_current_runtime().and_then(|(tier, spec, resource)| {
            let key = (spec.encode_key)(key)?;
            tier.register(&resource, cache, spec.decode_key);
            let keys = crate::redis::Keys::new(&tier.settings.prefix, &resource);
            let codec = crate::redis::Codec { encode: spec.encode, decode: spec.decode };
            Some((tier, keys, key, codec))
        });
        let ttl = self.ttl;
        Box::pin(async move {
            #[cfg(feature = "redis")]
            if let Some((tier, keys, key, codec)) = through {
                // A value read from Redis is kept here no longer than Redis keeps it.
                let (value, kept) = crate::redis::load_with_age(tier, keys, key, ttl, codec, loader).await?;
                if let Some(kept) = kept {
                    crate::cache::fresh_for_at_most(kept);
                }
                return Ok(value);
            }
            let _ = ttl;
            loader.await
        })
    }

    /// The loader of a background refresh (or of the first load): through the shared tier for
    /// a shared resource (a refresh another instance stored meanwhile is read, not recomputed),
    /// else the plain one.
    fn refresh_loader<E, F>(
        &'static self,
        cache: &ResourceCache<K, V>,
        key: &K,
        loader: F,
    ) -> Pin<Box<dyn Future<Output = Result<V, E>> + Send>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        if self.is_shared() { self.shared_loader(cache, key, loader) } else { Box::pin(loader) }
    }

    /// The current runtime's shared tier, with this resource's spec and wire name.
    #[cfg(feature = "redis")]
    fn tier_of_current_runtime(
        &'static self,
    ) -> Option<(Arc<crate::redis::Tier>, crate::redis::SharedSpec<K, V>, String)> {
        let spec = self.tier.filter(|_| self.is_shared())?;
        let rt =
            Session::with_current(|s| s.map_or_else(|| Runtime::global().clone(), |s| s.runtime().clone()));
        let tier = Arc::clone(rt.tier()?);
        Some((tier, spec, crate::redis::resource_id(self.name, spec.version)))
    }

    /// Tells Redis and every other instance that `key` (`None`: every key) was removed. Runs in
    /// a task of its own: a caller dropped halfway does not stop it.
    #[cfg(feature = "redis")]
    async fn broadcast(&'static self, key: Option<&K>) {
        let Some((tier, spec, resource)) = self.tier_of_current_runtime() else { return };
        let keys = crate::redis::Keys::new(&tier.settings.prefix, &resource);
        let key = match key {
            Some(k) => match (spec.encode_key)(k) {
                Some(bytes) => Some(bytes),
                None => return,
            },
            None => None,
        };
        let _ = crate::cache::own_runtime()
            .spawn(async move {
                match key {
                    Some(key) => tier.invalidate(&resource, &keys, key).await,
                    None => tier.clear(&resource, &keys).await,
                }
            })
            .await;
    }
}
