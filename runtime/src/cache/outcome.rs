//! The outcome of work that runs on its own (a session end, a shutdown): set once, awaited by any
//! number of callers, and its report handed out once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::error::ReleaseReport;

/// A report that becomes available once; callers wait for it.
pub(crate) struct Outcome {
    done: watch::Sender<bool>,
    report: Mutex<Option<ReleaseReport>>,
    finished: AtomicBool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            done: watch::Sender::new(false),
            report: Mutex::new(None),
            finished: AtomicBool::new(false),
        }
    }
}

impl Outcome {
    /// Publishes the report and wakes every waiter. Only the first call counts.
    pub(crate) fn finish(&self, report: ReleaseReport) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        self.done.send_replace(true);
    }

    /// Waits for the report. The first caller to receive it takes it; later ones get an empty
    /// one (nothing is reported twice). Cancel-safe: a caller dropped while waiting takes nothing.
    pub(crate) async fn wait(&self) -> ReleaseReport {
        let mut rx = self.done.subscribe();
        // The sender lives in `self`, which outlives this borrow: the wait cannot fail.
        let _ = rx.wait_for(|done| *done).await;
        self.report.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
    }
}
