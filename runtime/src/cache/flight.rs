//! Single flight: one load per missing key; the callers that arrive meanwhile wait for its
//! outcome. The outcome is set once; a leader that is cancelled or panics sets `Abandoned`, and
//! its waiters start over (one of them loads).

use std::any::Any;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::Error;

/// How a load ended, as its waiters see it.
#[derive(Clone)]
pub(super) enum Outcome<V> {
    /// The loaded value (stored, or kept to the callers of this load when the key was
    /// invalidated meanwhile).
    Value(V),
    /// The loader's error, `Arc<E>` behind `Any` (a waiter with another error type loads itself).
    Failed(Arc<dyn Any + Send + Sync>),
    /// The leader was cancelled or panicked: try again.
    Abandoned,
    /// The cache was closed (session ended, shutdown).
    Closed(Error),
}

/// One load in flight.
pub(super) struct Flight<V> {
    pub(super) id: u64,
    outcome: Mutex<Option<Outcome<V>>>,
    done: Notify,
}

impl<V: Clone> Flight<V> {
    pub(super) fn new(id: u64) -> Self {
        Flight { id, outcome: Mutex::new(None), done: Notify::new() }
    }

    /// Sets the outcome, unless one was set already (the first wins), and wakes the waiters.
    pub(super) fn finish(&self, outcome: Outcome<V>) {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(outcome);
            drop(slot);
            self.done.notify_waiters();
        }
    }

    /// Waits for the outcome. Cancel-safe: a waiter holds nothing.
    pub(super) async fn wait(&self) -> Outcome<V> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = &*self.outcome.lock().unwrap_or_else(|p| p.into_inner()) {
                return outcome.clone();
            }
            notified.await;
        }
    }
}
