//! The runtime: owns the global caches, the session registry, the configuration, and the
//! maintenance task that expires values, ends idle sessions and applies evictions.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::{
    CacheConfig, CacheSet, Outcome, ReleaseTracker, Releaser, ResourceCache, Timers, spawn_background,
};
use crate::error::{Error, ReleaseReport};
use crate::secrets::Config;
use crate::session::{Session, SessionId};
use crate::stats::RemovalCause;

/// Default period of the maintenance task: expired values are released within this bound
/// (plus the time their hooks take).
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Default time `Session::end` / `Runtime::shutdown` wait for in-flight users of a connection.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
pub use crate::cache::DEFAULT_HOOK_TIMEOUT;
/// Default idle timeout of a session: ended after 30 minutes without activity.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime of a session (OWASP's absolute timeout): ended 8 hours after it
/// started, however active.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

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
    /// Deadlines of caches and sessions: what maintenance visits.
    pub(crate) timers: Arc<Timers>,
    sessions: Mutex<Registry>,
    /// The releasers of resources another runtime used first, by resource id, shared by their
    /// caches in this runtime's sessions (each a `Releaser<V>`).
    releasers: Mutex<HashMap<u64, Arc<dyn Any + Send + Sync>>>,
    pub(crate) tracker: Arc<ReleaseTracker>,
    pub(crate) config: Config,
    /// The named connections handed out so far, by provider type and name: what a change of
    /// the secrets file is checked against.
    pub(crate) named: crate::named::NamedRegistry,
    /// When the secrets file is polled next (milliseconds since the epoch), and whether a poll runs.
    next_secrets_poll: AtomicU64,
    polling_secrets: AtomicBool,
    settings: Settings,
    shut_down: AtomicBool,
    /// The shutdown's report, once it finished: every caller of `shutdown` waits for it.
    shutdown_done: Outcome,
    maintainer: Mutex<Option<JoinHandle<()>>>,
    /// The shared tier, started on first use (`None` inside: Redis is not configured).
    #[cfg(feature = "redis")]
    tier: OnceLock<Option<Arc<crate::redis::Tier>>>,
}

/// The live sessions, and whether shutdown has begun: one lock, so a session created while
/// shutdown takes its snapshot is either in the snapshot or born ended.
#[derive(Default)]
struct Registry {
    /// The sessions by id. (A set of the handles, found through the id each carries, would take
    /// 8 bytes a bucket instead of 16, about 10 bytes a session, but a rehash would then read
    /// every session to hash it.)
    sessions: HashMap<SessionId, Session>,
    closed: bool,
}

#[derive(Clone, Debug)]
struct Settings {
    idle_timeout: Option<Duration>,
    session_lifetime: Option<Duration>,
    maintenance_interval: Duration,
    grace_period: Duration,
    hook_timeout: Duration,
    /// `None`: the secrets file is not watched.
    secrets_poll_interval: Option<Duration>,
    /// Redis as given in code (`None`: from `[redis]` or `REDIS_URL`; `Some(None)`: off).
    #[cfg(feature = "redis")]
    redis: Option<Option<crate::redis::RedisSettings>>,
}

impl Shared {
    /// How often watched credentials files are polled.
    pub(crate) fn secrets_poll_interval(&self) -> Duration {
        self.settings.secrets_poll_interval.unwrap_or(crate::watch::DEFAULT_SECRETS_POLL_INTERVAL)
    }
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
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                session_lifetime: Some(DEFAULT_SESSION_LIFETIME),
                maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
                grace_period: DEFAULT_GRACE_PERIOD,
                hook_timeout: DEFAULT_HOOK_TIMEOUT,
                secrets_poll_interval: Some(crate::watch::DEFAULT_SECRETS_POLL_INTERVAL),
                #[cfg(feature = "redis")]
                redis: None,
            },
            config: crate::secrets::ConfigBuilder::default(),
        }
    }
}

impl RuntimeBuilder {
    /// End sessions with no activity (no `Session::run`, no `touch`) for this long (default
    /// 30 minutes). A session with a request running is never ended for being idle.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = Some(timeout);
        self
    }

    /// Never end sessions for being idle (they end explicitly, by lifetime, or at shutdown).
    pub fn no_idle_timeout(mut self) -> Self {
        self.settings.idle_timeout = None;
        self
    }

    /// End sessions this long after they started, however active (default 8 hours; OWASP's
    /// absolute timeout). The end waits for no request: it starts at the first maintenance pass
    /// with none running.
    pub fn max_session_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.session_lifetime = Some(lifetime);
        self
    }

    /// Never end sessions for their age.
    pub fn no_session_lifetime(mut self) -> Self {
        self.settings.session_lifetime = None;
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

    /// How long one release hook, or one connection's close, may run (default 30 s). One still
    /// running then is dropped (cancelled at its current `.await`), reported as a failed
    /// release ([`ReleaseReport`]'s `failures`, the cache's `release_failures`) or logged as a
    /// warning for a connection: a hook that never finishes cannot hold up a session's end
    /// or the shutdown. Counted from when the hook starts, after the grace period's wait for
    /// users.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.settings.hook_timeout = timeout;
        self
    }

    /// How often the secrets file (and a `password_file` credential source) is checked for
    /// changes (default 1 s; a check compares the file's length, modification time and a
    /// digest of its content). The secrets file is checked on a maintenance pass, so no more
    /// often than [`maintenance_interval`](Self::maintenance_interval).
    ///
    /// When the resolved settings of a named connection change, new lookups
    /// ([`Runtime::connection`]) get a connection made with the new settings (for a global
    /// connection, connected before it is handed out), and the old one is drained (in-flight
    /// users finish) and closed exactly once; a caller still holding the old handle is served by
    /// the new one. A file that becomes invalid (bad TOML, or a setting the provider rejects)
    /// keeps the last good settings and logs one warning saying why (never a value).
    pub fn secrets_poll_interval(mut self, interval: Duration) -> Self {
        self.settings.secrets_poll_interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Never check the secrets file again after the runtime is built.
    pub fn no_secrets_watch(mut self) -> Self {
        self.settings.secrets_poll_interval = None;
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

    /// Shares results, invalidations and session ends with other instances through this Redis
    /// (instead of `[redis]` in the secrets file or `REDIS_URL`).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, settings: crate::redis::RedisSettings) -> Self {
        self.settings.redis = Some(Some(settings));
        self
    }

    /// Keeps this runtime to itself even when `[redis]` or `REDIS_URL` configure Redis.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn no_redis(mut self) -> Self {
        self.settings.redis = Some(None);
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
        let timers = Arc::new(Timers::default());
        let rt = Runtime {
            shared: Arc::new(Shared {
                id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
                epoch: Instant::now(),
                global: CacheSet::new(Arc::clone(&timers)),
                timers,
                sessions: Mutex::new(Registry::default()),
                releasers: Mutex::default(),
                tracker: Arc::new(ReleaseTracker::new(self.settings.hook_timeout)),
                config: self.config.build(),
                named: Default::default(),
                next_secrets_poll: AtomicU64::new(0),
                polling_secrets: AtomicBool::new(false),
                settings: self.settings,
                shut_down: AtomicBool::new(false),
                shutdown_done: Outcome::default(),
                maintainer: Mutex::new(None),
                #[cfg(feature = "redis")]
                tier: OnceLock::new(),
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
        {
            let mut registry = self.registry();
            if registry.closed {
                // A session of a shut-down runtime is born ended: every use is a typed error.
                session.mark_ended(Error::RuntimeShutDown);
                return session;
            }
            registry.sessions.insert(id, session.clone());
        }
        session.schedule_expiry(Instant::now());
        self.ensure_maintainer();
        tracing::info!(session = %id, "connscope: session started");
        session
    }

    /// The live session with this id, if any.
    pub fn find_session(&self, id: SessionId) -> Option<Session> {
        self.registry().sessions.get(&id).filter(|s| !s.is_ended()).cloned()
    }

    /// How many sessions are live (an ending session counts until its end finished).
    pub fn session_count(&self) -> usize {
        self.registry().sessions.len()
    }

    pub(crate) fn forget_session(&self, id: SessionId) {
        self.registry().sessions.remove(&id);
    }

    /// The releaser of resource `id` in this runtime, made by `make` on first use.
    pub(crate) fn releaser<V: Send + Sync + 'static>(
        &self,
        id: u64,
        make: impl FnOnce() -> Releaser<V>,
    ) -> Arc<Releaser<V>> {
        let mut releasers = self.shared.releasers.lock().unwrap_or_else(|p| p.into_inner());
        let any = releasers.entry(id).or_insert_with(|| Arc::new(make()));
        match Arc::clone(any).downcast::<Releaser<V>>() {
            Ok(releaser) => releaser,
            // Resource ids are unique per resource, and so its value type.
            Err(_) => unreachable!("connscope: releaser registered with another value type"),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.shared.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sessions(&self) -> Vec<Session> {
        self.registry().sessions.values().cloned().collect()
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
    /// background work still running: releases, session ends, connection closes, within the
    /// grace period), and returns the report of what was released.
    ///
    /// The work runs in a task of its own: a caller that is dropped mid-way (a `timeout` around
    /// it) stops waiting, nothing more. Calling it again, or concurrently, waits for the same
    /// shutdown; the report is handed out once, to the first caller that receives it (the others
    /// get an empty one). Sessions created from now on are born ended.
    pub async fn shutdown(&self) -> ReleaseReport {
        let first = {
            let mut registry = self.registry();
            let first = !registry.closed;
            registry.closed = true;
            self.shared.shut_down.store(true, Ordering::Release);
            first
        };
        if first {
            let rt = self.clone();
            drop(spawn_background(async move {
                let report = rt.shut_down_now().await;
                rt.shared.shutdown_done.finish(report);
            }));
        }
        self.shared.shutdown_done.wait().await
    }

    async fn shut_down_now(&self) -> ReleaseReport {
        let shared = &*self.shared;
        let mut report = ReleaseReport::default();
        // End every session, in one share per worker thread of the Tokio runtime (the hooks of
        // a shutdown then run on every worker, not one after another on this one): each share
        // ends its sessions right where it runs when an end finishes at once (no hook waits:
        // the common case, which costs no task and no memory held), else in a task of its own,
        // so a session waiting for its connections' users never holds up the others.
        let sessions = self.sessions();
        let workers = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers()).max(1);
        let share = sessions.len().div_ceil(workers).max(1);
        let mut shares: Vec<Vec<Session>> = Vec::with_capacity(workers);
        let mut rest = sessions.into_iter();
        loop {
            let part: Vec<Session> = rest.by_ref().take(share).collect();
            if part.is_empty() {
                break;
            }
            shares.push(part);
        }
        let here = shares.pop().unwrap_or_default();
        let others: Vec<_> = shares.into_iter().map(|part| spawn_background(end_sessions(part))).collect();
        report.merge(end_sessions(here).await);
        for share in others {
            report.merge(share.await.unwrap_or_default());
        }
        report.merge(shared.global.close(RemovalCause::Shutdown, Error::RuntimeShutDown).await);
        if !shared.tracker.wait_idle(shared.settings.grace_period).await {
            tracing::warn!(
                pending = shared.tracker.pending(),
                grace = ?shared.settings.grace_period,
                "connscope: shutdown stopped waiting for background work after the grace period"
            );
        }
        if let Some(task) = shared.maintainer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        #[cfg(feature = "redis")]
        if let Some(Some(tier)) = shared.tier.get() {
            tier.stop();
        }
        tracing::info!(released = report.released, "connscope: runtime shut down");
        report
    }

    /// The shared tier, started on first call; `None` when Redis is not configured (or its
    /// settings are wrong: logged once).
    #[cfg(feature = "redis")]
    pub(crate) fn tier(&self) -> Option<&Arc<crate::redis::Tier>> {
        self.shared
            .tier
            .get_or_init(|| {
                let settings = match &self.shared.settings.redis {
                    Some(given) => Ok(given.clone()),
                    None => self.shared.config.redis(),
                };
                let started = settings.and_then(|s| s.map(crate::redis::Tier::start).transpose());
                started.unwrap_or_else(|message| {
                    tracing::error!(%message, "connscope: [redis] is not usable; this instance shares nothing");
                    None
                })
            })
            .as_ref()
    }

    /// Counters and state of the shared tier (`None` until a shared resource or session first
    /// used it, or when Redis is not configured).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_stats(&self) -> Option<crate::redis::RedisStats> {
        self.shared.tier.get().and_then(|t| t.as_ref()).map(|t| t.stats())
    }

    /// The key prefix of the started shared tier.
    #[cfg(all(feature = "metrics", feature = "redis"))]
    pub(crate) fn redis_prefix(&self) -> Option<String> {
        self.shared.tier.get().and_then(|t| t.as_ref()).map(|t| t.settings.prefix.clone())
    }

    /// Runs one maintenance pass now (expiry, LRU evictions, idle sessions). The background
    /// task does this every maintenance interval; tests and embedders may call it directly.
    pub async fn run_maintenance(&self) {
        maintain(self).await;
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
            // Every request may hit a global cache: it may split its store by key.
            CacheConfig { concurrent: true, ..config() }
        };
        self.shared.global.get_or_create(key, &self.shared.tracker, config)
    }

    /// Statistics of resource `id` summed over the global scope and every live session.
    pub(crate) fn resource_stats(&self, id: u64) -> crate::stats::StatsSnapshot {
        let mut total = self.shared.global.stats_of(id);
        for s in self.sessions() {
            total.add(&s.inner.caches.stats_of(id));
        }
        total
    }

    /// The session idle timeout and lifetime, in milliseconds.
    pub(crate) fn session_limits(&self) -> (Option<u64>, Option<u64>) {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        let s = &self.shared.settings;
        (s.idle_timeout.map(ms), s.session_lifetime.map(ms))
    }

    /// Starts a check of the secrets file if one is due and none runs (from maintenance).
    fn poll_secrets_if_due(&self) {
        let Some(every) = self.shared.settings.secrets_poll_interval else { return };
        let now = self.millis_since_epoch(Instant::now());
        if now < self.shared.next_secrets_poll.load(Ordering::Relaxed)
            || self.shared.polling_secrets.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let every = every.as_millis().min(u128::from(u64::MAX)) as u64;
        self.shared.next_secrets_poll.store(now.saturating_add(every), Ordering::Relaxed);
        let rt = self.clone();
        drop(spawn_background(async move {
            rt.poll_secrets().await;
            rt.shared.polling_secrets.store(false, Ordering::Release);
        }));
    }

    pub(crate) fn maintenance_interval(&self) -> Duration {
        self.shared.settings.maintenance_interval
    }

    /// The instant `ms` milliseconds after the runtime's epoch.
    pub(crate) fn instant_at(&self, ms: u64) -> Instant {
        self.shared.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn millis_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.shared.epoch).as_millis() as u64
    }

    /// Starts the maintenance task: on the current Tokio runtime (so paused time in tests
    /// applies to it), else on connscope's own. If that Tokio runtime goes away (a test's
    /// runtime, dropped at the end of the test), the task moves to connscope's own runtime by
    /// itself: values still expire and idle sessions still end with no further call.
    pub(crate) fn ensure_maintainer(&self) {
        if self.is_shut_down() {
            return;
        }
        let mut slot = self.shared.maintainer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let handle = tokio::runtime::Handle::try_current().unwrap_or_else(|_| crate::cache::own_runtime());
        *slot = Some(spawn_maintenance(&handle, Arc::downgrade(&self.shared)));
    }
}

fn spawn_maintenance(handle: &tokio::runtime::Handle, weak: Weak<Shared>) -> JoinHandle<()> {
    let interval = weak.upgrade().map_or(DEFAULT_MAINTENANCE_INTERVAL, |s| s.settings.maintenance_interval);
    let guard = Relocate(Some(weak.clone()));
    handle.spawn(async move {
        let mut guard = guard;
        maintenance_loop(weak, interval).await;
        guard.0 = None;
    })
}

/// Dropped with the maintenance task: when that happens because its Tokio runtime went away
/// (not because the loop returned or shutdown aborted it), restarts it on connscope's own.
struct Relocate(Option<Weak<Shared>>);

impl Drop for Relocate {
    fn drop(&mut self) {
        let Some(weak) = self.0.take() else { return };
        let Some(shared) = weak.upgrade() else { return };
        if shared.shut_down.load(Ordering::Acquire) {
            return;
        }
        let own = crate::cache::own_runtime();
        if let Ok(mut slot) = shared.maintainer.try_lock() {
            *slot = Some(spawn_maintenance(&own, weak));
        }
    }
}

async fn maintenance_loop(weak: Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = weak.upgrade() else { return };
        let rt = Runtime { shared };
        maintain(&rt).await;
        rt.poll_secrets_if_due();
    }
}

/// One pass: visit what is due on the runtime's timers (caches with values past their TTL,
/// sessions that may be idle or too old), in batches, yielding between them. Its cost follows
/// what is due, not how many sessions or caches are alive; ending a session and running release
/// hooks happen in the background.
/// Ends `sessions` for a shutdown: each right here when its end finishes at once, else in a
/// task of its own; returns their reports merged.
async fn end_sessions(sessions: Vec<Session>) -> ReleaseReport {
    let mut report = ReleaseReport::default();
    let mut slow = Vec::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let mut end = Box::pin(async move { s.end_here(Error::RuntimeShutDown, "runtime shutdown").await });
        match std::future::poll_fn(|cx| std::task::Poll::Ready(end.as_mut().poll(cx))).await {
            std::task::Poll::Ready(r) => report.merge(r),
            std::task::Poll::Pending => slow.push(spawn_background(end)),
        }
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    for end in slow {
        report.merge(end.await.unwrap_or_default());
    }
    report
}

async fn maintain(rt: &Runtime) {
    const BATCH: usize = 1024;
    let now = Instant::now();
    let timers = &rt.shared.timers;
    loop {
        let due = timers.take_due(now, BATCH);
        let more = due.len() == BATCH;
        for target in due {
            if let Some(target) = target.upgrade() {
                target.run_due(now, timers);
            }
        }
        if !more {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Statistics of every cache (the counters live with the caches, in `stats`).
impl Runtime {
    /// Every cache of this runtime and its statistics, sorted by scope and name: each global
    /// cache, and each session-scoped cache summed over the live sessions (read-only; a session
    /// that ended no longer counts here). A dashboard's or an exporter's view; see
    /// `Runtime::export_metrics` (feature `metrics`) for counters that never go down.
    pub fn cache_stats(&self) -> Vec<crate::stats::CacheStatsEntry> {
        let mut by_name: std::collections::BTreeMap<(u8, String), crate::stats::StatsSnapshot> =
            Default::default();
        self.shared.global.each_stats(|name, s| by_name.entry((0, name.to_owned())).or_default().add(&s));
        for session in self.sessions() {
            session
                .inner
                .caches
                .each_stats(|name, s| by_name.entry((1, name.to_owned())).or_default().add(&s));
        }
        by_name
            .into_iter()
            .map(|((scope, name), stats)| crate::stats::CacheStatsEntry {
                name,
                scope: if scope == 0 { crate::Scope::Global } else { crate::Scope::Session },
                stats,
            })
            .collect()
    }
}
