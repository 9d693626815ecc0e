//! Sessions: one user's scope. Work runs "inside" a session through a task-local, so cached
//! functions and connections deep in a call find it; ending it releases its values once.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::cache::{CacheSet, Due, Outcome, Timers};
use crate::error::{Error, ReleaseReport};
use crate::runtime::Runtime;
use crate::stats::RemovalCause;

tokio::task_local! {
    static CURRENT: Session;
}

pub use crate::scope::SessionId;

/// The session's phase, its running requests and a count of requests that entered, in one word,
/// so that an idle end and a request entering [`Session::run`] cannot both win: an idle end
/// swaps in `ENDING` only if the word is unchanged since it judged the session idle (no request
/// running, none entered since), a request enters only while no phase bit is set.
const ENDING: u64 = 1 << 63;
const ENDED: u64 = 1 << 62;
const PHASE: u64 = ENDING | ENDED;
/// Set with `ENDING` when the runtime's shutdown ended the session (else it was `SessionEnded`).
const BY_SHUTDOWN: u64 = 1 << 61;
const RUNNING: u64 = (1 << 32) - 1;
const ENTERED_ONE: u64 = 1 << 32;
const ENTERED: u64 = !(PHASE | BY_SHUTDOWN | RUNNING);

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
    /// Phase bits (`ENDING`, `ENDED`) and the count of running `Session::run`s.
    state: AtomicU64,

    /// Milliseconds since the runtime's epoch of the start, and of the last activity.
    started: u64,
    last_active: AtomicU64,
    /// The end's report, once the end finished: every caller of `end` waits for it.
    ended: Mutex<Ended>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.inner.id).field("ended", &self.is_ended()).finish()
    }
}

impl Session {
    pub(crate) fn new(id: SessionId, runtime: Runtime) -> Self {
        let now = runtime.millis_since_epoch(Instant::now());
        Session {
            inner: Arc::new(SessionInner {
                id,
                caches: CacheSet::new(Arc::clone(&runtime.shared.timers)),
                runtime,
                state: AtomicU64::new(0),
                started: now,
                last_active: AtomicU64::new(now),
                ended: Mutex::new(Ended::Open),
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
    /// depth, in this task) use this session's scope. Counts as activity for the idle timeout,
    /// and no idle end can start while it runs. On an ended session `fut` still runs, and what
    /// it asks of the session fails with [`Error::SessionEnded`].
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        let _guard = self.enter();
        CURRENT.scope(self.clone(), fut).await
    }

    /// Counts a running request, unless the session is ending.
    fn enter(&self) -> Option<RunGuard<'_>> {
        let state = &self.inner.state;
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s & PHASE != 0 {
                return None;
            }
            let entered = (s & ENTERED).wrapping_add(ENTERED_ONE) & ENTERED;
            let next = ((s & !ENTERED) + 1) | entered;
            match state.compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.touch();
        Some(RunGuard(self))
    }

    /// Marks the session active now (resets its idle timer).
    pub fn touch(&self) {
        let now = self.inner.runtime.millis_since_epoch(Instant::now());
        self.inner.last_active.store(now, Ordering::Relaxed);
    }

    /// Whether the session has ended (or is ending).
    pub fn is_ended(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & PHASE != 0
    }

    /// The error to report for use of this session, if it has ended.
    pub(crate) fn check_active(&self) -> Result<(), Error> {
        if self.is_ended() {
            return Err(self.ended_error());
        }
        Ok(())
    }

    fn ended_error(&self) -> Error {
        match self.inner.state.load(Ordering::Acquire) & BY_SHUTDOWN {
            0 => Error::SessionEnded { id: self.inner.id },
            _ => Error::RuntimeShutDown,
        }
    }

    /// Claims the end for `reason`: true for the one caller that moved the session out of
    /// "active" (whatever requests run); the reason is recorded in the same step.
    fn claim_end(&self, reason: &Error) -> bool {
        let bits = match reason {
            Error::RuntimeShutDown => ENDING | BY_SHUTDOWN,
            _ => ENDING,
        };
        let state = &self.inner.state;
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s & PHASE != 0 {
                return false;
            }
            match state.compare_exchange_weak(s, s | bits, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Ends the session: releases every session-scoped value (connections are closed after their
    /// in-flight users let go, within the runtime's grace period) and returns once all their
    /// release hooks have finished, with the report of what was released. A hook still running
    /// after the runtime's [`hook_timeout`](crate::RuntimeBuilder::hook_timeout) is dropped and
    /// reported as a failure.
    ///
    /// The work runs in a task of its own: a caller that is dropped mid-way (a request timeout)
    /// stops waiting, nothing more. Calling it again, or concurrently, waits for the same end;
    /// nothing is released twice, and the report is handed out once: to the first caller that
    /// receives it (so a retry after a dropped call gets it), the others get an empty one. Using
    /// the session afterwards gives [`Error::SessionEnded`].
    pub async fn end(&self) -> ReleaseReport {
        self.end_with(Error::SessionEnded { id: self.inner.id }, "explicit").await
    }

    pub(crate) async fn end_with(&self, reason: Error, why: &'static str) -> ReleaseReport {
        // Registered as waiting before the end can finish, so the report reaches this caller.
        let waiting = self.waiter();
        if self.claim_end(&reason) {
            self.start_end(reason, why);
        }
        match waiting {
            Some(outcome) => outcome.wait().await,
            None => ReleaseReport::default(),
        }
    }

    /// Ends the session in the background if it has been idle for `idle_ms`, or alive for
    /// `lifetime_ms`, at `now_ms`, and no request is running. True if an end started.
    pub(crate) fn end_if_expired(&self, now_ms: u64, idle_ms: Option<u64>, lifetime_ms: Option<u64>) -> bool {
        let seen = self.inner.state.load(Ordering::Acquire);
        if seen & (PHASE | RUNNING) != 0 {
            return false;
        }
        let idle = idle_ms
            .is_some_and(|ms| now_ms.saturating_sub(self.inner.last_active.load(Ordering::Relaxed)) >= ms);
        let old = lifetime_ms.is_some_and(|ms| now_ms.saturating_sub(self.inner.started) >= ms);
        if !idle && !old {
            return false;
        }
        // Only if no request ran or entered since `seen`: one entering now makes this fail.
        if self
            .inner
            .state
            .compare_exchange(seen, seen | ENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let why = if idle { "idle timeout" } else { "lifetime" };
        self.start_end(Error::SessionEnded { id: self.inner.id }, why);
        true
    }

    /// Spawns the end (tracked, so shutdown waits for it). Called once, by whoever set `ENDING`.
    fn start_end(&self, reason: Error, why: &'static str) {
        let this = self.clone();
        let tracker = std::sync::Arc::clone(&self.inner.runtime.shared.tracker);
        drop(tracker.spawn(async move { this.run_end(reason, why).await }));
    }

    /// Ends the session here, if no end started yet; either way waits for the end. For a caller
    /// that is itself a task that runs to its end (shutdown ends sessions in chunks this way,
    /// without a task per session).
    pub(crate) async fn end_here(&self, reason: Error, why: &'static str) -> ReleaseReport {
        if self.claim_end(&reason)
            && let Some(report) = self.run_end(reason, why).await
        {
            return report;
        }
        match self.waiter() {
            Some(outcome) => outcome.wait().await,
            None => ReleaseReport::default(),
        }
    }

    /// The end itself: release every value, then hand the report to the callers waiting for it,
    /// or, when none waits, return it (no memory spent on an outcome nobody reads).
    async fn run_end(&self, reason: Error, why: &'static str) -> Option<ReleaseReport> {
        let report = self.inner.caches.close(RemovalCause::SessionEnd, reason).await;
        self.inner.state.fetch_or(ENDED, Ordering::AcqRel);
        self.inner.runtime.forget_session(self.inner.id);
        tracing::info!(session = %self.inner.id, why, released = report.released, "connscope: session ended");
        let mut ended = self.inner.ended.lock().unwrap_or_else(|p| p.into_inner());
        match &*ended {
            Ended::Waited(outcome) => {
                outcome.finish(report);
                None
            }
            Ended::Open | Ended::Done => {
                *ended = Ended::Done;
                Some(report)
            }
        }
    }

    /// Registers a caller waiting for the end: the outcome to wait on, or `None` if the end
    /// already finished (its report went to an earlier caller).
    fn waiter(&self) -> Option<Arc<Outcome>> {
        let mut ended = self.inner.ended.lock().unwrap_or_else(|p| p.into_inner());
        match &*ended {
            Ended::Waited(outcome) => Some(Arc::clone(outcome)),
            Ended::Done => None,
            Ended::Open => {
                let outcome = Arc::new(Outcome::default());
                *ended = Ended::Waited(Arc::clone(&outcome));
                Some(outcome)
            }
        }
    }

    /// Schedules this session's next idle / lifetime check on the runtime's timers.
    pub(crate) fn schedule_expiry(&self, now: Instant) {
        if let Some(at) = self.next_expiry(now) {
            let me: std::sync::Weak<dyn Due> = Arc::downgrade(&self.inner) as _;
            self.inner.runtime.shared.timers.schedule(at, me);
        }
    }

    /// When the session may next be idle or too old, judged at `now` (`None`: never, or ended).
    fn next_expiry(&self, now: Instant) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let rt = &self.inner.runtime;
        let (idle, lifetime) = rt.session_limits();
        let idle_at = idle.map(|ms| self.inner.last_active.load(Ordering::Relaxed).saturating_add(ms));
        let old_at = lifetime.map(|ms| self.inner.started.saturating_add(ms));
        let at_ms = match (idle_at, old_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let at = rt.instant_at(at_ms);
        // Due already but not ended (a request is running): look again next pass.
        Some(if at <= now { now + rt.maintenance_interval() } else { at })
    }

    /// Marks a session that never held anything as ended.
    pub(crate) fn mark_ended(&self, reason: Error) {
        self.claim_end(&reason);
        self.inner.state.fetch_or(ENDED, Ordering::AcqRel);
        *self.inner.ended.lock().unwrap_or_else(|p| p.into_inner()) = Ended::Done;
    }
}

/// Who waits for a session's end: nobody yet, callers (an outcome they share), or the end
/// finished. An outcome is allocated only when someone waits.
enum Ended {
    Open,
    Waited(Arc<Outcome>),
    Done,
}

impl SessionInner {
    /// The runtime this session belongs to.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

impl Due for SessionInner {
    /// A maintenance visit: ends the session if it is idle or too old (in the background), else
    /// schedules the next look.
    fn run_due(self: Arc<Self>, now: Instant, _timers: &Arc<Timers>) {
        let session = Session { inner: self };
        let rt = session.runtime();
        let (idle, lifetime) = rt.session_limits();
        if !session.end_if_expired(rt.millis_since_epoch(now), idle, lifetime) {
            session.schedule_expiry(now);
        }
    }
}

struct RunGuard<'a>(&'a Session);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.inner.state.fetch_sub(1, Ordering::AcqRel);
    }
}
