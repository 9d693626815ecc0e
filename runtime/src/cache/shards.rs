//! Where a cache's store lives: one [`State`] under one lock, or, for a global cache without
//! `max_entries`, several by key hash, each on its own cache line with its own hit and miss
//! counters, so that threads hitting different keys share nothing (no lock, no counter).
//!
//! A bounded cache keeps one store: its `max_entries` is exact LRU over all its values, which
//! needs one order. A session's caches keep one too: one user rarely hits from two threads at
//! once, and one store costs no more than a plain lock.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use super::state::{KeyHasher, State};
use crate::stats::{CacheStats, StatsSnapshot};

/// How many stores a concurrent cache splits into.
const SHARDS: usize = 16;

/// A cache's store or stores.
pub(super) enum Shards<K, V> {
    One(Mutex<State<K, V>>),
    Many { hasher: KeyHasher, shards: Box<[Shard<K, V>]> },
}

/// One of several stores, alone on its cache lines.
#[repr(align(128))]
pub(super) struct Shard<K, V> {
    state: Mutex<State<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    /// One store, or (`concurrent`) [`SHARDS`] of them. `make` builds each.
    pub(super) fn new(concurrent: bool, make: impl Fn() -> State<K, V>) -> Self {
        if !concurrent {
            return Shards::One(Mutex::new(make()));
        }
        let shards = (0..SHARDS)
            .map(|_| Shard { state: Mutex::new(make()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
            .collect();
        Shards::Many { hasher: KeyHasher::default(), shards }
    }

    /// The store of `key`, locked, and where its hits and misses count.
    pub(super) fn lock(&self, key: &K) -> (MutexGuard<'_, State<K, V>>, Tally<'_>) {
        match self {
            Shards::One(state) => (lock(state), Tally::Stats),
            Shards::Many { hasher, shards } => {
                let shard = &shards[(hasher.hash_one(key) >> 32) as usize % shards.len()];
                (lock(&shard.state), Tally::Shard(&shard.hits, &shard.misses))
            }
        }
    }

    /// Every store, in order (locked one at a time by the caller).
    pub(super) fn all(&self) -> impl Iterator<Item = &Mutex<State<K, V>>> {
        let (one, many) = match self {
            Shards::One(state) => (Some(state), None),
            Shards::Many { shards, .. } => (None, Some(shards.iter().map(|s| &s.state))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Every store, without locking (the cache is being dropped).
    pub(super) fn all_mut(&mut self) -> Vec<&mut State<K, V>> {
        match self {
            Shards::One(state) => vec![state.get_mut().unwrap_or_else(|p| p.into_inner())],
            Shards::Many { shards, .. } => {
                shards.iter_mut().map(|s| s.state.get_mut().unwrap_or_else(|p| p.into_inner())).collect()
            }
        }
    }

    /// The cache's statistics: `stats` plus the stores' own hit and miss counts.
    pub(super) fn snapshot(&self, stats: &CacheStats) -> StatsSnapshot {
        let mut snapshot = stats.snapshot();
        if let Shards::Many { shards, .. } = self {
            for s in shards.iter() {
                snapshot.hits += s.hits.load(Relaxed);
                snapshot.misses += s.misses.load(Relaxed);
            }
        }
        snapshot
    }
}

/// Where a lookup counts its hit or miss.
#[derive(Clone, Copy)]
pub(super) enum Tally<'a> {
    /// In the cache's statistics (a single store).
    Stats,
    /// In the key's store: (hits, misses).
    Shard(&'a AtomicU64, &'a AtomicU64),
}

impl Tally<'_> {
    pub(super) fn hit(self, stats: &CacheStats) {
        match self {
            Tally::Stats => stats.hit(),
            Tally::Shard(hits, _) => {
                hits.fetch_add(1, Relaxed);
            }
        }
    }

    pub(super) fn miss(self, stats: &CacheStats) {
        match self {
            Tally::Stats => stats.miss(),
            Tally::Shard(_, misses) => {
                misses.fetch_add(1, Relaxed);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
