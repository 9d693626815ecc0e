//! The store of one cache: values by key, loads in flight, exact LRU order, and TTL deadlines.
//! Plain data under the cache's lock: no awaiting, no hooks, no clock of its own (callers pass
//! `now`), so every rule here is unit-tested synchronously.
//!
//! Invariants kept by every method:
//! * a key holds at most one slot: a ready value or a load in flight;
//! * each ready value with a deadline has exactly one live record in `deadlines`, and each ready
//!   value of a bounded cache exactly one live record in `lru`. Records are min-heaps with lazy
//!   deletion: a record whose value left (by any path) is stale, skipped when met, and all stale
//!   records are dropped once they outnumber the live ones, so memory follows what is held, not
//!   how many values came and went;
//! * exact LRU with nothing but a stamp write on a hit: a hit gives its value a new stamp; the
//!   value's LRU record keeps the stamp it was filed with (never newer than the value's). An
//!   eviction pops the smallest record: if the value was used since, it is filed again with its
//!   current stamp; else it is the least recently used value of all, since every other value's
//!   stamp is at least its record's;
//! * a load stores its value only if its own flight still holds the key: an invalidate, clear or
//!   insert that ran meanwhile removed or replaced it, and the load's result is then not kept.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::flight::Flight;
use super::index::{Index, stamp_at};
use super::slots::Slots;
use crate::error::Error;
use crate::stats::RemovalCause;

/// The hasher of cache keys: foldhash, seeded per cache.
pub(super) type KeyHasher = foldhash::fast::RandomState;

/// A point in time as 8 bytes: nanoseconds on a process-wide scale, `NEVER` for none. Tokio
/// instants (paused test time included) map onto it exactly and in order, so a value and its
/// deadline record each pay 8 bytes for their deadline instead of 16.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tick(pub(super) u64);

impl Tick {
    pub(super) const NEVER: Tick = Tick(u64::MAX);
    /// The scale's zero sits this far above `0`, so instants before its base map too.
    const ORIGIN: u64 = 1 << 62;

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        Instant::from_std(*BASE.get_or_init(std::time::Instant::now))
    }

    pub(super) fn of(at: Instant) -> Tick {
        let base = Tick::base();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Tick(if at >= base {
            Tick::ORIGIN.saturating_add(nanos(at - base)).min(u64::MAX - 1)
        } else {
            Tick::ORIGIN.saturating_sub(nanos(base - at))
        })
    }

    fn of_option(at: Option<Instant>) -> Tick {
        at.map_or(Tick::NEVER, Tick::of)
    }

    fn instant(self) -> Instant {
        let base = Tick::base();
        match self.0.checked_sub(Tick::ORIGIN) {
            Some(after) => base + Duration::from_nanos(after),
            None => base - Duration::from_nanos(Tick::ORIGIN - self.0),
        }
    }
}

/// A ready value.
pub(super) struct Ready<V> {
    pub(super) value: V,
    /// Non-zero (ids start at 1): the niche holds `Slot`'s tag, so a slot is 32 bytes for an
    /// 8-byte value.
    id: std::num::NonZeroU64,
    expires_at: Tick,
    /// Position in the LRU order (bounded caches only).
    stamp: u64,
}

pub(super) enum Slot<V> {
    Ready(Ready<V>),
    Loading(Arc<Flight<V>>),
}

/// Why the cache refuses new values, and what a late value is released as.
#[derive(Clone)]
pub(super) struct Closed {
    pub(super) cause: RemovalCause,
    pub(super) reason: Error,
}

/// What a lookup found.
pub(super) enum Found<V> {
    /// A live value (its recency updated).
    Hit(V),
    /// A value past its ttl but inside the background-refresh window (its recency updated):
    /// still served, and refreshed by whoever [claims](State::claim_refresh) it. `id` names
    /// this value for the claim.
    Stale { value: V, id: u64 },
    /// A load in flight: wait for it.
    Loading(Arc<Flight<V>>),
    /// Nothing usable. `expired` is a value whose TTL had passed: it was removed, release it.
    Missing { expired: Option<V> },
}

/// What storing a value displaced, and whether the cache's earliest deadline moved earlier.
#[derive(Default)]
pub(super) struct Displaced<V> {
    /// The new earliest deadline, to schedule with the runtime's timers.
    pub(super) wake: Option<Instant>,
    /// The value that was under the same key (cause `Replaced`).
    pub(super) replaced: Option<V>,
    /// Least recently used values evicted to stay within `max_entries` (cause `Size`).
    pub(super) evicted: Vec<V>,
}

/// A record of a ready value in a heap: ordered by `order` (a stamp, a deadline), then `id`.
struct Record<O, K> {
    order: O,
    id: u64,
    key: K,
}

impl<O: Ord, K> PartialEq for Record<O, K> {
    fn eq(&self, other: &Self) -> bool {
        (&self.order, self.id) == (&other.order, other.id)
    }
}
impl<O: Ord, K> Eq for Record<O, K> {}
impl<O: Ord, K> PartialOrd for Record<O, K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<O: Ord, K> Ord for Record<O, K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.order, self.id).cmp(&(&other.order, other.id))
    }
}

/// A min-heap of records, some of them stale.
type Records<O, K> = BinaryHeap<Reverse<Record<O, K>>>;

/// Files `record`. A heap's first record gets room for exactly one (most caches of a session
/// hold one value per resource); it grows as usual from there.
fn push<O: Ord, K>(heap: &mut Records<O, K>, record: Record<O, K>) {
    if heap.capacity() == 0 {
        heap.reserve_exact(1);
    }
    heap.push(Reverse(record));
}

pub(super) struct State<K, V> {
    map: Slots<K, V>,
    /// Ready values by the stamp they were filed with. Only for a cache with `max_entries`.
    lru: Records<u64, K>,
    /// The bound on ready values (`usize::MAX`: none).
    max_entries: usize,
    deadlines: Records<Tick, K>,
    ready: usize,
    /// The earliest deadline scheduled with the runtime's timers, if any.
    next_wake: Option<Instant>,
    /// The next id of a flight or ready value, which is also the next LRU stamp: one counter
    /// serves both, since both only need to grow.
    next_seq: u64,
    /// Set when the scope closed (shared by every store of the scope: a close allocates
    /// nothing per cache; an open cache pays a pointer for it).
    pub(super) closed: Option<Arc<Closed>>,
    /// Background refresh (boxed: a cache without it pays a pointer).
    refresh: Option<Box<Refreshing<K>>>,
    /// The read index hits use without the lock (global caches): a mirror of the ready values,
    /// which also holds their stamps.
    index: Option<Arc<Index<K, V>>>,
    /// Hits counted under the lock (see `count_hit`).
    hits: u64,
}

/// The background refresh of a cache: values are kept `window` past their ttl, served stale
/// meanwhile, and refreshed once per value.
struct Refreshing<K> {
    /// The window in nanoseconds (saturated), as ticks count.
    window_nanos: u64,
    /// The refreshes running: key -> id of the value being refreshed.
    running: HashMap<K, u64, KeyHasher>,
}

impl<K: Hash + Eq + Clone, V: Clone> State<K, V> {
    /// A store; with `refresh_window`, values are stored with deadlines that include the window
    /// (the caller adds it) and are stale for its last `refresh_window`.
    pub(super) fn new(max_entries: Option<u64>, refresh_window: Option<Duration>) -> Self {
        State {
            refresh: refresh_window.map(|window| {
                let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
                Box::new(Refreshing { window_nanos, running: HashMap::with_hasher(KeyHasher::default()) })
            }),
            map: Slots::default(),
            lru: BinaryHeap::new(),
            // A bound of zero would evict every value at birth: at least one is kept.
            max_entries: max_entries.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX).max(1)),
            deadlines: BinaryHeap::new(),
            ready: 0,
            next_wake: None,
            next_seq: 1,
            closed: None,
            index: None,
            hits: 0,
        }
    }

    /// This store with a read index (see `index`): its ready values mirrored where hits read
    /// them without the lock, recency stamps on the clock.
    pub(super) fn indexed(mut self) -> Self {
        self.index = Some(Arc::new(Index::new(self.max_entries != usize::MAX)));
        self
    }

    /// The read index, if the store has one.
    pub(super) fn index(&self) -> Option<&Arc<Index<K, V>>> {
        self.index.as_ref()
    }

    /// Looks `key` up at `now`: a hit refreshes its recency; an expired value is removed.
    pub(super) fn lookup(&mut self, key: &K, now: impl Fn() -> Instant) -> Found<V> {
        let ready = match self.map.get_mut(key) {
            None => return Found::Missing { expired: None },
            Some(Slot::Loading(flight)) => return Found::Loading(Arc::clone(flight)),
            Some(Slot::Ready(ready)) => ready,
        };
        // The clock, read at most once.
        let mut read: Option<Tick> = None;
        let mut tick = || *read.get_or_insert_with(|| Tick::of(now()));
        let stale = match ready.expires_at {
            Tick::NEVER => false,
            t => {
                let now = tick();
                if now >= t {
                    return Found::Missing { expired: self.remove(key) };
                }
                // Stale in the last `window` before the deadline (which includes the window):
                // integer nanoseconds on the tick scale, no second clock conversion.
                self.refresh.as_ref().is_some_and(|r| now.0.saturating_add(r.window_nanos) >= t.0)
            }
        };
        // The hit's only bookkeeping: a new stamp (its LRU record catches up lazily). An
        // indexed store keeps stamps in its index, on the clock.
        match &self.index {
            None => {
                ready.stamp = self.next_seq;
                self.next_seq += 1;
            }
            Some(index) if index.bounded() => index.restamp(key, stamp_at(tick())),
            Some(_) => {}
        }
        let value = ready.value.clone();
        if stale { Found::Stale { value, id: ready.id.get() } } else { Found::Hit(value) }
    }

    /// How long a stale value is still served (the refresh window; zero without refresh).
    pub(super) fn window(&self) -> Duration {
        Duration::from_nanos(self.refresh.as_ref().map_or(0, |r| r.window_nanos))
    }

    /// Claims the refresh of `key`'s stale value `id`: true for the first caller only, until the
    /// refresh [ends](Self::end_refresh).
    pub(super) fn claim_refresh(&mut self, key: &K, id: u64) -> bool {
        let Some(refresh) = self.refresh.as_deref_mut() else { return false };
        if !matches!(self.map.get(key), Some(Slot::Ready(r)) if r.id.get() == id) {
            return false;
        }
        match refresh.running.get_mut(key) {
            Some(running) if *running == id => false,
            // A claim for a value that left meanwhile: stale, replaced.
            Some(running) => {
                *running = id;
                true
            }
            None => {
                refresh.running.insert(key.clone(), id);
                true
            }
        }
    }

    /// Ends the refresh of `key`'s value `id` (done, failed, or abandoned).
    pub(super) fn end_refresh(&mut self, key: &K, id: u64) {
        if let Some(refresh) = self.refresh.as_deref_mut()
            && refresh.running.get(key) == Some(&id)
        {
            refresh.running.remove(key);
        }
    }

    /// Stores a refresh's `value` in place of the value `id` it refreshed, if that value is
    /// still there (an invalidate, clear or insert meanwhile wins: `Err` gives the value back).
    pub(super) fn finish_refresh(
        &mut self,
        key: &K,
        id: u64,
        value: V,
        expires_at: Option<Instant>,
    ) -> Result<Displaced<V>, V> {
        self.end_refresh(key, id);
        match self.map.get(key) {
            Some(Slot::Ready(r)) if r.id.get() == id => Ok(self.store(key.clone(), value, expires_at)),
            _ => Err(value),
        }
    }

    /// Starts a load of `key` (the key must hold nothing): later lookups wait for it.
    pub(super) fn start_flight(&mut self, key: K) -> Arc<Flight<V>> {
        let flight = Arc::new(Flight::new(self.next_id()));
        self.map.insert(key, Slot::Loading(Arc::clone(&flight)));
        flight
    }

    /// Whether `key` is still held by the load `flight`.
    fn holds(&self, key: &K, flight: u64) -> bool {
        matches!(self.map.get(key), Some(Slot::Loading(f)) if f.id == flight)
    }

    /// Ends a load that produced nothing (failed, panicked, cancelled): frees its key if it
    /// still holds it.
    pub(super) fn abandon_flight(&mut self, key: &K, flight: u64) {
        if self.holds(key, flight) {
            self.map.remove(key);
        }
    }

    /// Stores a load's value if its flight still holds the key. `None`: not stored (the key was
    /// invalidated, cleared or given another value meanwhile).
    pub(super) fn finish_flight(
        &mut self,
        key: &K,
        flight: u64,
        value: V,
        expires_at: Option<Instant>,
    ) -> Option<Displaced<V>> {
        if !self.holds(key, flight) {
            return None;
        }
        self.map.remove(key);
        Some(self.store(key.clone(), value, expires_at))
    }

    /// Stores `value` under `key`, replacing what is there (a load in flight for the key then
    /// keeps its result to itself).
    pub(super) fn store(&mut self, key: K, value: V, expires_at: Option<Instant>) -> Displaced<V> {
        let mut displaced = Displaced { replaced: self.remove(&key), evicted: Vec::new(), wake: None };
        let id = self.next_id();
        let stamp = match &self.index {
            Some(index) if index.bounded() => stamp_at(Tick::of(Instant::now())),
            _ => id,
        };
        if let Some(at) = expires_at {
            push(&mut self.deadlines, Record { order: Tick::of(at), id, key: key.clone() });
            if self.next_wake.is_none_or(|w| at < w) {
                self.next_wake = Some(at);
                displaced.wake = Some(at);
            }
        }
        if self.max_entries != usize::MAX {
            push(&mut self.lru, Record { order: stamp, id, key: key.clone() });
        }
        let expires_at = Tick::of_option(expires_at);
        if let Some(index) = &self.index {
            // Served from the index until the deadline, or the refresh window before it.
            let window = self.refresh.as_ref().map_or(0, |r| r.window_nanos);
            let fresh_until = match expires_at {
                Tick::NEVER => Tick::NEVER,
                t => Tick(t.0.saturating_sub(window)),
            };
            index.insert(key.clone(), value.clone(), fresh_until, stamp);
        }
        let ready = Ready {
            value,
            id: std::num::NonZeroU64::new(id).unwrap_or(std::num::NonZeroU64::MIN),
            expires_at,
            stamp,
        };
        self.map.insert(key, Slot::Ready(ready));
        self.ready += 1;
        while self.ready > self.max_entries {
            let Some(victim) = self.pop_least_recent() else { break };
            if let Some(Slot::Ready(r)) = self.map.remove(&victim) {
                self.forget();
                self.unindex(&victim);
                displaced.evicted.push(r.value);
            }
        }
        self.compact();
        displaced
    }

    /// The key of the least recently used ready value (its record taken out).
    fn pop_least_recent(&mut self) -> Option<K> {
        while let Some(Reverse(record)) = self.lru.pop() {
            match self.map.get(&record.key) {
                Some(Slot::Ready(r)) if r.id.get() == record.id => {
                    let stamp = match &self.index {
                        Some(index) => index.stamp(&record.key).unwrap_or(r.stamp),
                        None => r.stamp,
                    };
                    if stamp == record.order {
                        return Some(record.key);
                    }
                    // Used since it was filed: file it again with its current stamp.
                    self.lru.push(Reverse(Record { order: stamp, ..record }));
                }
                _ => {} // stale: the value left
            }
        }
        None
    }

    /// Whether `record` still describes the ready value it was filed for.
    fn is_live<O>(map: &Slots<K, V>, record: &Record<O, K>) -> bool {
        matches!(map.get(&record.key), Some(Slot::Ready(r)) if r.id.get() == record.id)
    }

    /// Drops the stale records once they outnumber the live ones.
    fn compact(&mut self) {
        let bound = 2 * self.ready + 16;
        if self.deadlines.len() > bound {
            let map = &self.map;
            self.deadlines.retain(|Reverse(r)| Self::is_live(map, r));
        }
        if self.lru.len() > bound {
            let map = &self.map;
            self.lru.retain(|Reverse(r)| Self::is_live(map, r));
        }
    }

    /// Removes `key`: returns its ready value; a load in flight for it will not be stored.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        match self.map.remove(key)? {
            Slot::Ready(r) => {
                self.forget();
                self.unindex(key);
                Some(r.value)
            }
            Slot::Loading(_) => None,
        }
    }

    /// Removes `key`'s ready value if `pred` accepts it.
    pub(super) fn remove_if(&mut self, key: &K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        match self.map.get(key) {
            Some(Slot::Ready(r)) if pred(&r.value) => self.remove(key),
            _ => None,
        }
    }

    /// Removes everything: the ready values, and the loads in flight (which will not store).
    pub(super) fn take_all(&mut self) -> (Vec<V>, Vec<Arc<Flight<V>>>) {
        let mut values = Vec::with_capacity(self.ready);
        let mut flights = Vec::new();
        for slot in self.map.take() {
            match slot {
                Slot::Ready(r) => values.push(r.value),
                Slot::Loading(f) => flights.push(f),
            }
        }
        self.lru.clear();
        self.deadlines.clear();
        if let Some(index) = &self.index {
            index.clear();
        }
        if let Some(refresh) = self.refresh.as_deref_mut() {
            refresh.running.clear();
        }
        self.next_wake = None;
        self.ready = 0;
        (values, flights)
    }

    /// Removes up to `limit` values whose deadline is at or before `now`.
    pub(super) fn expire_due(&mut self, now: Instant, limit: usize) -> Vec<V> {
        let now = Tick::of(now);
        let mut due = Vec::new();
        while due.len() < limit {
            match self.deadlines.peek() {
                Some(Reverse(r)) if r.order <= now => {}
                _ => break,
            }
            let Some(Reverse(record)) = self.deadlines.pop() else { break };
            if Self::is_live(&self.map, &record)
                && let Some(Slot::Ready(r)) = self.map.remove(&record.key)
            {
                self.forget();
                self.unindex(&record.key);
                due.push(r.value);
            }
        }
        due
    }

    /// After a visit by the timers: the earliest deadline left, now scheduled.
    pub(super) fn reschedule(&mut self) -> Option<Instant> {
        while let Some(Reverse(r)) = self.deadlines.peek() {
            if Self::is_live(&self.map, r) {
                break;
            }
            self.deadlines.pop();
        }
        self.next_wake = self.deadlines.peek().map(|Reverse(r)| r.order.instant());
        self.next_wake
    }

    /// Counts a hit found under the lock (cheaper than the cache's atomic counter).
    pub(super) fn count_hit(&mut self) {
        self.hits += 1;
    }

    /// The hits counted under the lock.
    pub(super) fn hits(&self) -> u64 {
        self.hits
    }

    /// How many ready values are held (expired ones included until they are removed).
    pub(super) fn ready_len(&self) -> usize {
        self.ready
    }

    /// How many ready values are live at `now`.
    pub(super) fn live_len(&self, now: Instant) -> usize {
        let now = Tick::of(now);
        self.map.count(|s| matches!(s, Slot::Ready(r) if now < r.expires_at))
    }

    /// Deadline and LRU records held, stale ones included.
    #[cfg(test)]
    fn records(&self) -> (usize, usize) {
        (self.deadlines.len(), self.lru.len())
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_seq;
        self.next_seq += 1;
        id
    }

    /// Counts a ready value that left the map (its records are now stale).
    fn forget(&mut self) {
        self.ready -= 1;
    }

    /// Removes `key`'s value from the index, if any.
    fn unindex(&self, key: &K) {
        if let Some(index) = &self.index {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit<V: Clone>(s: &mut State<&'static str, V>, k: &'static str) -> Option<V> {
        match s.lookup(&k, Instant::now) {
            Found::Hit(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn ticks_keep_the_order_of_instants_and_map_back_exactly() {
        let base = Tick::base();
        let instants = [
            base - Duration::from_secs(3600),
            base - Duration::from_nanos(1),
            base,
            base + Duration::from_nanos(1),
            base + Duration::from_secs(86_400 * 365),
        ];
        for pair in instants.windows(2) {
            assert!(Tick::of(pair[0]) < Tick::of(pair[1]));
        }
        for at in instants {
            assert_eq!(Tick::of(at).instant(), at);
            assert!(Tick::of(at) < Tick::NEVER);
        }
    }

    #[test]
    fn lru_evicts_least_recently_used_exactly() {
        for _ in 0..1000 {
            let mut s = State::new(Some(2), None);
            assert!(s.store("a", 1, None).evicted.is_empty());
            assert!(s.store("b", 2, None).evicted.is_empty());
            assert_eq!(hit(&mut s, "a"), Some(1));
            assert_eq!(s.store("c", 3, None).evicted, vec![2]);
            assert_eq!(hit(&mut s, "b"), None);
            assert_eq!(s.ready_len(), 2);
        }
    }

    #[test]
    fn records_follow_what_is_held_not_what_came_and_went() {
        let now = Instant::now();
        let at = Some(now + Duration::from_secs(60));
        let mut s = State::new(Some(2), None);
        for i in 0..10_000 {
            s.store("replaced", i, at);
            s.store("invalidated", i, at);
            s.remove(&"invalidated");
            let (deadlines, lru) = s.records();
            assert!(
                deadlines <= 2 * s.ready_len() + 17 && lru <= 2 * s.ready_len() + 17,
                "{deadlines} {lru}"
            );
        }
        s.store("evicts", 0, at);
        s.store("evicts-too", 0, at);
        let f = s.start_flight("loaded");
        s.finish_flight(&"loaded", f.id, 1, at);
        assert_eq!(s.ready_len(), 2);
        assert_eq!(s.expire_due(now + Duration::from_secs(61), 100).len(), 2, "only the values held expire");
        assert_eq!(s.ready_len(), 0);
        assert_eq!(s.reschedule(), None);
    }

    #[test]
    fn lru_stays_exact_through_hits_removals_and_reinserts() {
        // A model: keys by last use; the victim is always the model's oldest.
        let mut s = State::new(Some(3), None);
        let mut model: Vec<u32> = Vec::new();
        let mut rng = 0x9e37_79b9_u32;
        for step in 0..20_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let key = rng % 6;
            match rng % 3 {
                0 => {
                    let got = matches!(s.lookup(&key, Instant::now), Found::Hit(_));
                    assert_eq!(got, model.contains(&key), "step {step}");
                    if got {
                        model.retain(|k| *k != key);
                        model.push(key);
                    }
                }
                1 => {
                    s.remove(&key);
                    model.retain(|k| *k != key);
                }
                _ => {
                    let d = s.store(key, step, None);
                    model.retain(|k| *k != key);
                    model.push(key);
                    let expected: Vec<u32> = if model.len() > 3 { vec![model.remove(0)] } else { Vec::new() };
                    let evicted: Vec<u32> = d.evicted.iter().map(|_| 0).collect();
                    assert_eq!(evicted.len(), expected.len(), "step {step}");
                    if let Some(victim) = expected.first() {
                        assert!(
                            matches!(s.lookup(victim, Instant::now), Found::Missing { .. }),
                            "step {step}"
                        );
                        // The lookup above must not disturb the model: a miss changes nothing.
                    }
                }
            }
        }
    }

    #[test]
    fn a_load_raced_by_remove_or_store_is_not_kept() {
        let mut s: State<&str, i32> = State::new(None, None);
        let f = s.start_flight("k");
        s.remove(&"k");
        assert!(s.finish_flight(&"k", f.id, 1, None).is_none());
        assert!(matches!(s.lookup(&"k", Instant::now), Found::Missing { expired: None }));

        let f = s.start_flight("k");
        s.store("k", 2, None);
        assert!(s.finish_flight(&"k", f.id, 1, None).is_none());
        assert_eq!(hit(&mut s, "k"), Some(2), "a load never replaces an inserted value");

        s.remove(&"k");
        let f = s.start_flight("k");
        let (values, flights) = s.take_all();
        assert!(values.is_empty() && flights.len() == 1);
        assert!(s.finish_flight(&"k", f.id, 1, None).is_none());
    }

    #[test]
    fn an_expired_value_is_removed_on_lookup() {
        let now = Instant::now();
        let mut s = State::new(None, None);
        s.store("k", 1, Some(now));
        match s.lookup(&"k", || now) {
            Found::Missing { expired } => assert_eq!(expired, Some(1)),
            _ => panic!("an expired value was served"),
        }
        assert_eq!(s.ready_len(), 0);
        assert!(s.expire_due(now, 10).is_empty());
    }
}
