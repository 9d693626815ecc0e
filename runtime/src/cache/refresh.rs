//! Background refresh (stale-while-revalidate): a value past its ttl but inside the refresh
//! window is served at once while one refresh per value runs; the refreshed value replaces it
//! and the old one is released after (never when the refresh returned the same instance).
//!
//! Rules, each decided under the cache's lock:
//! * one refresh per stale value, however many callers (a claim in the store);
//! * an invalidate, clear or insert that ran meanwhile wins: the refresh's value is not cached;
//! * a failed refresh keeps the old value until its window ends (counted in `load_failures`);
//! * past the window the value is gone and a call waits for a fresh load, as without refresh.

use std::hash::Hash;

use tokio::time::Instant;

use super::state::Found;
use super::{Closed, LoadError, OnClosed, ResourceCache};
use crate::error::Error;
use crate::stats::RemovalCause;

/// Who receives a refresh's value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The caller that claimed the refresh and waits for it (a loader that cannot be moved to a
    /// task of its own): it gets the new value, cached or not, like a load's caller.
    Caller,
    /// Nobody (a background refresh): a value that is not cached is released.
    Nobody,
}

impl<K, V> ResourceCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Like [`try_get_with_own_error`](Self::try_get_with_own_error), refreshing in the
    /// background: a stale value is returned at once while `loader` (moved to a task of its own)
    /// refreshes it. A value past its window, or none, is loaded as usual.
    pub async fn try_get_or_refresh<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: From<Error> + std::fmt::Display + Send + 'static,
    {
        match self.inner.hit(&key) {
            Some(v) => Ok(v),
            None => self.stale_or_load_own_error(key, loader).await,
        }
    }

    /// Like [`try_get_or_run`](Self::try_get_or_run) (any error type), refreshing in the
    /// background (see [`try_get_or_refresh`](Self::try_get_or_refresh)).
    pub async fn try_get_or_run_refreshing<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        match self.inner.hit(&key) {
            Some(v) => Ok(v),
            None => self.stale_or_try(key, loader).await,
        }
    }

    /// Like [`get_or_run`](Self::get_or_run), refreshing in the background (see
    /// [`try_get_or_refresh`](Self::try_get_or_refresh)).
    pub async fn get_or_refresh<F>(&self, key: K, loader: F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        match self.inner.hit(&key) {
            Some(v) => v,
            None => self.stale_or_run(key, loader).await,
        }
    }

    /// The path of [`try_get_or_refresh`](Self::try_get_or_refresh) after its hit check found
    /// no fresh value (and counted a miss, if it was one).
    pub(crate) async fn stale_or_load_own_error<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: From<Error> + std::fmt::Display + Send + 'static,
    {
        match self.serve_stale(&key, loader) {
            Ok(v) => Ok(v),
            Err(loader) => self.miss_own_error(key, Box::pin(loader)).await,
        }
    }

    /// The path of [`try_get_or_run_refreshing`](Self::try_get_or_run_refreshing) after its
    /// hit check.
    pub(crate) async fn stale_or_try<E, F>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        match self.serve_stale(&key, loader) {
            Ok(v) => Ok(v),
            Err(loader) => self.miss_or_try(key, Box::pin(loader)).await,
        }
    }

    /// The path of [`get_or_refresh`](Self::get_or_refresh) after its hit check.
    pub(crate) async fn stale_or_run<F>(&self, key: K, loader: F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let loader = async move { Ok::<V, std::convert::Infallible>(loader.await) };
        match self.serve_stale(&key, loader) {
            Ok(v) => v,
            Err(loader) => match self.load(key, Box::pin(loader), OnClosed::RunUncached).await {
                Ok(v) => v,
                Err(LoadError::Failed(never)) => match *never {},
                Err(LoadError::Scope(_)) => super::unreachable_closed(),
            },
        }
    }

    /// A stale value for `key`, its refresh started in the background by the first caller that
    /// meets it; `Err(loader)` when there is none (a miss, a load in flight, a fresh value that
    /// arrived meanwhile: the caller's load path decides).
    fn serve_stale<E, F>(&self, key: &K, loader: F) -> Result<V, F>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        let (value, claimed) = {
            let mut state = self.lock(key);
            if state.closed.is_some() {
                return Err(loader);
            }
            match state.lookup(key, Instant::now) {
                Found::Stale { value, id } => {
                    let claimed = state.claim_refresh(key, id).then_some(id);
                    (value, claimed)
                }
                Found::Missing { expired: Some(v) } => {
                    drop(state);
                    self.inner.release_in_background(v, RemovalCause::Expired);
                    return Err(loader);
                }
                Found::Hit(_) | Found::Loading(_) | Found::Missing { expired: None } => return Err(loader),
            }
        };
        self.inner.stats.hit();
        if let Some(id) = claimed {
            let this = self.clone();
            let (key, old) = (key.clone(), value.clone());
            self.inner.releaser.tracker.spawn(async move {
                let _ = this.refresh(key, old, id, loader, Owner::Nobody, OnClosed::Refuse).await;
            });
        }
        Ok(value)
    }

    /// Runs the claimed refresh of `key`'s stale value `old` (id `id`) and stores its result in
    /// place of `old`, if `old` is still there. Returns the value the owner gets: the new one,
    /// or `old` when the refresh failed.
    pub(super) async fn refresh<E, F>(
        &self,
        key: K,
        old: V,
        id: u64,
        loader: F,
        owner: Owner,
        on_closed: OnClosed,
    ) -> Result<V, Error>
    where
        F: Future<Output = Result<V, E>>,
    {
        self.inner.stats.load();
        let guard = EndRefresh { cache: self, key: &key, id };
        let (result, fresh) = super::freshness::noting(loader).await;
        std::mem::forget(guard);
        let new = match result {
            Ok(v) => v,
            Err(_) => {
                // The old value stays until its window ends; the next caller may try again.
                self.inner.stats.load_failure();
                self.lock(&key).end_refresh(&key, id);
                return Ok(old);
            }
        };
        let same = self.inner.releaser.same_instance.is_some_and(|same| same(&old, &new));
        drop(old);
        let stored = {
            let mut state = self.lock(&key);
            match state.closed.as_deref().cloned() {
                Some(closed) => {
                    state.end_refresh(&key, id);
                    Err(Some(closed))
                }
                None => {
                    let deadline = super::freshness::capped(self.deadline(), fresh, state.window());
                    state.finish_refresh(&key, id, new.clone(), deadline).map_err(|_| None)
                }
            }
        };
        match stored {
            Ok(mut displaced) => {
                if same {
                    // The same instance, still cached: nothing to release.
                    displaced.replaced = None;
                }
                self.release_displaced(displaced);
                Ok(new)
            }
            // Overtaken by an invalidate, clear or insert: not cached.
            Err(None) => {
                if owner == Owner::Nobody && !same {
                    self.inner.release_in_background(new.clone(), RemovalCause::Explicit);
                }
                Ok(new)
            }
            Err(Some(Closed { cause, reason })) => {
                if owner == Owner::Caller && on_closed == OnClosed::RunUncached {
                    return Ok(new);
                }
                if !same {
                    let _ = self.inner.release(new, cause).await;
                }
                Err(reason)
            }
        }
    }
}

/// A refresh dropped or unwinding mid-way gives up its claim: the next caller may refresh.
struct EndRefresh<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache: &'a ResourceCache<K, V>,
    key: &'a K,
    id: u64,
}

impl<K, V> Drop for EndRefresh<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cache.inner.stats.load_failure();
        }
        self.cache.lock(self.key).end_refresh(self.key, self.id);
    }
}
