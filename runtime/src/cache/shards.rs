//! Where a cache's store lives: one [`State`] under one lock; for a global cache, with a read
//! index beside it (see `index`) that hits use without the lock, counting themselves per thread,
//! so that threads hitting the cache share no lock and no counter, whatever the keys and
//! whether or not it has `max_entries` (exact LRU: stamps on the values, the order corrected
//! under the lock when something must be evicted).
//!
//! A session's caches keep the plain store: one user rarely hits from two threads at once, and
//! a lock costs less memory than an index.

use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::{Hits, Index};
use super::state::State;
use crate::stats::{CacheStats, StatsSnapshot};

/// A cache's store.
pub(super) enum Shards<K, V> {
    /// A session's cache: hits take the lock and count in the cache's statistics.
    One(Mutex<State<K, V>>),
    /// A global cache: changes take the lock, hits read the index.
    Indexed { state: Mutex<State<K, V>>, index: Arc<Index<K, V>> },
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    /// The store `make` builds, with a read index if `concurrent` (many threads may hit it).
    pub(super) fn new(concurrent: bool, make: impl Fn() -> State<K, V>) -> Self {
        if !concurrent {
            return Shards::One(Mutex::new(make()));
        }
        let state = make().indexed();
        let index = state.index().map(Arc::clone).unwrap_or_else(|| unreachable!("an indexed store"));
        Shards::Indexed { state: Mutex::new(state), index }
    }

    /// The store, locked, and where hits and misses found under the lock count.
    pub(super) fn lock(&self, _key: &K) -> (MutexGuard<'_, State<K, V>>, Tally<'_>) {
        (lock(self.state()), Tally::Stats)
    }

    fn state(&self) -> &Mutex<State<K, V>> {
        match self {
            Shards::One(state) | Shards::Indexed { state, .. } => state,
        }
    }

    /// The fresh value of `key` from the read index, without the lock (global caches); `None`
    /// sends the caller to the locked path. Counts nothing (the tally says where to count).
    pub(super) fn hit_unlocked(&self, key: &K) -> Option<(V, Tally<'_>)> {
        match self {
            Shards::One(_) => None,
            Shards::Indexed { index, .. } => index.hit(key).map(|v| (v, Tally::Index(&index.hits))),
        }
    }

    /// Every store (locked one at a time by the caller).
    pub(super) fn all(&self) -> impl Iterator<Item = &Mutex<State<K, V>>> {
        std::iter::once(self.state())
    }

    /// Every store, without locking (the cache is being dropped).
    pub(super) fn all_mut(&mut self) -> Vec<&mut State<K, V>> {
        match self {
            Shards::One(state) | Shards::Indexed { state, .. } => {
                vec![state.get_mut().unwrap_or_else(|p| p.into_inner())]
            }
        }
    }

    /// The cache's statistics: `stats` plus the hits the store counted under its lock and the
    /// hits the index answered.
    pub(super) fn snapshot(&self, stats: &CacheStats) -> StatsSnapshot {
        let mut snapshot = stats.snapshot();
        snapshot.hits += lock(self.state()).hits();
        if let Shards::Indexed { index, .. } = self {
            snapshot.hits += index.hits.sum();
        }
        snapshot
    }
}

/// Where a lookup counts its hit or miss.
#[derive(Clone, Copy)]
pub(super) enum Tally<'a> {
    /// In the cache's statistics (found under the lock).
    Stats,
    /// A hit answered by the read index: in its per-thread counters.
    Index(&'a Hits),
    /// A hit already counted in the store, under its lock.
    Counted,
}

impl Tally<'_> {
    pub(super) fn hit(self, stats: &CacheStats) {
        match self {
            Tally::Stats => stats.hit(),
            Tally::Index(hits) => hits.count(),
            Tally::Counted => {}
        }
    }

    pub(super) fn miss(self, stats: &CacheStats) {
        stats.miss();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
