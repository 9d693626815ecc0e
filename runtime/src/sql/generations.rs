//! The generation table behind tag invalidation and `clear_query_cache`: one counter per
//! connection identity and per tag, in the cache key of every query, so a bump makes old
//! entries unreachable in O(1).
//!
//! Memory follows what is live, not history:
//! * A counter exists only while something may need it: every cached entry holds [`Pins`] on
//!   the counters it was read at, and counters nobody pins are pruned (amortized: when the
//!   table has doubled since the last pass).
//! * Bumping a counter that does not exist does nothing: no cached entry reads it.
//! * Every value a counter ever takes is fresh (one process-wide sequence), so a counter that
//!   was pruned and is created again never repeats a value an old key was built with: an entry
//!   can never become reachable again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// What a counter counts for: every query of a connection, or every query with a tag.
#[derive(Clone, PartialEq, Eq, Hash)]
enum GenKey {
    Connection(u64),
    Tag(Arc<str>),
}

/// One counter: its current value. The `Arc`'s count is how many cached entries pin it.
type Counter = Arc<AtomicU64>;

/// The counters a cached entry was read at, kept alive (unpruned) while it is cached.
#[derive(Clone, Default)]
pub(crate) struct Pins(#[allow(dead_code)] Arc<[Counter]>);

/// The table is pruned when it holds this many counters or twice as many as after the last pass.
const MIN_PRUNE_AT: usize = 256;

struct Table {
    counters: HashMap<GenKey, Counter>,
    prune_at: usize,
}

static TABLE: LazyLock<Mutex<Table>> =
    LazyLock::new(|| Mutex::new(Table { counters: HashMap::new(), prune_at: MIN_PRUNE_AT }));

/// The source of every counter value: never repeats.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn fresh() -> u64 {
    NEXT.fetch_add(1, Relaxed)
}

fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

impl Table {
    fn counter(&mut self, key: GenKey) -> &Counter {
        if !self.counters.contains_key(&key) && self.counters.len() >= self.prune_at {
            self.prune();
        }
        self.counters.entry(key).or_insert_with(|| Arc::new(AtomicU64::new(fresh())))
    }

    /// Drops every counter no cached entry pins.
    fn prune(&mut self) {
        self.counters.retain(|_, c| Arc::strong_count(c) > 1);
        self.prune_at = (self.counters.len() * 2).max(MIN_PRUNE_AT);
    }

    fn bump(&mut self, key: &GenKey) {
        if let Some(c) = self.counters.get(key) {
            c.store(fresh(), Relaxed);
        }
    }
}

fn keys<'a>(identity: u64, tags: &'a [Arc<str>]) -> impl Iterator<Item = GenKey> + 'a {
    std::iter::once(GenKey::Connection(identity)).chain(tags.iter().map(|t| GenKey::Tag(Arc::clone(t))))
}

/// The current generation of a query on connection `identity` with `tags`: a digest of their
/// counters (created if missing).
pub(crate) fn generation(identity: u64, tags: &[Arc<str>]) -> u64 {
    let mut table = table();
    let mut h = DefaultHasher::new();
    for key in keys(identity, tags) {
        table.counter(key).load(Relaxed).hash(&mut h);
    }
    h.finish()
}

/// Pins on the counters of a query on `identity` with `tags`, for the entry being cached.
pub(crate) fn pin(identity: u64, tags: &[Arc<str>]) -> Pins {
    let mut table = table();
    Pins(keys(identity, tags).map(|key| Arc::clone(table.counter(key))).collect())
}

/// Makes every cached query tagged `tag` stale, in every scope (the next call runs it again).
pub fn invalidate(tag: &str) {
    table().bump(&GenKey::Tag(Arc::from(tag)));
}

/// Makes every cached query of connection `identity` stale, in every scope.
pub(crate) fn clear_connection(identity: u64) {
    table().bump(&GenKey::Connection(identity));
}

/// How many tag counters whose tag starts with `prefix` the table holds, after dropping the
/// ones nothing pins. A test hook: memory follows what is live.
#[doc(hidden)]
pub fn live_tag_counters(prefix: &str) -> usize {
    let mut table = table();
    table.prune();
    table.counters.keys().filter(|k| matches!(k, GenKey::Tag(t) if t.starts_with(prefix))).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn own_counters(identity: u64) -> usize {
        table().counters.keys().filter(|k| **k == GenKey::Connection(identity)).count()
    }

    #[test]
    fn a_bump_changes_the_generation_and_nothing_else() {
        let id = u64::MAX - 1;
        let t = tags(&["gen-test-a", "gen-test-b"]);
        let pins = pin(id, &t);
        let before = generation(id, &t);
        assert_eq!(generation(id, &t), before, "stable while nothing changes");
        invalidate("gen-test-b");
        let after_tag = generation(id, &t);
        assert_ne!(after_tag, before);
        assert_eq!(generation(id, &tags(&["gen-test-a"])), generation(id, &tags(&["gen-test-a"])));
        clear_connection(id);
        assert_ne!(generation(id, &t), after_tag);
        drop(pins);
    }

    #[test]
    fn counters_nobody_pins_are_pruned_and_never_repeat_a_value() {
        let id = u64::MAX - 2;
        let t = tags(&["gen-test-prune"]);
        let pins = pin(id, &t);
        let first = generation(id, &t);
        invalidate("gen-test-prune");
        let second = generation(id, &t);
        assert_eq!(live_tag_counters("gen-test-prune"), 1, "pinned: kept");
        drop(pins);
        assert_eq!(live_tag_counters("gen-test-prune"), 0, "unpinned: pruned");
        let again = generation(id, &t);
        assert!(again != first && again != second, "a re-created counter starts at a fresh value");
    }

    #[test]
    fn the_table_stays_bounded_by_what_is_pinned() {
        // 10 000 connections come and go, each with one cached query: without pruning the
        // table would keep all of them.
        let base = u64::MAX / 2;
        for i in 0..10_000u64 {
            let pins = pin(base + i, &[]);
            let _ = generation(base + i, &[]);
            clear_connection(base + i);
            drop(pins);
        }
        let left = (0..10_000u64).map(|i| own_counters(base + i)).sum::<usize>();
        let bound = table().prune_at;
        assert!(left <= bound, "{left} counters of gone connections left (prune at {bound})");
        assert!(left < 10_000 / 4, "{left} of 10 000 left");
    }

    #[test]
    fn bumping_an_unknown_key_adds_nothing() {
        for i in 0..1000 {
            invalidate(&format!("gen-test-unknown-{i}"));
        }
        assert_eq!(live_tag_counters("gen-test-unknown-"), 0);
    }
}
