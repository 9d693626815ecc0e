//! A scope's set of caches (the runtime's global one, or one session's): created on first use,
//! swept by maintenance, closed as a whole when the scope ends.

use std::any::Any;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use super::state::Closed;
use super::{BoxFuture, CacheConfig, Inner, ReleaseTracker, ResourceCache, Timers};
use crate::error::{Error, ReleaseReport};
use crate::stats::{RemovalCause, StatsSnapshot};

/// What the runtime needs of a cache without knowing its key and value types. Implemented by
/// the cache's shared state itself, so a scope holds each cache through one allocation.
pub(crate) trait ErasedCache: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn close(self: Arc<Self>, closed: Arc<Closed>) -> BoxFuture<'static, ReleaseReport>;
    fn stats(&self) -> StatsSnapshot;
    /// The cache's name (read-only; for exporting statistics).
    fn name(&self) -> &str;
}

impl<K, V> ErasedCache for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn close(self: Arc<Self>, closed: Arc<Closed>) -> BoxFuture<'static, ReleaseReport> {
        Box::pin(async move { ResourceCache { inner: self }.close_with(closed).await })
    }
    fn stats(&self) -> StatsSnapshot {
        self.snapshot()
    }
    fn name(&self) -> &str {
        &self.releaser.resource
    }
}

/// The caches of one scope, keyed by a resource id.
pub(crate) struct CacheSet {
    caches: RwLock<Caches>,
    /// The runtime's deadline queue, given to each cache.
    timers: Arc<Timers>,
}

#[derive(Default)]
struct Caches {
    map: Map,
    /// Set once the scope closed: a cache created afterwards is born closed, under the same
    /// lock, so no cache can slip past a close.
    closed: Option<Arc<Closed>>,
}

/// Identifies a cache inside a scope: a resource id. Ids are unique per resource and settings
/// (a connection type's id covers its ttl and max_entries), so two resources with different
/// settings never share (or clear) one cache.
pub(crate) type CacheKey = u64;

/// The caches of a scope, sorted by id: a session holds a handful, so a small vector (24 bytes
/// when empty, binary search) beats a hash map in memory and in speed.
#[derive(Default)]
struct Map(Vec<(CacheKey, Arc<dyn ErasedCache>)>);

impl Map {
    fn get(&self, key: &CacheKey) -> Option<&Arc<dyn ErasedCache>> {
        self.0.binary_search_by_key(key, |(k, _)| *k).ok().map(|i| &self.0[i].1)
    }

    fn get_or_insert_with(
        &mut self,
        key: CacheKey,
        make: impl FnOnce() -> Arc<dyn ErasedCache>,
    ) -> &Arc<dyn ErasedCache> {
        let i = match self.0.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => i,
            Err(i) => {
                // Grown by one: a session holds a handful of caches, and doubling would leave
                // a quarter of the vector unused on average.
                self.0.reserve_exact(1);
                self.0.insert(i, (key, make()));
                i
            }
        };
        &self.0[i].1
    }

    fn iter(&self) -> impl Iterator<Item = (&CacheKey, &Arc<dyn ErasedCache>)> {
        self.0.iter().map(|(k, c)| (k, c))
    }

    fn values(&self) -> impl Iterator<Item = &Arc<dyn ErasedCache>> {
        self.0.iter().map(|(_, c)| c)
    }
}

impl CacheSet {
    /// An empty set whose caches schedule their deadlines on `timers`.
    pub(crate) fn new(timers: Arc<Timers>) -> Self {
        CacheSet { caches: RwLock::default(), timers }
    }

    /// The cache for `key`, created with `config` on first use.
    pub(crate) fn get_or_create<K, V>(
        &self,
        key: CacheKey,
        tracker: &Arc<ReleaseTracker>,
        config: impl FnOnce() -> CacheConfig<V>,
    ) -> ResourceCache<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        if let Some(cache) = self.read().map.get(&key) {
            return downcast(cache);
        }
        let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
        let Caches { map, closed } = &mut *caches;
        let cache = map.get_or_insert_with(key, || {
            let cache = ResourceCache::<K, V>::new(config(), Arc::clone(tracker), Arc::clone(&self.timers));
            if let Some(closed) = closed {
                cache.close_empty(closed);
            }
            cache.inner
        });
        downcast(cache)
    }

    /// The cache for `key`, if it was created.
    pub(crate) fn existing<K, V>(&self, key: CacheKey) -> Option<ResourceCache<K, V>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        self.read().map.get(&key).map(downcast)
    }

    /// A hit on the cache `id`, looked up in place (no reference counting); `None` on a miss,
    /// which is not counted (the caller's full path counts it), or when the cache does not exist.
    pub(crate) fn hit<K, V>(&self, id: CacheKey, key: &K) -> Option<V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let caches = self.read();
        caches.map.get(&id)?.as_any().downcast_ref::<Inner<K, V>>()?.hit_only(key)
    }

    /// Sum of the statistics of the caches of resource `id`.
    pub(crate) fn stats_of(&self, id: u64) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for (key, cache) in self.read().map.iter() {
            if *key == id {
                total.add(&cache.stats());
            }
        }
        total
    }

    /// The name and statistics of every cache of this scope (read-only: for exporting them).
    pub(crate) fn each_stats(&self, mut f: impl FnMut(&str, StatsSnapshot)) {
        for cache in self.read().map.values() {
            f(cache.name(), cache.stats());
        }
    }

    /// Closes every cache, and every cache created from now on: releases all values (awaiting
    /// their hooks) and refuses new loads. A second close finds nothing to release.
    pub(crate) async fn close(&self, cause: RemovalCause, reason: Error) -> ReleaseReport {
        let caches = {
            let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
            if caches.closed.is_some() {
                return ReleaseReport::default();
            }
            let closed = Arc::new(Closed { cause, reason });
            caches.closed = Some(Arc::clone(&closed));
            (closed, caches.map.values().cloned().collect::<Vec<_>>())
        };
        let (closed, caches) = caches;
        let mut report = ReleaseReport::default();
        for cache in caches {
            report.merge(cache.close(Arc::clone(&closed)).await);
        }
        report
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Caches> {
        self.caches.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn downcast<K, V>(cache: &Arc<dyn ErasedCache>) -> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    match Arc::clone(cache).into_any().downcast::<Inner<K, V>>() {
        Ok(inner) => ResourceCache { inner },
        // Resource ids are unique per (resource, types): a mismatch is a bug in connscope.
        Err(_) => unreachable!("connscope: cache registered with other key/value types"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cache_created_after_its_set_closed_is_closed_too() {
        let set = CacheSet::new(Arc::default());
        let tracker = Arc::new(ReleaseTracker::default());
        let before = set.get_or_create::<u32, u32>(1, &tracker, || CacheConfig::new("before"));
        before.insert(1, 1).await.unwrap();
        let report = set.close(RemovalCause::Shutdown, Error::RuntimeShutDown).await;
        assert_eq!(report.released, 1);
        // Created after the close took its snapshot (a request racing shutdown).
        let after = set.get_or_create::<u32, u32>(2, &tracker, || CacheConfig::new("after"));
        let err = after.get_with(1, async { 1 }).await.unwrap_err();
        assert!(matches!(err, Error::RuntimeShutDown), "{err}");
        assert!(matches!(after.insert(1, 1).await, Err(Error::RuntimeShutDown)));
        assert_eq!(after.stats().evicted_shutdown, 1, "the refused value was released as a shutdown");
        assert_eq!(after.get_or_run(1, async { 7 }).await, 7, "runs uncached, no panic");
        assert_eq!(set.close(RemovalCause::Shutdown, Error::RuntimeShutDown).await.released, 0);
    }

    /// A cache keeps one entry on the runtime's timers (its earliest deadline), however many
    /// values it stores: maintenance work follows what is due, not what was stored.
    #[tokio::test(start_paused = true)]
    async fn a_cache_keeps_one_timer_entry_however_many_values_it_stores() {
        let timers = Arc::new(Timers::default());
        let set = CacheSet::new(Arc::clone(&timers));
        let tracker = Arc::new(ReleaseTracker::default());
        let cache = set.get_or_create::<u32, u32>(1, &tracker, || {
            let mut c = CacheConfig::new("ttl");
            c.ttl = Some(std::time::Duration::from_secs(60));
            c
        });
        for k in 0..10_000 {
            cache.insert(k % 100, k).await.unwrap();
            tokio::time::advance(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(timers.len(), 1);
        assert_eq!(cache.len().await, 100);
    }
}
