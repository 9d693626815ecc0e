//! A scope's set of caches (the runtime's global one, or one session's): created on first use,
//! swept by maintenance, closed as a whole when the scope ends.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use super::{BoxFuture, CacheConfig, ReleaseTracker, ResourceCache, Timers};
use crate::error::{Error, ReleaseReport};
use crate::stats::{RemovalCause, StatsSnapshot};

/// What the runtime needs of a cache without knowing its key and value types.
pub(crate) trait ErasedCache: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn close(&self, cause: RemovalCause, reason: Error) -> BoxFuture<'_, ReleaseReport>;
    fn stats(&self) -> StatsSnapshot;
}

impl<K, V> ErasedCache for ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn close(&self, cause: RemovalCause, reason: Error) -> BoxFuture<'_, ReleaseReport> {
        Box::pin(ResourceCache::close(self, cause, reason))
    }
    fn stats(&self) -> StatsSnapshot {
        ResourceCache::stats(self)
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
    closed: Option<(RemovalCause, Error)>,
}

/// Identifies a cache inside a scope: a resource id. Ids are unique per resource and settings
/// (a connection type's id covers its ttl and max_entries), so two resources with different
/// settings never share (or clear) one cache.
pub(crate) type CacheKey = u64;

/// Resource ids are small sequential integers: hash them as themselves.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<CacheKey, Arc<dyn ErasedCache>, std::hash::BuildHasherDefault<IdHasher>>;

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
            return downcast(&**cache);
        }
        let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
        let Caches { map, closed } = &mut *caches;
        let cache = map.entry(key).or_insert_with(|| {
            let cache = ResourceCache::<K, V>::new(config(), Arc::clone(tracker), Arc::clone(&self.timers));
            if let Some((cause, reason)) = closed {
                cache.close_empty(*cause, reason.clone());
            }
            Arc::new(cache)
        });
        downcast(&**cache)
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

    /// Closes every cache, and every cache created from now on: releases all values (awaiting
    /// their hooks) and refuses new loads. A second close finds nothing to release.
    pub(crate) async fn close(&self, cause: RemovalCause, reason: Error) -> ReleaseReport {
        let caches: Vec<_> = {
            let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
            if caches.closed.is_some() {
                return ReleaseReport::default();
            }
            caches.closed = Some((cause, reason.clone()));
            caches.map.values().cloned().collect()
        };
        let mut report = ReleaseReport::default();
        for cache in caches {
            report.merge(cache.close(cause, reason.clone()).await);
        }
        report
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Caches> {
        self.caches.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn downcast<K, V>(cache: &dyn ErasedCache) -> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    match cache.as_any().downcast_ref::<ResourceCache<K, V>>() {
        Some(c) => c.clone(),
        // Resource ids are unique per (resource, types): a mismatch is a bug in connscope.
        None => unreachable!("connscope: cache registered with other key/value types"),
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
}
