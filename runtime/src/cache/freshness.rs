//! A loader's say on how long its value stays fresh: a value another instance stored in Redis is
//! kept here no longer than Redis keeps it, not a full ttl from when it was read.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    /// Set by a loader, read by the cache that stores its value.
    static FRESH_FOR: Cell<Option<Duration>>;
}

/// Called by a loader: the value it is about to return stays fresh for `fresh` at most. Outside
/// a cache's load (a loader run uncached), nothing happens.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // the shared tier's loader calls it
pub(crate) fn fresh_for_at_most(fresh: Duration) {
    let _ = FRESH_FOR.try_with(|cell| cell.set(Some(cell.get().map_or(fresh, |f| f.min(fresh)))));
}

/// Runs `loader`; returns its output and how long it said its value stays fresh, if it did.
pub(super) async fn noting<F: Future>(loader: F) -> (F::Output, Option<Duration>) {
    FRESH_FOR
        .scope(Cell::new(None), async move {
            let out = loader.await;
            (out, FRESH_FOR.with(Cell::get))
        })
        .await
}

/// The deadline of a value stored now: `full` (its ttl's, `window` for stale serving included),
/// brought forward to `fresh` plus `window` when the loader said its value is fresh for less.
pub(super) fn capped(full: Option<Instant>, fresh: Option<Duration>, window: Duration) -> Option<Instant> {
    let Some(fresh) = fresh else { return full };
    let Some(sooner) = Instant::now().checked_add(fresh.saturating_add(window)) else { return full };
    Some(full.map_or(sooner, |full| full.min(sooner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_shortest_word_of_a_loader_counts_and_only_inside_a_load() {
        fresh_for_at_most(Duration::from_secs(1)); // outside a load: ignored
        let (out, fresh) = noting(async {
            fresh_for_at_most(Duration::from_secs(5));
            fresh_for_at_most(Duration::from_secs(2));
            tokio::task::yield_now().await;
            7
        })
        .await;
        assert_eq!((out, fresh), (7, Some(Duration::from_secs(2))));
        assert_eq!(noting(async {}).await.1, None);
    }

    #[test]
    fn a_shorter_freshness_brings_the_deadline_forward_never_back() {
        let now = Instant::now();
        let full = Some(now + Duration::from_secs(600));
        assert_eq!(capped(full, None, Duration::ZERO), full);
        let soon = capped(full, Some(Duration::from_secs(3)), Duration::from_secs(1)).unwrap();
        assert!(
            soon >= now + Duration::from_secs(4) && soon < now + Duration::from_secs(5),
            "{:?}",
            soon - now
        );
        assert_eq!(capped(full, Some(Duration::from_secs(6000)), Duration::ZERO), full);
        assert!(capped(None, Some(Duration::from_secs(3)), Duration::ZERO).is_some(), "no ttl: Redis's");
    }
}
