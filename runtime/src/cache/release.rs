//! Release hooks: run each removed value's hook exactly once, in a task of its own (so a caller
//! that is dropped mid-release strands nothing, and a panic is contained), count it, and let
//! shutdown wait for the ones still running.

use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
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

/// How long one release hook or connection close may run by default; see
/// [`RuntimeBuilder::hook_timeout`](crate::RuntimeBuilder::hook_timeout).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts work still running in the background (releases, session ends, connection closes), so
/// shutdown can wait for it; and bounds how long one release hook may run.
#[derive(Debug)]
pub(crate) struct ReleaseTracker {
    pending: AtomicUsize,
    idle: Notify,
    /// How long one release hook may run before it is dropped and reported as failed (the
    /// runtime's `hook_timeout`): a hook that never finishes cannot hold up a session's end or
    /// the shutdown.
    pub(crate) hook_limit: Duration,
}

impl Default for ReleaseTracker {
    fn default() -> Self {
        Self::new(DEFAULT_HOOK_TIMEOUT)
    }
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
    /// A tracker whose release hooks may each run for `hook_limit`.
    pub(crate) fn new(hook_limit: Duration) -> Self {
        ReleaseTracker { pending: AtomicUsize::new(0), idle: Notify::new(), hook_limit }
    }

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

/// Runs the release hook of a resource: shared by its caches in every scope of one runtime
/// (each passes its own statistics), so a session's cache pays a pointer for it.
pub(crate) struct Releaser<V> {
    pub(crate) resource: Arc<str>,
    pub(crate) hook: Option<ReleaseHook<V>>,
    /// With background refresh: whether a refresh returned the instance it replaces (then
    /// that value is not released).
    pub(crate) same_instance: Option<fn(&V, &V) -> bool>,
    pub(crate) tracker: Arc<ReleaseTracker>,
}

impl<V: Send + 'static> Releaser<V> {
    /// Starts releasing `value` in a tracked task of its own and returns its handle: awaiting
    /// it is optional, dropping the awaiting caller changes nothing.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        value: V,
        cause: RemovalCause,
    ) -> JoinHandle<Result<(), ReleaseFailure>> {
        let (this, stats) = (Arc::clone(self), Arc::clone(stats));
        self.tracker.spawn(async move { this.run(&stats, value, cause).await })
    }

    /// Releases `value` and returns when its hook finished.
    pub(crate) async fn release(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        value: V,
        cause: RemovalCause,
    ) -> Result<(), ReleaseFailure> {
        let task = self.spawn(stats, value, cause);
        self.joined(task).await
    }

    /// Releases `value` in the background: for removals found by maintenance or eviction, so no
    /// caller's hot path runs a hook.
    pub(crate) fn release_in_background(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        value: V,
        cause: RemovalCause,
    ) {
        drop(self.spawn(stats, value, cause));
    }

    /// Releases many values and reports every failure, in tasks of their own (a caller dropped
    /// meanwhile strands nothing): one task per [`CHUNK`] values, whose hooks run concurrently.
    pub(crate) async fn release_all(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        values: Vec<V>,
        cause: RemovalCause,
    ) -> ReleaseReport {
        self.release_chunks(stats, values, cause, false).await
    }

    /// Like [`release_all`](Self::release_all), for a caller that is itself a task that runs to
    /// its end (a session end, a shutdown): the first chunk runs right here, without a task.
    pub(crate) async fn release_all_here(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        values: Vec<V>,
        cause: RemovalCause,
    ) -> ReleaseReport {
        self.release_chunks(stats, values, cause, true).await
    }

    async fn release_chunks(
        self: &Arc<Self>,
        stats: &Arc<CacheStats>,
        mut values: Vec<V>,
        cause: RemovalCause,
        here: bool,
    ) -> ReleaseReport {
        let first = if here {
            let rest = values.split_off(values.len().min(CHUNK));
            Some(std::mem::replace(&mut values, rest))
        } else {
            None
        };
        let mut tasks = Vec::with_capacity(values.len().div_ceil(CHUNK));
        while !values.is_empty() {
            let rest = values.split_off(values.len().min(CHUNK));
            let chunk = std::mem::replace(&mut values, rest);
            let (this, stats, len) = (Arc::clone(self), Arc::clone(stats), chunk.len());
            tasks.push((len, self.tracker.spawn(async move { this.run_chunk(&stats, chunk, cause).await })));
        }
        let mut report = match first {
            Some(chunk) => self.run_chunk(stats, chunk, cause).await,
            None => ReleaseReport::default(),
        };
        for (len, task) in tasks {
            match task.await {
                Ok(r) => report.merge(r),
                Err(join) => {
                    report.released += len;
                    report.failures.push(self.failure(panic_message(join), true));
                }
            }
        }
        report
    }

    /// Runs the releases of `chunk` concurrently, in the current task.
    async fn run_chunk(&self, stats: &CacheStats, chunk: Vec<V>, cause: RemovalCause) -> ReleaseReport {
        let runs = chunk.into_iter().map(|v| self.run(stats, v, cause));
        let mut report = ReleaseReport::default();
        for result in join_all(runs.collect()).await {
            report.released += 1;
            if let Err(f) = result {
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

    /// The release itself: counts the eviction, runs the hook (a panic, while it is called or
    /// polled, is caught and reported), counts and logs the outcome.
    async fn run(&self, stats: &CacheStats, value: V, cause: RemovalCause) -> Result<(), ReleaseFailure> {
        stats.evicted(cause);
        let limit = self.tracker.hook_limit;
        let result = match &self.hook {
            None => Ok(()),
            Some(hook) => match within(limit, catch_unwind(hook, value)).await {
                Some(Ok(Ok(()))) => Ok(()),
                Some(Ok(Err(e))) => Err(self.failure(e.to_string(), false)),
                Some(Err(panic)) => Err(self.failure(panic, true)),
                None => Err(self.failure(unfinished(limit), false)),
            },
        };
        stats.released(result.is_err());
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

/// `fut`'s output, or `None` if it has not finished within `limit` (it is then dropped). Without
/// a Tokio runtime there is no timer: awaited to its end.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::timeout(limit, fut).await.ok(),
        Err(_) => Some(fut.await),
    }
}

/// What a hook that did not finish within `limit` is reported as.
pub(crate) fn unfinished(limit: Duration) -> String {
    format!(
        "still running after {} (the runtime's `hook_timeout`); stopped and dropped: a hook must \
         finish (give its own awaits a timeout)",
        humantime::format_duration(limit)
    )
}

/// How many values one release task handles (their hooks run concurrently within it).
pub(crate) const CHUNK: usize = 32;

/// Calls and runs a hook, catching a panic in either (no task needed to contain it).
async fn catch_unwind<V>(hook: &ReleaseHook<V>, value: V) -> Result<Result<(), HookError>, String> {
    let mut fut = std::panic::catch_unwind(AssertUnwindSafe(|| hook(value))).map_err(payload_message)?;
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload_message(payload))),
        }
    })
    .await
}

/// Awaits every future concurrently in the current task; outputs in input order. For small sets
/// (a chunk): each wake polls the ones still pending.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if join.is_cancelled() {
        return "release task was cancelled (runtime shutting down)".to_owned();
    }
    payload_message(join.into_panic())
}

fn payload_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
