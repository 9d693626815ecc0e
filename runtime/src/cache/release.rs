//! Release hooks: run each removed value's hook exactly once, in a task of its own (so a caller
//! that is dropped mid-release strands nothing, and a panic is contained), count it, and let
//! shutdown wait for the ones still running.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::background;
use crate::error::{ReleaseFailure, ReleaseReport};
use crate::stats::{CacheStats, RemovalCause};

/// A boxed `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error a release hook may return.
pub type HookError = Box<dyn StdError + Send + Sync + 'static>;

/// A release hook: receives the value that left the cache, exactly once.
pub type ReleaseHook<V> = Arc<dyn Fn(V) -> BoxFuture<'static, Result<(), HookError>> + Send + Sync>;

/// Counts work still running in the background (releases, session ends, connection closes), so
/// shutdown can wait for it.
#[derive(Debug, Default)]
pub(crate) struct ReleaseTracker {
    pending: AtomicUsize,
    idle: Notify,
}

/// Counted as pending until dropped.
pub(crate) struct Pending(Arc<ReleaseTracker>);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl ReleaseTracker {
    /// Counts one piece of work as pending from now until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Pending(Arc::clone(self))
    }

    /// Spawns `fut` (on the current Tokio runtime, else connscope's own), counted as pending
    /// from now until it finishes.
    pub(crate) fn spawn<F>(self: &Arc<Self>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let pending = self.begin();
        background::spawn(async move {
            let _pending = pending;
            fut.await
        })
    }

    /// How much work is pending.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until no background work is running, or `grace` has passed. True if idle.
    pub(crate) async fn wait_idle(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }
}

/// Runs the release hook of one cache.
pub(crate) struct Releaser<V> {
    pub(crate) resource: Arc<str>,
    pub(crate) hook: Option<ReleaseHook<V>>,
    pub(crate) stats: Arc<CacheStats>,
    pub(crate) tracker: Arc<ReleaseTracker>,
}

impl<V: Send + 'static> Releaser<V> {
    /// Starts releasing `value` in a tracked task of its own and returns its handle: awaiting
    /// it is optional, dropping the awaiting caller changes nothing.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        value: V,
        cause: RemovalCause,
    ) -> JoinHandle<Result<(), ReleaseFailure>> {
        let this = Arc::clone(self);
        self.tracker.spawn(async move { this.run(value, cause).await })
    }

    /// Releases `value` and returns when its hook finished.
    pub(crate) async fn release(
        self: &Arc<Self>,
        value: V,
        cause: RemovalCause,
    ) -> Result<(), ReleaseFailure> {
        let task = self.spawn(value, cause);
        self.joined(task).await
    }

    /// Releases `value` in the background: for removals found by maintenance or eviction, so no
    /// caller's hot path runs a hook.
    pub(crate) fn release_in_background(self: &Arc<Self>, value: V, cause: RemovalCause) {
        drop(self.spawn(value, cause));
    }

    /// Releases many values concurrently and reports every failure.
    pub(crate) async fn release_all(self: &Arc<Self>, values: Vec<V>, cause: RemovalCause) -> ReleaseReport {
        let tasks: Vec<_> = values.into_iter().map(|v| self.spawn(v, cause)).collect();
        let mut report = ReleaseReport::default();
        for task in tasks {
            report.released += 1;
            if let Err(f) = self.joined(task).await {
                report.failures.push(f);
            }
        }
        report
    }

    async fn joined(&self, task: JoinHandle<Result<(), ReleaseFailure>>) -> Result<(), ReleaseFailure> {
        match task.await {
            Ok(result) => result,
            Err(join) => Err(self.failure(panic_message(join), true)),
        }
    }

    /// The release itself: counts the eviction, runs the hook (in a task of its own, so its
    /// panic is contained and reported), counts and logs the outcome.
    async fn run(&self, value: V, cause: RemovalCause) -> Result<(), ReleaseFailure> {
        self.stats.evicted(cause);
        let result = match &self.hook {
            None => Ok(()),
            Some(hook) => match tokio::spawn(hook(value)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(self.failure(e.to_string(), false)),
                Err(join) => Err(self.failure(panic_message(join), true)),
            },
        };
        self.stats.released(result.is_err());
        match &result {
            Ok(()) => tracing::debug!(resource = %self.resource, ?cause, "connscope: released"),
            Err(f) => {
                tracing::warn!(resource = %self.resource, ?cause, error = %f, "connscope: release hook failed")
            }
        }
        result
    }

    fn failure(&self, message: String, panicked: bool) -> ReleaseFailure {
        ReleaseFailure { resource: Arc::clone(&self.resource), message, panicked }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if join.is_cancelled() {
        return "release task was cancelled (runtime shutting down)".to_owned();
    }
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
