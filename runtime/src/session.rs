//! Sessions: one user's scope. Work runs "inside" a session through a task-local, so cached
//! functions and connections deep in a call find it; ending it releases its values once.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::CacheSet;
use crate::error::{Error, ReleaseReport};
use crate::runtime::Runtime;
use crate::stats::RemovalCause;

tokio::task_local! {
    static CURRENT: Session;
}

/// A session's identifier, unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

const ACTIVE: u8 = 0;
const ENDING: u8 = 1;
const ENDED: u8 = 2;

/// A cheap-to-clone handle to one user's session.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let rt = connscope::Runtime::builder().build();
/// let session = rt.session();
/// let id = session.run(async { connscope::Session::current().unwrap().id() }).await;
/// assert_eq!(id, session.id());
/// session.end().await;
/// assert!(session.is_ended());
/// # }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    id: SessionId,
    runtime: Runtime,
    pub(crate) caches: CacheSet,
    state: AtomicU8,
    end_reason: OnceLock<Error>,
    /// Milliseconds since the runtime's epoch of the last activity.
    last_active: AtomicU64,
    running: AtomicUsize,
    ended_tx: Mutex<Option<watch::Sender<bool>>>,
    ended_rx: watch::Receiver<bool>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.inner.id).field("ended", &self.is_ended()).finish()
    }
}

impl Session {
    pub(crate) fn new(id: SessionId, runtime: Runtime) -> Self {
        let (tx, rx) = watch::channel(false);
        let now = runtime.millis_since_epoch(Instant::now());
        Session {
            inner: Arc::new(SessionInner {
                id,
                runtime,
                caches: CacheSet::default(),
                state: AtomicU8::new(ACTIVE),
                end_reason: OnceLock::new(),
                last_active: AtomicU64::new(now),
                running: AtomicUsize::new(0),
                ended_tx: Mutex::new(Some(tx)),
                ended_rx: rx,
            }),
        }
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The runtime this session belongs to.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The session the current task runs inside, if any.
    pub fn current() -> Option<Session> {
        CURRENT.try_with(Session::clone).ok()
    }

    /// Runs `f` with a borrow of the current session (no clone), if any.
    pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Session>) -> R) -> R {
        let mut f = Some(f);
        match CURRENT.try_with(|s| (f.take().expect("called once"))(Some(s))) {
            Ok(r) => r,
            Err(_) => (f.take().expect("not called yet"))(None),
        }
    }

    /// Runs `fut` inside this session: cached functions and connections called from it (at any
    /// depth, in this task) use this session's scope. Counts as activity for the idle timeout.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        self.touch();
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let _guard = RunGuard(self);
        CURRENT.scope(self.clone(), fut).await
    }

    /// Marks the session active now (resets its idle timer).
    pub fn touch(&self) {
        let now = self.inner.runtime.millis_since_epoch(Instant::now());
        self.inner.last_active.store(now, Ordering::Relaxed);
    }

    /// Whether the session has ended (or is ending).
    pub fn is_ended(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) != ACTIVE
    }

    /// The error to report for use of this session, if it has ended.
    pub(crate) fn check_active(&self) -> Result<(), Error> {
        if self.is_ended() {
            return Err(self.ended_error());
        }
        Ok(())
    }

    fn ended_error(&self) -> Error {
        self.inner.end_reason.get().cloned().unwrap_or(Error::SessionEnded { id: self.inner.id })
    }

    /// Ends the session: releases every session-scoped value (connections are closed after their
    /// in-flight users let go, within the runtime's grace period) and returns once all their
    /// release hooks have finished. Calling it again, or concurrently, waits for the same end
    /// and releases nothing twice. Using the session afterwards gives [`Error::SessionEnded`].
    pub async fn end(&self) -> ReleaseReport {
        self.end_with(Error::SessionEnded { id: self.inner.id }, "explicit").await
    }

    pub(crate) async fn end_with(&self, reason: Error, why: &'static str) -> ReleaseReport {
        let first =
            self.inner.state.compare_exchange(ACTIVE, ENDING, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if !first {
            let mut rx = self.inner.ended_rx.clone();
            let _ = rx.wait_for(|ended| *ended).await;
            return ReleaseReport::default();
        }
        let _ = self.inner.end_reason.set(reason.clone());
        self.inner.runtime.forget_session(self.inner.id);
        let report = self.inner.caches.close(RemovalCause::SessionEnd, reason).await;
        self.inner.state.store(ENDED, Ordering::Release);
        if let Some(tx) = self.inner.ended_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(true);
        }
        tracing::info!(session = %self.inner.id, why, released = report.released, "connscope: session ended");
        report
    }

    /// Marks a session that never held anything as ended.
    pub(crate) fn mark_ended(&self, reason: Error) {
        let _ = self.inner.end_reason.set(reason);
        self.inner.state.store(ENDED, Ordering::Release);
        if let Some(tx) = self.inner.ended_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(true);
        }
    }

    /// Idle for longer than `idle_ms` at `now_ms`, with no `run` in progress.
    pub(crate) fn idle_since(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.inner.running.load(Ordering::Acquire) == 0
            && now_ms.saturating_sub(self.inner.last_active.load(Ordering::Relaxed)) >= idle_ms
    }
}

struct RunGuard<'a>(&'a Session);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.inner.running.fetch_sub(1, Ordering::AcqRel);
    }
}
