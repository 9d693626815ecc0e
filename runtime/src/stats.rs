//! Per-cache statistics: hits, misses, loads, failures, evictions by cause, releases, reconnects.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a value left a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its TTL passed.
    Expired,
    /// `max_entries` was exceeded; it was the least recently used.
    Size,
    /// `invalidate` of its key, or `clear`.
    Explicit,
    /// A new value was stored under its key.
    Replaced,
    /// Its session ended.
    SessionEnd,
    /// The runtime shut down.
    Shutdown,
}

/// Live counters of one cache. Read a consistent-enough copy with [`CacheStats::snapshot`].
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    expired: AtomicU64,
    size: AtomicU64,
    explicit: AtomicU64,
    replaced: AtomicU64,
    session_end: AtomicU64,
    shutdown: AtomicU64,
    releases: AtomicU64,
    release_failures: AtomicU64,
    reconnects: AtomicU64,
    retries: AtomicU64,
}

/// A copy of a cache's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found no live value.
    pub misses: u64,
    /// Loader runs (a single-flighted miss counts once).
    pub loads: u64,
    /// Loader runs that returned an error or panicked (nothing was cached).
    pub load_failures: u64,
    /// Values removed because their TTL passed.
    pub evicted_expired: u64,
    /// Values removed by `max_entries`.
    pub evicted_size: u64,
    /// Values removed by invalidate / clear.
    pub evicted_explicit: u64,
    /// Values replaced by a new value under the same key.
    pub evicted_replaced: u64,
    /// Values released because their session ended.
    pub evicted_session_end: u64,
    /// Values released at shutdown.
    pub evicted_shutdown: u64,
    /// Release hooks that completed (successfully or not).
    pub releases: u64,
    /// Release hooks that returned an error or panicked.
    pub release_failures: u64,
    /// Connections found closed and reopened.
    pub reconnects: u64,
    /// Operations run again on a fresh connection after theirs was lost (`Conn::run`).
    pub retries: u64,
}

impl StatsSnapshot {
    /// All evictions, whatever the cause.
    pub fn evictions(&self) -> u64 {
        self.evicted_expired
            + self.evicted_size
            + self.evicted_explicit
            + self.evicted_replaced
            + self.evicted_session_end
            + self.evicted_shutdown
    }

    /// Adds `other` into `self` (e.g. to total a resource over all sessions).
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.loads += o.loads;
        self.load_failures += o.load_failures;
        self.evicted_expired += o.evicted_expired;
        self.evicted_size += o.evicted_size;
        self.evicted_explicit += o.evicted_explicit;
        self.evicted_replaced += o.evicted_replaced;
        self.evicted_session_end += o.evicted_session_end;
        self.evicted_shutdown += o.evicted_shutdown;
        self.releases += o.releases;
        self.release_failures += o.release_failures;
        self.reconnects += o.reconnects;
        self.retries += o.retries;
    }
}

impl CacheStats {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub(crate) fn load(&self) {
        self.loads.fetch_add(1, Relaxed);
    }
    pub(crate) fn load_failure(&self) {
        self.load_failures.fetch_add(1, Relaxed);
    }
    pub(crate) fn reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    pub(crate) fn released(&self, failed: bool) {
        self.releases.fetch_add(1, Relaxed);
        if failed {
            self.release_failures.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn evicted(&self, cause: RemovalCause) {
        let counter = match cause {
            RemovalCause::Expired => &self.expired,
            RemovalCause::Size => &self.size,
            RemovalCause::Explicit => &self.explicit,
            RemovalCause::Replaced => &self.replaced,
            RemovalCause::SessionEnd => &self.session_end,
            RemovalCause::Shutdown => &self.shutdown,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            loads: self.loads.load(Relaxed),
            load_failures: self.load_failures.load(Relaxed),
            evicted_expired: self.expired.load(Relaxed),
            evicted_size: self.size.load(Relaxed),
            evicted_explicit: self.explicit.load(Relaxed),
            evicted_replaced: self.replaced.load(Relaxed),
            evicted_session_end: self.session_end.load(Relaxed),
            evicted_shutdown: self.shutdown.load(Relaxed),
            releases: self.releases.load(Relaxed),
            release_failures: self.release_failures.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            retries: self.retries.load(Relaxed),
        }
    }
}

/// One cache's statistics in a [`Runtime::cache_stats`](crate::Runtime::cache_stats) listing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStatsEntry {
    /// The cache's name: a cached function's module path and name, a `Resource`'s name, or
    /// `connection<Type>` for a connection type's own cache.
    pub name: String,
    /// The scope: one cache in the runtime (`Global`), or one per session (`Session`), summed.
    pub scope: crate::scope::Scope,
    /// The counters (for a session scope: summed over the live sessions).
    pub stats: StatsSnapshot,
}
