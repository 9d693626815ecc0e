//! Loads that return the caller's own error type, whatever it is (`sqlx::Error`, `String`, an
//! `anyhow`-like error): nothing is asked of the error type, because connscope never has to make
//! one up.
//!
//! * A failed load is never shared: the caller whose loader failed gets its own error, and a
//!   caller that waited for that load runs its own loader next (one at a time per key, like
//!   Streamlit's per-key lock), so each caller that receives an error ran its own body, and the
//!   body runs at most once per failure in a row plus once for the load that succeeds.
//! * A closed cache (its runtime shut down) runs the loader uncached: its value goes to its
//!   caller and is neither stored nor released.
//!
//! This is what a `scope = "global"` `#[cached_resource]` function returning `Result<T, E>`
//! calls. A session-scoped function cannot use it: outside a session it has to report
//! `NoActiveSession` through its error type (see `try_get_with_own_error`).

use std::hash::Hash;
use std::pin::Pin;

use super::{LoadError, OnClosed, ResourceCache, unreachable_closed};

/// The flight outcome of a failed load run by [`ResourceCache::try_get_or_run`]: it carries
/// nothing, since the error went to its own caller and waiters run their own loader.
struct NotShared;

impl<K, V> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The value for `key`, loading it with `loader` on a miss, for a loader with any error
    /// type. Concurrent callers of a missing key wait for one load; only `Ok` is cached. When
    /// that load fails, its caller gets the error, and the callers that waited try again: one of
    /// them runs its own loader while the others wait for it, and so on. When the cache is
    /// closed (runtime shut down), the loader runs uncached.
    pub async fn try_get_or_run<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.inner.hit(&key) {
            return Ok(v);
        }
        self.miss_or_try(key, Box::pin(loader)).await
    }

    /// The miss path of [`try_get_or_run`](Self::try_get_or_run), for a caller that already
    /// looked the key up (and counted the miss).
    pub(crate) async fn miss_or_try<E, F>(&self, key: K, mut loader: Pin<Box<F>>) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + ?Sized,
    {
        let mut own: Option<E> = None;
        loop {
            // Borrows the loader: a round in which this caller only waited leaves it unpolled,
            // for the next round. A loader that ran is never polled again: its outcome ends the
            // loop (a value, or its error in `own`).
            let attempt = async {
                loader.as_mut().await.map_err(|e| {
                    own = Some(e);
                    NotShared
                })
            };
            match self.load(key.clone(), attempt, OnClosed::RunUncached).await {
                Ok(v) => return Ok(v),
                Err(LoadError::Failed(_)) => {
                    if let Some(e) = own.take() {
                        return Err(e);
                    }
                    // The load this caller waited for failed: try again, with its own loader.
                }
                // `RunUncached` answers a closed cache with the loader's own outcome.
                Err(LoadError::Scope(_)) => unreachable_closed(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use crate::cache::{CacheConfig, ResourceCache, Timers};
    use crate::error::Error;
    use crate::stats::RemovalCause;

    fn cache() -> ResourceCache<u32, u32> {
        ResourceCache::new(CacheConfig::new("own_error"), Arc::default(), Arc::new(Timers::default()))
    }

    /// A caller that waited for a failed load runs its own loader, and gets its own outcome.
    #[tokio::test]
    async fn a_waiter_of_a_failed_load_runs_its_own_loader() {
        let cache = cache();
        let gate = Arc::new(Notify::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (cache, gate, runs) = (cache.clone(), Arc::clone(&gate), Arc::clone(&runs));
            tokio::spawn(async move {
                cache
                    .try_get_or_run(1, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Err::<u32, String>("first".to_owned())
                    })
                    .await
            })
        };
        while cache.stats().loads == 0 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                cache
                    .try_get_or_run(1, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<u32, String>(7)
                    })
                    .await
            })
        };
        while cache.stats().misses < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(leader.await.unwrap(), Err("first".to_owned()));
        assert_eq!(waiter.await.unwrap(), Ok(7));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(cache.try_get_or_run(1, async { Err::<u32, ()>(()) }).await, Ok(7), "the Ok is cached");
    }

    #[tokio::test]
    async fn a_closed_cache_runs_the_loader_uncached() {
        let cache = cache();
        let closed =
            crate::cache::state::Closed { cause: RemovalCause::Shutdown, reason: Error::RuntimeShutDown };
        cache.close_with(Arc::new(closed)).await;
        assert_eq!(cache.try_get_or_run(1, async { Ok::<u32, String>(3) }).await, Ok(3));
        assert_eq!(
            cache.try_get_or_run(1, async { Err::<u32, String>("no".into()) }).await,
            Err("no".into())
        );
        assert!(cache.is_empty().await);
    }
}
