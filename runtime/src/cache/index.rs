//! The read index of a global cache: its ready values by key in a lock-free map (papaya), so
//! that a hit takes no lock and writes nothing another thread's hit writes: the map's read
//! path only marks the thread's own epoch, a hit is counted in one of several counters (by
//! thread), and recency is a stamp on the value itself.
//!
//! The index is a mirror: every change (store, removal, eviction, expiry, clear, close) is
//! decided under the store's lock and applied to the index there, so the store still hands each
//! value to exactly one party for release, and a call that follows a removal never finds the
//! removed value. The index holds a clone of each value, dropped when the map reclaims the
//! entry, once no hit in progress can still read it: a clear or close reclaims at once; a
//! value removed alone waits in its thread's batch of removals (a few dozen) for the next
//! reclamation, so a value's last clone may outlive its release by that much (its release
//! hook has run: the hook, not the drop, is what closes a resource).
//!
//! Stamps order the uses of a bounded cache's values for its exact LRU. A stamp is the instant
//! of the use (the same clock the ttl check reads) made strictly greater than the previous
//! stamp of the same thread, so calls in sequence always get increasing stamps, also when
//! Tokio's paused clock stands still, and uses on different threads are ordered by the time
//! they happened.

use std::cell::Cell;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use papaya::Guard;
use tokio::time::Instant;

use super::state::{KeyHasher, Tick};

/// How many hit counters a global cache keeps (threads take them in turn).
const STRIPES: usize = 8;

pub(super) struct Index<K, V> {
    map: papaya::HashMap<K, Hot<V>, KeyHasher>,
    /// Whether hits renew stamps (a cache with `max_entries`).
    bounded: bool,
    /// The hits it answered.
    pub(super) hits: Hits,
}

/// Hit counters, one per thread in turn, each alone on its cache lines.
#[derive(Default)]
pub(super) struct Hits([Stripe; STRIPES]);

impl Hits {
    /// Counts a hit (in this thread's counter).
    pub(super) fn count(&self) {
        self.0[stripe()].0.fetch_add(1, Relaxed);
    }

    /// The hits counted.
    pub(super) fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// A ready value as hits see it. Its stamp, which hits write, is on a cache line of its own,
/// apart from what hits read (the value, its deadline, the key): a hit on one key neither slows
/// down hits on others (values loaded one after the other would otherwise share lines) nor
/// makes another thread's hit on the same key wait for the line it reads (a stamp store does
/// not stall the thread that makes it).
#[repr(C)]
struct Hot<V> {
    value: V,
    /// From this instant on the value is not served from the index: it expired, or it is in
    /// its refresh window (the locked path decides what to do).
    fresh_until: Tick,
    /// When the value was last used (bounded caches).
    stamp: Stamp,
}

/// A stamp alone on its cache line.
#[repr(align(64))]
struct Stamp(AtomicU64);

/// One hit counter, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// What a thread keeps for the index: its last stamp, and its hit counter.
struct Local {
    last: Cell<u64>,
    stripe: Cell<usize>,
}

thread_local! {
    static LOCAL: Local = const { Local { last: Cell::new(0), stripe: Cell::new(usize::MAX) } };
}

/// A stamp for a use at `now`: `now` on the tick scale, or one more than this thread's previous
/// stamp if that is not below it.
pub(super) fn stamp_at(now: Tick) -> u64 {
    LOCAL
        .try_with(|local| {
            let stamp = now.0.max(local.last.get().saturating_add(1));
            local.last.set(stamp);
            stamp
        })
        .unwrap_or(now.0)
}

/// This thread's hit counter.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    LOCAL
        .try_with(|local| match local.stripe.get() {
            usize::MAX => {
                let stripe = NEXT.fetch_add(1, Relaxed) % STRIPES;
                local.stripe.set(stripe);
                stripe
            }
            stripe => stripe,
        })
        .unwrap_or(0)
}

impl<K: Hash + Eq, V: Clone> Index<K, V> {
    /// An empty index; `bounded`: hits renew their value's stamp.
    pub(super) fn new(bounded: bool) -> Self {
        Index { map: papaya::HashMap::with_hasher(KeyHasher::default()), bounded, hits: Default::default() }
    }

    /// The fresh value of `key`, if the index holds one (its stamp renewed); `None` sends the
    /// caller to the locked path (a miss, a load in flight, an expired or stale value). Counts
    /// nothing.
    pub(super) fn hit(&self, key: &K) -> Option<V> {
        let guard = self.map.guard();
        let hot = self.map.get(key, &guard)?;
        if hot.fresh_until != Tick::NEVER || self.bounded {
            let now = Tick::of(Instant::now());
            if now >= hot.fresh_until {
                return None;
            }
            if self.bounded {
                hot.stamp.0.store(stamp_at(now), Relaxed);
            }
        }
        Some(hot.value.clone())
    }

    /// Mirrors a value stored under `key` (replacing what the index held for it).
    pub(super) fn insert(&self, key: K, value: V, fresh_until: Tick, stamp: u64) {
        let hot = Hot { value, fresh_until, stamp: Stamp(AtomicU64::new(stamp)) };
        self.map.insert(key, hot, &self.map.guard());
    }

    /// Mirrors the removal of `key`'s value.
    pub(super) fn remove(&self, key: &K) {
        self.map.remove(key, &self.map.guard());
    }

    /// Mirrors the removal of every value, and hands the removed entries (this thread's others
    /// too) to the map's reclamation at once, so their clones of the values are dropped as soon
    /// as no hit in progress can read them: a cleared or closed cache keeps nothing alive.
    pub(super) fn clear(&self) {
        let guard = self.map.guard();
        self.map.clear(&guard);
        guard.flush();
    }

    /// The stamp of `key`'s value.
    pub(super) fn stamp(&self, key: &K) -> Option<u64> {
        self.map.get(key, &self.map.guard()).map(|hot| hot.stamp.0.load(Relaxed))
    }

    /// Renews the stamp of `key`'s value (a use found by the locked path).
    pub(super) fn restamp(&self, key: &K, stamp: u64) {
        if let Some(hot) = self.map.get(key, &self.map.guard()) {
            hot.stamp.0.store(stamp, Relaxed);
        }
    }

    /// Whether hits renew stamps.
    pub(super) fn bounded(&self) -> bool {
        self.bounded
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::super::state::{Found, State};
    use super::super::{CacheConfig, ReleaseTracker, ResourceCache, Timers};

    /// Exact LRU with hits through the index (no lock) and through the store, against a model
    /// list ordered by use.
    #[test]
    fn an_indexed_store_evicts_exactly_the_least_recently_used_value() {
        let mut s: State<u32, u32> = State::new(Some(3), None).indexed();
        let index = Arc::clone(s.index().unwrap());
        let mut model: Vec<u32> = Vec::new();
        let mut rng = 0x2545_f491_u32;
        for step in 0..20_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let key = rng % 6;
            let used = |model: &mut Vec<u32>| {
                model.retain(|k| *k != key);
                model.push(key);
            };
            match rng % 4 {
                0 => {
                    let got = index.hit(&key);
                    assert_eq!(got.is_some(), model.contains(&key), "step {step}");
                    if got.is_some() {
                        used(&mut model);
                    }
                }
                1 => {
                    let got = matches!(s.lookup(&key, tokio::time::Instant::now), Found::Hit(_));
                    assert_eq!(got, model.contains(&key), "step {step}");
                    if got {
                        used(&mut model);
                    }
                }
                2 => {
                    s.remove(&key);
                    model.retain(|k| *k != key);
                    assert!(index.hit(&key).is_none(), "step {step}: a removed value is not served");
                }
                _ => {
                    let evicted = s.store(key, step, None).evicted;
                    used(&mut model);
                    let expected = if model.len() > 3 { vec![model.remove(0)] } else { Vec::new() };
                    assert_eq!(evicted.len(), expected.len(), "step {step}");
                    for victim in expected {
                        assert!(index.hit(&victim).is_none(), "step {step}: {victim} was the victim");
                    }
                }
            }
        }
    }

    /// Two threads hit a bounded global cache without its lock while two others store,
    /// invalidate and clear: every value stored is released exactly once, every hit returns a
    /// value stored under its key, and the hits are all counted.
    #[test]
    fn hits_without_the_lock_while_values_come_and_go_release_each_value_once() {
        let released: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let tokio =
            tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let log = Arc::clone(&released);
        let (hits, stored) = tokio.block_on(async move {
            let mut config = CacheConfig::<u64>::new("index-race");
            config.ttl = Some(Duration::from_secs(60));
            config.max_entries = Some(8);
            config.concurrent = true;
            config.on_release = Some(Arc::new(move |v: u64| {
                *log.lock().unwrap().entry(v).or_default() += 1;
                Box::pin(async { Ok(()) })
            }));
            let tracker = Arc::new(ReleaseTracker::default());
            let cache =
                ResourceCache::<u64, u64>::new(config, Arc::clone(&tracker), Arc::new(Timers::default()));
            // Values are `key * 1_000_000 + serial`: a hit can tell which key it came from.
            let writers = (0..2u64).map(|w| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let mut stored = 0u64;
                    for i in 0..3_000u64 {
                        let key = (i * 7 + w) % 16;
                        match i % 10 {
                            0 => drop(cache.invalidate(&key).await),
                            1 if i % 500 == 1 => drop(cache.clear().await),
                            _ => {
                                cache.insert(key, key * 1_000_000 + w * 100_000 + i).await.unwrap();
                                stored += 1;
                            }
                        }
                    }
                    stored
                })
            });
            let readers = (0..2u64).map(|r| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let mut hits = 0u64;
                    for i in 0..200_000u64 {
                        let key = (i + r) % 16;
                        if let Some(v) = cache.get(&key).await {
                            assert_eq!(v / 1_000_000, key, "a hit returns a value of its own key");
                            hits += 1;
                        }
                    }
                    hits
                })
            });
            let writers: Vec<_> = writers.collect();
            let readers: Vec<_> = readers.collect();
            let mut stored = 0;
            for w in writers {
                stored += w.await.unwrap();
            }
            let mut hits = 0;
            for r in readers {
                hits += r.await.unwrap();
            }
            assert_eq!(cache.stats().hits, hits, "every hit counted");
            cache.clear().await;
            assert!(tracker.wait_idle(Duration::from_secs(10)).await);
            (hits, stored)
        });
        let released = released.lock().unwrap();
        assert!(hits > 0);
        assert_eq!(released.len() as u64, stored, "every stored value released");
        assert!(released.values().all(|n| *n == 1), "no value released twice");
    }
}
