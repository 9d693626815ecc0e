//! `Conn<P>`: the handle an app holds. Connects lazily, shares the live client with many tasks
//! at once, checks it per the health-check policy, reconnects a global connection found closed,
//! and closes a retired client only after its last in-flight user let go.
//!
//! Exactness rules: a caller counts as a user of a client from the moment it reads it from the
//! slot (under the slot's lock), so a close that takes the client waits for it; a client taken
//! out of the slot is closed by a task of its own (tracked by the runtime), so a caller dropped
//! mid-close strands nothing; "this connect replaces a client found closed" is an argument of
//! the connect, never state left behind for a later one.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::provider::{HealthCheck, Provider};
use crate::runtime::{DEFAULT_GRACE_PERIOD, Shared};
use crate::session::SessionInner;
use crate::stats::CacheStats;

mod close;
mod rotate;
mod run;
pub(crate) use close::detached;
pub use run::RunError;

/// A cached connection handle for provider `P`. Cheap to clone; clones share one live client.
///
/// ```
/// use connscope::{Conn, Provider};
///
/// struct Echo;
/// impl Provider for Echo {
///     type Raw = String;
///     type Error = std::io::Error;
///     async fn connect(&self) -> Result<String, std::io::Error> { Ok("hello".into()) }
///     async fn is_open(&self, _raw: &String) -> bool { true }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let conn = Conn::new("echo", Echo);
/// assert_eq!(conn.counters().connects, 0);      // lazy
/// assert_eq!(&*conn.get().await.unwrap(), "hello");
/// conn.close().await;                            // closes and resets
/// assert_eq!(&*conn.get().await.unwrap(), "hello"); // reconnects
/// assert_eq!(conn.counters().connects, 2);
/// # }
/// ```
pub struct Conn<P: Provider> {
    inner: Arc<ConnInner<P>>,
}

impl<P: Provider> Clone for Conn<P> {
    fn clone(&self) -> Self {
        Conn { inner: Arc::clone(&self.inner) }
    }
}

struct ConnInner<P: Provider> {
    /// Unique among every handle this process made: the connection's part of a cache key.
    id: u64,
    name: Arc<str>,
    provider: P,
    health: HealthCheck,
    /// False for a connection made from a user's login: its credentials are gone, so a closed
    /// client means "log in again", not "reconnect".
    can_reconnect: bool,
    grace: Duration,
    /// Rebuild every live client this long after it connected ([`Connection::REFRESH`](crate::Connection::REFRESH)).
    refresh: Option<Duration>,
    live: RwLock<Option<Arc<Live<P::Raw>>>>,
    connect_lock: tokio::sync::Mutex<()>,
    released: AtomicBool,
    counters: Counters,
    cache_stats: Mutex<Option<Arc<CacheStats>>>,
    home: OnceLock<Home>,
    /// The handle that replaced this one when its settings changed (the secrets file was
    /// edited): a caller that looked this handle up just before is served by the successor
    /// once this one is released, instead of failing.
    successor: OnceLock<Conn<P>>,
}

/// The scope instance a connection handed out by [`Runtime::connection`](crate::Runtime::connection)
/// belongs to: where values derived from it (e.g. cached query results) live. Weak, so a
/// connection never keeps its runtime or session alive.
#[derive(Clone)]
pub(crate) enum Home {
    /// The runtime's global scope.
    Global(Weak<Shared>),
    /// One session.
    Session(Weak<SessionInner>),
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    reconnects: AtomicU64,
    closes: AtomicU64,
    health_checks: AtomicU64,
    retries: AtomicU64,
    rebuilds: AtomicU64,
    renewals: AtomicU64,
    rebuild_failures: AtomicU64,
}

/// What a connection handle has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    /// Successful `connect` calls.
    pub connects: u64,
    /// Live clients found closed and replaced by the call that found them closed (a replacement
    /// that failed is not one, and the next ordinary connect is not counted either).
    pub reconnects: u64,
    /// Live clients closed (each exactly once).
    pub closes: u64,
    /// `is_open` calls.
    pub health_checks: u64,
    /// Operations [`Conn::run`] ran again on a fresh client after theirs was lost.
    pub retries: u64,
    /// Live clients replaced ahead of their credentials' expiry ([`Provider::expires_at`]):
    /// the replacement connected, was swapped in, and the old client was drained and closed.
    pub rebuilds: u64,
    /// Live clients whose credentials were renewed in place ahead of their expiry
    /// ([`Provider::renew`]): no connect, no swap, nothing closed.
    pub renewals: u64,
    /// Rebuilds (or renewals) ahead of expiry that failed (the old client was kept and the
    /// rebuild retried with backoff).
    pub rebuild_failures: u64,
}

struct Live<R> {
    raw: R,
    users: AtomicUsize,
    drained: Notify,
    born: Instant,
    /// Milliseconds after `born` of the last successful health check.
    checked_at: AtomicU64,
    broken: AtomicBool,
}

/// Shared access to a live client; derefs to `P::Raw`. Many may exist at once. A client being
/// closed waits for its `ConnRef`s to be dropped (up to the grace period).
pub struct ConnRef<P: Provider> {
    live: Arc<Live<P::Raw>>,
}

impl<P: Provider> Deref for ConnRef<P> {
    type Target = P::Raw;
    fn deref(&self) -> &P::Raw {
        &self.live.raw
    }
}

impl<P: Provider> ConnRef<P> {
    /// Tells the handle this client failed: the next use runs `is_open` whatever the policy.
    pub fn report_broken(&self) {
        self.live.broken.store(true, Ordering::Release);
    }
}

impl<P: Provider> fmt::Debug for ConnRef<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnRef").field("provider", &std::any::type_name::<P>()).finish_non_exhaustive()
    }
}

impl<P: Provider> Drop for ConnRef<P> {
    fn drop(&mut self) {
        if self.live.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.drained.notify_waiters();
        }
    }
}

impl<P: Provider> fmt::Debug for Conn<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the settings: they may hold secrets.
        f.debug_struct("Conn")
            .field("name", &self.inner.name)
            .field("provider", &std::any::type_name::<P>())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// A connection's identity ([`Conn::id`]): cheap to copy, hash and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The identity of a named connection: a hash of what identifies it, in a range the
    /// counter of unnamed handles never reaches.
    pub(crate) fn named(parts: impl std::hash::Hash) -> Self {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        ConnId(BuildHasherDefault::<DefaultHasher>::default().hash_one(parts) | 1 << 63)
    }
}

impl<P: Provider> Conn<P> {
    /// A handle for provider settings `provider`, named `name` (used in errors and logs).
    /// Nothing connects until the first [`get`](Self::get).
    pub fn new(name: impl Into<Arc<str>>, provider: P) -> Self {
        Self::with_policy(name, provider, HealthCheck::DEFAULT, true, DEFAULT_GRACE_PERIOD)
    }

    /// A handle with an explicit health-check policy, reconnect rule and grace period. With
    /// `can_reconnect` false the handle connects once: a client found closed, or closed by
    /// [`close`](Self::close), gives [`Error::LoginRequired`] from then on.
    pub fn with_policy(
        name: impl Into<Arc<str>>,
        provider: P,
        health: HealthCheck,
        can_reconnect: bool,
        grace: Duration,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = ConnId(NEXT.fetch_add(1, Ordering::Relaxed));
        Self::with_id(id, name, provider, health, can_reconnect, grace)
    }

    /// A handle whose identity is given: a named connection's is derived from its type, name
    /// and settings, so it survives the handle being replaced (after its ttl, say).
    pub(crate) fn with_id(
        id: ConnId,
        name: impl Into<Arc<str>>,
        provider: P,
        health: HealthCheck,
        can_reconnect: bool,
        grace: Duration,
    ) -> Self {
        Conn {
            inner: Arc::new(ConnInner {
                id: id.0,
                name: name.into(),
                provider,
                health,
                can_reconnect,
                grace,
                refresh: None,
                live: RwLock::new(None),
                connect_lock: tokio::sync::Mutex::new(()),
                released: AtomicBool::new(false),
                counters: Counters::default(),
                cache_stats: Mutex::new(None),
                home: OnceLock::new(),
                successor: OnceLock::new(),
            }),
        }
    }

    /// Rebuilds every live client `period` after it connected (a provider's
    /// `#[connection(refresh = "...")]`). Only before the handle is shared (right after it was made).
    pub(crate) fn refresh_every(mut self, period: Option<Duration>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.refresh = period.filter(|p| !p.is_zero());
        }
        self
    }

    /// A handle around a client that is already connected (a login): it never reconnects, so
    /// a client found closed gives [`Error::LoginRequired`].
    pub(crate) fn connected(
        name: impl Into<Arc<str>>,
        provider: P,
        raw: P::Raw,
        health: HealthCheck,
        grace: Duration,
    ) -> Self {
        let conn = Self::with_policy(name, provider, health, false, grace);
        *conn.inner.live.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Live::new(raw)));
        conn.inner.counters.connects.fetch_add(1, Ordering::Relaxed);
        conn
    }

    /// This connection's identity: equal for clones of one handle, and for every handle of a
    /// named connection (`Runtime::connection`) with the same provider type, name and
    /// settings, even after it was closed and replaced; different for any other connection.
    /// What a `#[cached_resource]` key holds for a `Conn` argument.
    pub fn id(&self) -> ConnId {
        ConnId(self.inner.id)
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The provider settings this handle connects with.
    pub fn provider(&self) -> &P {
        &self.inner.provider
    }

    /// Whether a live client is held right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Whether this handle was released (read-only; the metrics exporter's test for a handle
    /// whose counters no longer move).
    #[cfg(feature = "metrics")]
    pub(crate) fn is_released(&self) -> bool {
        self.inner.released.load(Ordering::Acquire)
    }

    /// What this handle has done so far.
    pub fn counters(&self) -> ConnCounters {
        let c = &self.inner.counters;
        ConnCounters {
            connects: c.connects.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            closes: c.closes.load(Ordering::Relaxed),
            health_checks: c.health_checks.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
            rebuild_failures: c.rebuild_failures.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn attach_stats(&self, stats: Arc<CacheStats>) {
        *self.inner.cache_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// The handle that replaces this one (its settings changed): serves callers that still
    /// hold this one once it is released.
    pub(crate) fn set_successor(&self, next: Conn<P>) {
        let _ = self.inner.successor.set(next);
    }

    pub(crate) fn attach_home(&self, home: Home) {
        let _ = self.inner.home.set(home);
    }

    /// The scope instance this handle belongs to (none for a handle built with [`Conn::new`]).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")), allow(dead_code))]
    pub(crate) fn home(&self) -> Option<&Home> {
        self.inner.home.get()
    }

    fn current(&self) -> Option<Arc<Live<P::Raw>>> {
        self.inner.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live client with the caller counted as its user, read under the slot's lock: a
    /// close that takes the client out of the slot after this sees the user and waits for it.
    fn current_user(&self) -> Option<ConnRef<P>> {
        self.inner
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|live| ConnRef::new(Arc::clone(live)))
    }

    /// Shared access to the live client, connecting first if there is none. Runs `is_open`
    /// per the health-check policy; a client found closed is closed and, for a connection that
    /// can reconnect, replaced transparently (else [`Error::LoginRequired`]).
    ///
    /// The caller counts as a user of the client while its check runs, so a
    /// [`close`](Self::close) meanwhile waits for it and never closes a client this hands out.
    /// Dropping the returned future at any point strands nothing: a client found closed is
    /// closed anyway.
    pub async fn get(&self) -> Result<ConnRef<P>, Error> {
        let got = self.get_here().await;
        if got.is_ok() {
            return got;
        }
        // Released because its settings changed: the handle that replaced it serves the caller
        // (followed in a loop: a successor may have been replaced in turn).
        let mut next = self.successor();
        while let Some(conn) = next {
            match conn.get_here().await {
                Err(_) if conn.successor().is_some() => next = conn.successor(),
                got => return got,
            }
        }
        got
    }

    /// The handle that replaced this released one, if any.
    fn successor(&self) -> Option<Conn<P>> {
        if !self.inner.released.load(Ordering::Acquire) {
            return None;
        }
        self.inner.successor.get().cloned()
    }

    async fn get_here(&self) -> Result<ConnRef<P>, Error> {
        let Some(user) = self.current_user() else {
            return self.connect(false).await;
        };
        if !self.needs_check(&user.live) {
            return Ok(user);
        }
        self.inner.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        if self.inner.provider.is_open(&user.live.raw).await {
            user.live.broken.store(false, Ordering::Release);
            user.live.checked_at.store(millis_since(user.live.born), Ordering::Relaxed);
            return Ok(user);
        }
        tracing::warn!(connection = %self.inner.name, "connscope: connection found closed");
        let live = Arc::clone(&user.live);
        drop(user);
        let retired = self.retire(live).await;
        if !self.inner.can_reconnect {
            return Err(Error::LoginRequired {
                connection: self.inner.name.to_string(),
                reason: "the connection was found closed; log in again",
            });
        }
        self.connect(retired).await
    }

    fn needs_check(&self, live: &Live<P::Raw>) -> bool {
        match self.inner.health {
            HealthCheck::EveryUse => true,
            HealthCheck::OnError => live.broken.load(Ordering::Acquire),
            HealthCheck::Interval(every) => {
                live.broken.load(Ordering::Acquire)
                    || millis_since(live.born).saturating_sub(live.checked_at.load(Ordering::Relaxed))
                        >= every.as_millis() as u64
            }
        }
    }

    /// Connects unless someone else did meanwhile. `replacing` is true for the one call that
    /// took a client found closed out of the slot: it counts the replacement (done by itself,
    /// or by a concurrent connect it found in place).
    async fn connect(&self, replacing: bool) -> Result<ConnRef<P>, Error> {
        let _guard = self.inner.connect_lock.lock().await;
        if self.inner.released.load(Ordering::Acquire) {
            return Err(self.released_error());
        }
        // Someone else connected while we waited for the lock.
        if let Some(user) = self.current_user() {
            if replacing {
                self.count_reconnect();
            }
            return Ok(user);
        }
        // A login's credentials were wiped after its one connect: never connect with what is left.
        if !self.inner.can_reconnect && self.inner.counters.connects.load(Ordering::Relaxed) > 0 {
            return Err(Error::LoginRequired {
                connection: self.inner.name.to_string(),
                reason: "the connection was closed; log in again",
            });
        }
        let raw = self.inner.provider.connect().await.map_err(|e| Error::connect(&*self.inner.name, e))?;
        // Counted as the caller's before anyone else can see it.
        let user = ConnRef::new(Arc::new(Live::new(raw)));
        *self.inner.live.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&user.live));
        self.inner.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.schedule_rebuild(&user.live);
        if replacing {
            self.count_reconnect();
        } else {
            tracing::info!(connection = %self.inner.name, "connscope: connected");
        }
        Ok(user)
    }

    fn count_reconnect(&self) {
        self.inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = &*self.inner.cache_stats.lock().unwrap_or_else(|p| p.into_inner()) {
            stats.reconnect();
        }
        tracing::info!(connection = %self.inner.name, "connscope: reconnected");
    }

    /// Takes `live` out of the slot (if it is still there) and closes it: waits for the close
    /// if nobody else uses it, else lets it finish in the background once its users let go.
    /// Returns whether this call took it (and so is the one replacing it).
    async fn retire(&self, live: Arc<Live<P::Raw>>) -> bool {
        {
            let mut slot = self.inner.live.write().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Some(cur) if Arc::ptr_eq(cur, &live) => *slot = None,
                // Already retired (or closed) by someone else, who closes it.
                _ => return false,
            }
        }
        let in_use = live.users.load(Ordering::Acquire) > 0;
        self.close_taken(live, !in_use).await;
        true
    }

    /// Closes the live client, if any, and resets the handle: the next `get` reconnects (a
    /// handle that cannot reconnect, a login's, asks to log in again instead). Never connects
    /// just to close; idempotent; waits (up to the grace period) for in-flight users.
    /// Dropping the returned future does not stop the close of a client it took.
    pub async fn close(&self) {
        let live = self.inner.live.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(live) = live {
            self.close_taken(live, true).await;
        }
    }

    /// Closes for good: what a cache's release hook does. A connect in progress is waited for
    /// and closed too; later `get`s fail with a message saying to fetch a fresh handle. Runs to
    /// the end even if the returned future is dropped.
    pub(crate) async fn release(&self) {
        self.inner.released.store(true, Ordering::Release);
        let this = self.clone();
        detached(async move {
            let _guard = this.inner.connect_lock.lock().await;
            this.close().await;
        })
        .await;
    }

    fn released_error(&self) -> Error {
        Error::LoginRequired {
            connection: self.inner.name.to_string(),
            reason: "this handle was released (ttl, eviction, session end or shutdown); \
                     get a fresh one with `Runtime::connection`",
        }
    }
}

impl<R> Live<R> {
    fn new(raw: R) -> Self {
        Live {
            raw,
            users: AtomicUsize::new(0),
            drained: Notify::new(),
            born: Instant::now(),
            checked_at: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        }
    }
}

impl<P: Provider> ConnRef<P> {
    fn new(live: Arc<Live<P::Raw>>) -> Self {
        live.users.fetch_add(1, Ordering::AcqRel);
        ConnRef { live }
    }
}

fn millis_since(t: Instant) -> u64 {
    Instant::now().saturating_duration_since(t).as_millis() as u64
}

#[cfg(test)]
mod tests;
