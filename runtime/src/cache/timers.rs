//! One deadline queue per runtime: what maintenance visits. A cache with values that expire
//! keeps one entry here, at its earliest deadline; a session keeps one at its idle / lifetime
//! deadline. A maintenance pass pops only what is due, so its cost follows what expires, not how
//! many sessions or caches are alive.
//!
//! Entries are hints: a target whose deadline moved (a value invalidated, a session touched)
//! finds nothing to do when visited, and schedules itself again if it still has a deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::time::Instant;

/// Something with deadlines: a cache, a session.
pub(crate) trait Due: Send + Sync {
    /// Handles what is due at `now`, and schedules its next deadline on `timers`, if any.
    fn run_due(self: Arc<Self>, now: Instant, timers: &Arc<Timers>);
}

/// The deadline queue: targets by the millisecond their deadline falls in (rounded up), so
/// that targets due in the same millisecond share one entry of the ordered map and each costs
/// a slot in a vector (16 bytes) instead of a map entry of its own.
pub(crate) struct Timers {
    queue: Mutex<BTreeMap<u64, Vec<Weak<dyn Due>>>>,
    /// Millisecond 0 of the queue's scale: when the queue was made, so no later deadline or
    /// pass is before it (an earlier instant counts as millisecond 0, already due).
    base: Instant,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { queue: Mutex::new(BTreeMap::new()), base: Instant::now() }
    }
}

impl Timers {
    /// Milliseconds from the queue's base to `at`, rounded up (`up`) or down.
    fn millis(&self, at: Instant, up: bool) -> u64 {
        let since = at.saturating_duration_since(self.base);
        let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        let partial = !since.subsec_nanos().is_multiple_of(1_000_000);
        if up && partial { ms.saturating_add(1) } else { ms }
    }

    /// Visits `target` at `at` (or at the first maintenance pass after it).
    pub(crate) fn schedule(&self, at: Instant, target: Weak<dyn Due>) {
        let ms = self.millis(at, true);
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).entry(ms).or_default().push(target);
    }

    /// Takes up to `limit` targets due at `now`, earliest first. A target is taken only once
    /// its millisecond (rounded up) has passed, so every target taken is due: one that
    /// reschedules itself lands after `now` and is not taken again in the same pass.
    pub(crate) fn take_due(&self, now: Instant, limit: usize) -> Vec<Weak<dyn Due>> {
        let now_ms = self.millis(now, false);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(mut entry) = queue.first_entry() else { break };
            if *entry.key() > now_ms {
                break;
            }
            let bucket = entry.get_mut();
            let take = (limit - due.len()).min(bucket.len());
            due.extend(bucket.drain(..take));
            if bucket.is_empty() {
                entry.remove();
            }
        }
        due
    }

    /// Entries queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Nothing;
    impl Due for Nothing {
        fn run_due(self: Arc<Self>, _: Instant, _: &Arc<Timers>) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_is_taken_once_its_deadline_has_passed_never_before() {
        let timers = Timers::default();
        let target: Arc<dyn Due> = Arc::new(Nothing);
        let base = timers.base;
        let us = Duration::from_micros;
        timers.schedule(base + us(1500), Arc::downgrade(&target));
        timers.schedule(base + us(2000), Arc::downgrade(&target));
        assert!(timers.take_due(base + us(1499), 10).is_empty());
        assert!(timers.take_due(base + us(1999), 10).is_empty(), "its millisecond has not passed yet");
        assert_eq!(timers.take_due(base + us(2000), 10).len(), 2, "both due at 2 ms");
        assert_eq!(timers.len(), 0);

        // A batch limit leaves the rest of a millisecond for the next call.
        for _ in 0..5 {
            timers.schedule(base + us(3000), Arc::downgrade(&target));
        }
        assert_eq!(timers.take_due(base + us(3000), 3).len(), 3);
        assert_eq!(timers.take_due(base + us(3000), 3).len(), 2);
        // An instant before the queue's base is already due.
        timers.schedule(base - us(10), Arc::downgrade(&target));
        assert_eq!(timers.take_due(base, 10).len(), 1);
    }
}
