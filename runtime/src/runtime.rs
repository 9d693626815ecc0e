//! The runtime: owns the global caches, the session registry, the configuration, and the
//! maintenance task that expires values, ends idle sessions and applies evictions.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::{CacheConfig, CacheSet, ReleaseTracker, ResourceCache};
use crate::error::{Error, ReleaseReport};
use crate::secrets::Config;
use crate::session::{Session, SessionId};
use crate::stats::RemovalCause;

/// Default period of the maintenance task: expired values are released within this bound
/// (plus the time their hooks take).
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Default time `Session::end` / `Runtime::shutdown` wait for in-flight users of a connection.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Owns the global caches, the session registry and the configuration. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let rt = connscope::Runtime::builder()
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .build();
/// let session = rt.session();
/// assert_eq!(rt.session_count(), 1);
/// let report = rt.shutdown().await;
/// assert!(report.is_ok());
/// assert!(session.is_ended());
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: u64,
    epoch: Instant,
    pub(crate) global: CacheSet,
    sessions: Mutex<HashMap<SessionId, Session>>,
    pub(crate) tracker: Arc<ReleaseTracker>,
    pub(crate) config: Config,
    settings: Settings,
    shut_down: AtomicBool,
    maintainer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone, Debug)]
struct Settings {
    idle_timeout: Option<Duration>,
    maintenance_interval: Duration,
    grace_period: Duration,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("id", &self.shared.id)
            .field("sessions", &self.session_count())
            .field("settings", &self.shared.settings)
            .finish()
    }
}

/// Builds a [`Runtime`].
#[derive(Debug)]
#[must_use = "call `.build()` to get the runtime"]
pub struct RuntimeBuilder {
    settings: Settings,
    config: crate::secrets::ConfigBuilder,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            settings: Settings {
                idle_timeout: None,
                maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
                grace_period: DEFAULT_GRACE_PERIOD,
            },
            config: crate::secrets::ConfigBuilder::default(),
        }
    }
}

impl RuntimeBuilder {
    /// End sessions with no activity (no `Session::run`, no `touch`) for this long.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = Some(timeout);
        self
    }

    /// How often maintenance runs (default 250 ms): the bound on how late an expired value
    /// is released and an idle session ended.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.settings.maintenance_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long ending a session or shutting down waits for in-flight users of a connection
    /// before closing it anyway (default 10 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.settings.grace_period = grace;
        self
    }

    /// The secrets file holding `[connections.<name>]` tables (default: `$CONNSCOPE_SECRETS`,
    /// else `secrets.toml` in the working directory).
    pub fn secrets_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.file = Some(path.into());
        self
    }

    /// Uses these variables instead of the process environment for overrides
    /// (`CONNSCOPE__<NAME>__<FIELD>=value`); for tests and embedders.
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.config.env = Some(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect());
        self
    }

    /// Sets one field of connection `name` in code; wins over the file and the environment.
    pub fn connection_setting(mut self, name: &str, field: &str, value: impl Into<toml::Value>) -> Self {
        self.config.code.entry(name.to_owned()).or_default().insert(field.to_owned(), value.into());
        self
    }

    /// Builds the runtime. Its maintenance task starts on the current Tokio runtime, or on first
    /// use inside one.
    pub fn build(self) -> Runtime {
        let rt = Runtime {
            shared: Arc::new(Shared {
                id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
                epoch: Instant::now(),
                global: CacheSet::default(),
                sessions: Mutex::new(HashMap::new()),
                tracker: Arc::new(ReleaseTracker::default()),
                config: self.config.build(),
                settings: self.settings,
                shut_down: AtomicBool::new(false),
                maintainer: Mutex::new(None),
            }),
        };
        rt.ensure_maintainer();
        rt
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The process-wide default runtime, created on first use (what global cached functions use
    /// outside any session). Meant for a program with one Tokio runtime; tests should build
    /// their own runtimes.
    pub fn global() -> &'static Runtime {
        static DEFAULT: OnceLock<Runtime> = OnceLock::new();
        DEFAULT.get_or_init(|| Runtime::builder().build())
    }

    /// The runtime of the current session, else the default one.
    pub fn current() -> Runtime {
        Session::with_current(|s| s.map_or_else(|| Runtime::global().clone(), |s| s.runtime().clone()))
    }

    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }

    /// Starts a new session.
    pub fn session(&self) -> Session {
        let id = SessionId(NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed));
        let session = Session::new(id, self.clone());
        if self.is_shut_down() {
            // A session of a shut-down runtime is born ended: every use is a typed error.
            session.mark_ended(Error::RuntimeShutDown);
            return session;
        }
        self.ensure_maintainer();
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id, session.clone());
        tracing::info!(session = %id, "connscope: session started");
        session
    }

    /// The live session with this id, if any.
    pub fn find_session(&self, id: SessionId) -> Option<Session> {
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// How many sessions are live.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn forget_session(&self, id: SessionId) {
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Ordering::Acquire)
    }

    /// The grace period for in-flight users of a connection being closed.
    pub fn grace_period(&self) -> Duration {
        self.shared.settings.grace_period
    }

    /// Ends every session and releases every global value, awaiting all release hooks (and
    /// background releases still running, within the grace period). Idempotent.
    pub async fn shutdown(&self) -> ReleaseReport {
        let shared = &*self.shared;
        if shared.shut_down.swap(true, Ordering::AcqRel) {
            return ReleaseReport::default();
        }
        let sessions: Vec<Session> =
            shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut report = ReleaseReport::default();
        // End sessions concurrently: each may wait up to the grace period for its users.
        let mut ends = tokio::task::JoinSet::new();
        for s in sessions {
            ends.spawn(async move { s.end_with(Error::RuntimeShutDown, "runtime shutdown").await });
        }
        while let Some(ended) = ends.join_next().await {
            if let Ok(r) = ended {
                report.merge(r);
            }
        }
        report.merge(shared.global.close(RemovalCause::Shutdown, Error::RuntimeShutDown).await);
        shared.tracker.wait_idle(shared.settings.grace_period).await;
        if let Some(task) = shared.maintainer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        tracing::info!(released = report.released, "connscope: runtime shut down");
        report
    }

    /// Runs one maintenance pass now (expiry, LRU evictions, idle sessions). The background
    /// task does this every maintenance interval; tests and embedders may call it directly.
    pub async fn run_maintenance(&self) {
        maintain(&self.shared, self).await;
    }

    /// The cache of a resource in the global scope.
    pub(crate) fn global_cache<K, V>(
        &self,
        key: crate::cache::CacheKey,
        config: impl FnOnce() -> CacheConfig<V>,
    ) -> ResourceCache<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let config = || {
            self.ensure_maintainer();
            config()
        };
        self.shared.global.get_or_create(key, &self.shared.tracker, config)
    }

    /// Statistics of resource `id` summed over the global scope and every live session.
    pub(crate) fn resource_stats(&self, id: u64) -> crate::stats::StatsSnapshot {
        let mut total = self.shared.global.stats_of(id);
        let sessions: Vec<Session> =
            self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in sessions {
            total.add(&s.inner.caches.stats_of(id));
        }
        total
    }

    pub(crate) fn millis_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.shared.epoch).as_millis() as u64
    }

    /// Starts (or restarts, if its Tokio runtime went away) the maintenance task.
    pub(crate) fn ensure_maintainer(&self) {
        if self.is_shut_down() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let mut slot = self.shared.maintainer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        let interval = self.shared.settings.maintenance_interval;
        *slot = Some(handle.spawn(maintenance_loop(weak, interval)));
    }
}

async fn maintenance_loop(weak: Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = weak.upgrade() else { return };
        let rt = Runtime { shared };
        maintain(&rt.shared, &rt).await;
    }
}

async fn maintain(shared: &Shared, rt: &Runtime) {
    let now = Instant::now();
    for cache in shared.global.all() {
        cache.sweep(now).await;
    }
    let sessions: Vec<Session> =
        shared.sessions.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    let now_ms = rt.millis_since_epoch(now);
    for session in sessions {
        if let Some(idle) = shared.settings.idle_timeout
            && session.idle_since(now_ms, idle.as_millis() as u64)
        {
            let id = session.id();
            let _ = session.end_with(Error::SessionEnded { id }, "idle timeout").await;
            continue;
        }
        for cache in session.inner.caches.all() {
            cache.sweep(now).await;
        }
    }
}
