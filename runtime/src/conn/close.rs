//! Closing a client taken out of a handle's slot: in a task of its own, counted by the
//! runtime's tracker (so shutdown waits for it), after its users let go or the grace period
//! passed, and to the end even when the caller that started it is dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Conn, Home, Live};
use crate::cache::{ReleaseTracker, unfinished, within};
use crate::provider::Provider;

impl<P: Provider> Conn<P> {
    /// The runtime's tracker of background work, if this handle belongs to a live scope.
    fn tracker(&self) -> Option<Arc<ReleaseTracker>> {
        match self.inner.home.get()? {
            Home::Global(shared) => shared.upgrade().map(|shared| Arc::clone(&shared.tracker)),
            Home::Session(inner) => inner.upgrade().map(|inner| Arc::clone(&inner.runtime().shared.tracker)),
        }
    }

    /// Closes a client already taken out of the slot, in a task of its own that the runtime's
    /// tracker counts (so shutdown waits for it) and that outlives the caller. Returns at once,
    /// or, if `wait`, once the client is closed.
    pub(super) async fn close_taken(&self, live: Arc<Live<P::Raw>>, wait: bool) {
        let this = self.clone();
        let work = async move { this.close_live(live).await };
        // Counted from now (not from when the task first runs), on the caller's Tokio runtime
        // or, without one, on connscope's own.
        let task = match self.tracker() {
            Some(tracker) => tracker.spawn(work),
            None => crate::cache::spawn_background(work),
        };
        if wait {
            join(task).await;
        }
    }

    async fn close_live(&self, live: Arc<Live<P::Raw>>) {
        let drained = async {
            loop {
                let notified = live.drained.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if live.users.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        // Without a Tokio runtime there is no timer for the grace period: close at once.
        let in_time = match tokio::runtime::Handle::try_current() {
            Ok(_) => within(self.inner.grace, drained).await.is_some(),
            Err(_) => live.users.load(Ordering::Acquire) == 0,
        };
        if !in_time {
            tracing::warn!(
                connection = %self.inner.name,
                grace = ?self.inner.grace,
                "connscope: closing a connection still in use after the grace period"
            );
        }
        // A close that never finishes cannot hold up a shutdown: it gets the runtime's
        // `hook_timeout`.
        let limit = self.tracker().map_or(crate::cache::DEFAULT_HOOK_TIMEOUT, |t| t.hook_limit);
        let closed = within(limit, self.inner.provider.close(&live.raw)).await;
        self.inner.counters.closes.fetch_add(1, Ordering::Relaxed);
        match closed {
            Some(()) => tracing::info!(connection = %self.inner.name, "connscope: closed"),
            None => tracing::warn!(
                connection = %self.inner.name,
                error = %unfinished(limit),
                "connscope: the connection's close did not finish"
            ),
        }
    }
}

/// Runs `work` in a task of its own and waits for it: dropping the caller does not stop the
/// work. Outside a Tokio runtime it runs inline. A panic in `work` resumes in the caller.
pub(crate) async fn detached(work: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => join(handle.spawn(work)).await,
        Err(_) => work.await,
    }
}

/// Waits for `task`; resumes its panic in the caller (a task cancelled by a runtime shutting
/// down simply ends).
async fn join(task: tokio::task::JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}
