//! One deadline queue per runtime: what maintenance visits. A cache with values that expire
//! keeps one entry here, at its earliest deadline; a session keeps one at its idle / lifetime
//! deadline. A maintenance pass pops only what is due, so its cost follows what expires, not how
//! many sessions or caches are alive.
//!
//! Entries are hints: a target whose deadline moved (a value invalidated, a session touched)
//! finds nothing to do when visited, and schedules itself again if it still has a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::time::Instant;

/// Something with deadlines: a cache, a session.
pub(crate) trait Due: Send + Sync {
    /// Handles what is due at `now`, and schedules its next deadline on `timers`, if any.
    fn run_due(self: Arc<Self>, now: Instant, timers: &Arc<Timers>);
}

/// The deadline queue.
#[derive(Default)]
pub(crate) struct Timers {
    queue: Mutex<BTreeMap<(Instant, u64), Weak<dyn Due>>>,
    seq: AtomicU64,
}

impl Timers {
    /// Visits `target` at `at` (or at the first maintenance pass after it).
    pub(crate) fn schedule(&self, at: Instant, target: Weak<dyn Due>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).insert((at, seq), target);
    }

    /// Takes up to `limit` targets due at `now`, earliest first.
    pub(crate) fn take_due(&self, now: Instant, limit: usize) -> Vec<Weak<dyn Due>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(entry) = queue.first_entry() else { break };
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// Entries queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
