//! Release hooks: run each removed value's hook exactly once, contain its panic, count it, and
//! let shutdown wait for the ones still running.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{ReleaseFailure, ReleaseReport};
use crate::stats::{CacheStats, RemovalCause};

/// A boxed `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error a release hook may return.
pub type HookError = Box<dyn StdError + Send + Sync + 'static>;

/// A release hook: receives the value that left the cache, exactly once.
pub type ReleaseHook<V> = Arc<dyn Fn(V) -> BoxFuture<'static, Result<(), HookError>> + Send + Sync>;

/// Counts release hooks still running in the background, so shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct ReleaseTracker {
    pending: AtomicUsize,
    idle: Notify,
}

pub(crate) struct Pending<'a>(&'a ReleaseTracker);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl ReleaseTracker {
    pub(crate) fn begin(&self) -> Pending<'_> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Pending(self)
    }

    /// Waits until no background release is running, or `grace` has passed. True if idle.
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
    /// Releases `value` now and returns when its hook finished. The hook runs in its own task,
    /// so a panic is contained and reported instead of unwinding into the caller.
    pub(crate) async fn release(
        self: Arc<Self>,
        value: V,
        cause: RemovalCause,
    ) -> Result<(), ReleaseFailure> {
        let _pending = self.tracker.begin();
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

    /// Releases `value` in a background task: for removals found by maintenance or by moka's
    /// own eviction, so no caller's hot path runs a hook. Without a Tokio runtime at hand (a
    /// cache dropped outside one), the value is dropped and a warning logged.
    pub(crate) fn release_in_background(self: &Arc<Self>, value: V, cause: RemovalCause) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let this = Arc::clone(self);
                // Count it as pending from now on, not from when the task first runs.
                this.tracker.pending.fetch_add(1, Ordering::AcqRel);
                handle.spawn(async move {
                    let tracker = Arc::clone(&this.tracker);
                    let _ = this.release(value, cause).await;
                    drop(Pending(&tracker));
                });
            }
            Err(_) => tracing::warn!(
                resource = %self.resource,
                ?cause,
                "connscope: value removed outside a Tokio runtime; its release hook could not run"
            ),
        }
    }

    /// Releases many values concurrently and reports every failure.
    pub(crate) async fn release_all(self: &Arc<Self>, values: Vec<V>, cause: RemovalCause) -> ReleaseReport {
        let mut report = ReleaseReport::default();
        let tasks: Vec<_> =
            values.into_iter().map(|v| tokio::spawn(Arc::clone(self).release(v, cause))).collect();
        for task in tasks {
            report.released += 1;
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(f)) => report.failures.push(f),
                Err(join) => report.failures.push(self.failure(panic_message(join), true)),
            }
        }
        report
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
