//! The shared tier of one runtime: its Redis connections, its state (connecting, up, down), the
//! local caches of its shared resources (what a broadcast invalidation reaches), the loads
//! waiting for another instance, the invalidations kept while Redis is away, and its counters.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::bus::{self, Message};
use super::codec::Keys;
use super::settings::RedisSettings;
use crate::cache::{BoxFuture, ResourceCache, own_runtime};

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Invalidations kept while Redis is away, published when it is back; past this many, every
/// shared resource is cleared everywhere instead.
const MAX_PENDING: usize = 10_000;

/// The resource whose values are named by generation counters instead of being deleted: the
/// SQL query cache (`{prefix}:sql:g:…`). Its invalidation bumps a counter; values read at the
/// old count are never read again and expire in Redis by their ttl.
pub(crate) const GENERATIONS: &str = "sql";

/// Bumps a generation counter and publishes the invalidation, atomically (a reader that sees
/// the message reads the new count). KEYS: counter, channel. ARGV: message.
const BUMP: &str = r"
redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1";

/// Whether this instance currently reaches Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisState {
    /// The first confirmation of the bus has not arrived yet (Redis is used meanwhile).
    Connecting,
    /// The bus was confirmed within the invalidation bound.
    Up,
    /// Redis is away: calls are served from this instance's own loads.
    Down,
}

/// Counters of the shared tier of one runtime ([`Runtime::redis_stats`](crate::Runtime::redis_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Values found in Redis on a local miss (computed by some instance before).
    pub remote_hits: u64,
    /// Local misses that found nothing in Redis and computed the value here.
    pub computed: u64,
    /// Local misses that waited for another instance computing the same value.
    pub waited: u64,
    /// Loads taken over from an instance whose lock expired (it died or hung).
    pub takeovers: u64,
    /// Values computed here and stored in Redis.
    pub stored: u64,
    /// Values computed here but not stored, because an invalidation came first.
    pub store_refused: u64,
    /// Redis commands that failed or timed out (each call went on without Redis).
    pub failures: u64,
    /// Invalidations and clears this instance broadcast.
    pub invalidations_sent: u64,
    /// Invalidations and clears received from other instances.
    pub invalidations_received: u64,
    /// Times Redis went away (one warning each).
    pub outages: u64,
    /// Stored values that could not be decoded (another encoding), treated as missing.
    pub decode_failures: u64,
    /// Whether Redis is reachable now.
    pub state: Option<RedisState>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) remote_hits: AtomicU64,
    pub(crate) computed: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) store_refused: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) invalidations_sent: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A shared resource's local cache, as the bus reaches it: by the key's bytes.
pub(crate) trait Local: Send + Sync {
    fn invalidate(&self, key: &[u8]) -> BoxFuture<'static, ()>;
    fn clear(&self) -> BoxFuture<'static, ()>;
}

struct LocalCache<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache: ResourceCache<K, V>,
    decode_key: fn(&[u8]) -> Option<K>,
}

impl<K, V> Local for LocalCache<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn invalidate(&self, key: &[u8]) -> BoxFuture<'static, ()> {
        let cache = self.cache.clone();
        let key = (self.decode_key)(key);
        Box::pin(async move {
            if let Some(key) = key {
                cache.invalidate(&key).await;
            }
        })
    }

    fn clear(&self) -> BoxFuture<'static, ()> {
        let cache = self.cache.clone();
        Box::pin(async move {
            cache.clear().await;
        })
    }
}

/// What to publish once Redis is back.
#[derive(Default)]
struct Pending {
    invalidations: Vec<(String, Vec<u8>)>,
    clears: Vec<String>,
    /// Too many to keep: clear every shared resource everywhere.
    overflow: bool,
    /// Session ends (digests of cookie ids) whose record deletion or broadcast failed.
    session_ends: Vec<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.overflow
            && self.invalidations.is_empty()
            && self.clears.is_empty()
            && self.session_ends.is_empty()
    }
}

/// What a session end broadcast by another instance does here (gets the digest of the cookie id).
pub(crate) type SessionEndFn = dyn Fn(String) + Send + Sync;
pub(crate) type SessionEndHook = Arc<SessionEndFn>;

pub(crate) struct Tier {
    pub(crate) settings: RedisSettings,
    pub(crate) client: redis::Client,
    conn: ConnectionManager,
    /// `{prefix}:bus`
    pub(crate) channel: Vec<u8>,
    /// This instance, on the bus (random): its own messages are not applied twice.
    pub(crate) instance: u64,
    state: AtomicU8,
    /// The state again, for callers waiting for the first confirmation.
    state_changes: tokio::sync::watch::Sender<u8>,
    /// Set once the first warning of an outage was logged; cleared when Redis is back.
    pub(crate) warned: AtomicBool,
    locals: Mutex<HashMap<String, Arc<dyn Local>>>,
    waiters: Mutex<HashMap<Vec<u8>, Weak<Notify>>>,
    pending: Mutex<Pending>,
    /// A flush of `pending` is running.
    flushing: AtomicBool,
    pub(crate) counters: Counters,
    /// What a session end broadcast by another instance does here: one hook per live
    /// `WebSessions` (dropped ones are pruned).
    session_end: Mutex<Vec<Weak<SessionEndFn>>>,
    task: Mutex<Option<AbortHandle>>,
}

impl Tier {
    /// Connects lazily (nothing blocks here) and starts the bus, on connscope's own thread, so
    /// neither outlives nor depends on the Tokio runtime of the caller.
    pub(crate) fn start(settings: RedisSettings) -> Result<Arc<Tier>, String> {
        let client = redis::Client::open(settings.url.expose())
            .map_err(|e| format!("`url` is not a Redis URL ({})", e.kind_name_quiet()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.command_timeout))
            .set_connection_timeout(Some(settings.command_timeout))
            .set_number_of_retries(1);
        let conn = {
            let _enter = own_runtime().enter();
            ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(|e| format!("cannot set up the Redis connection ({})", e.kind_name_quiet()))?
        };
        let mut instance = [0u8; 8];
        let _ = getrandom::fill(&mut instance);
        let tier = Arc::new(Tier {
            channel: format!("{}:bus", settings.prefix).into_bytes(),
            settings,
            client,
            conn,
            instance: u64::from_le_bytes(instance),
            state: AtomicU8::new(CONNECTING),
            state_changes: tokio::sync::watch::Sender::new(CONNECTING),
            warned: AtomicBool::new(false),
            locals: Mutex::default(),
            waiters: Mutex::default(),
            pending: Mutex::default(),
            flushing: AtomicBool::new(false),
            counters: Counters::default(),
            session_end: Mutex::default(),
            task: Mutex::default(),
        });
        let task = own_runtime().spawn(bus::run(Arc::downgrade(&tier)));
        *lock(&tier.task) = Some(task.abort_handle());
        Ok(tier)
    }

    /// Stops the bus (the runtime shut down).
    pub(crate) fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.state.load(Ordering::Acquire) == DOWN
    }

    /// Waits (at most one command timeout) for the bus's first confirmation, so that nothing
    /// cached here predates this instance's subscription to invalidations.
    pub(crate) async fn connected(&self) {
        if self.state.load(Ordering::Acquire) != CONNECTING {
            return;
        }
        let mut changes = self.state_changes.subscribe();
        let _ =
            tokio::time::timeout(self.settings.command_timeout, changes.wait_for(|s| *s != CONNECTING)).await;
    }

    pub(crate) fn state(&self) -> RedisState {
        match self.state.load(Ordering::Acquire) {
            CONNECTING => RedisState::Connecting,
            UP => RedisState::Up,
            _ => RedisState::Down,
        }
    }

    /// Sets the state; returns the previous one.
    pub(crate) fn set_state(&self, state: RedisState) -> RedisState {
        let v = match state {
            RedisState::Connecting => CONNECTING,
            RedisState::Up => UP,
            RedisState::Down => DOWN,
        };
        self.state_changes.send_replace(v);
        match self.state.swap(v, Ordering::AcqRel) {
            CONNECTING => RedisState::Connecting,
            UP => RedisState::Up,
            _ => RedisState::Down,
        }
    }

    pub(crate) fn stats(&self) -> RedisStats {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            remote_hits: r(&c.remote_hits),
            computed: r(&c.computed),
            waited: r(&c.waited),
            takeovers: r(&c.takeovers),
            stored: r(&c.stored),
            store_refused: r(&c.store_refused),
            failures: r(&c.failures),
            invalidations_sent: r(&c.invalidations_sent),
            invalidations_received: r(&c.invalidations_received),
            outages: r(&c.outages),
            decode_failures: r(&c.decode_failures),
            state: Some(self.state()),
        }
    }

    /// Runs one Redis command (or script) on connscope's own thread, within the command
    /// timeout. `None`: it failed or timed out (counted). A caller dropped meanwhile does not
    /// stop it: an invalidation started is finished.
    pub(crate) async fn command<T, F, Fut>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let conn = self.conn.clone();
        let timeout = self.settings.command_timeout;
        let task = own_runtime().spawn(async move { tokio::time::timeout(timeout, f(conn)).await });
        match task.await {
            Ok(Ok(Ok(v))) => Some(v),
            outcome => {
                bump(&self.counters.failures);
                match outcome {
                    Ok(Ok(Err(e))) => {
                        tracing::debug!(kind = e.kind_name_quiet(), "connscope: a Redis command failed")
                    }
                    Ok(Err(_)) => tracing::debug!(?timeout, "connscope: a Redis command timed out"),
                    _ => tracing::debug!("connscope: a Redis command's task ended early"),
                }
                None
            }
        }
    }

    /// Registers the local cache of a shared resource (idempotent), so broadcasts reach it.
    pub(crate) fn register<K, V>(
        &self,
        resource: &str,
        cache: &ResourceCache<K, V>,
        decode_key: fn(&[u8]) -> Option<K>,
    ) where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        self.register_local(resource, || Arc::new(LocalCache { cache: cache.clone(), decode_key }));
    }

    /// Registers what broadcasts about `resource` do here (idempotent: the first stays).
    pub(crate) fn register_local(&self, resource: &str, local: impl FnOnce() -> Arc<dyn Local>) {
        let mut locals = lock(&self.locals);
        if !locals.contains_key(resource) {
            locals.insert(resource.to_owned(), local());
        }
    }

    fn local(&self, resource: &str) -> Option<Arc<dyn Local>> {
        lock(&self.locals).get(resource).cloned()
    }

    /// Drops every local copy of a shared value (the bus could not be confirmed: a message may
    /// have been missed). Hooks run in the background.
    pub(crate) fn clear_locals(&self) {
        let locals: Vec<_> = lock(&self.locals).values().cloned().collect();
        for local in locals {
            drop(own_runtime().spawn(local.clear()));
        }
    }

    /// The notification of `value_key` being stored or its lock released (registered before
    /// the caller looks, so nothing published after the look is missed).
    pub(crate) fn waiter(&self, value_key: &[u8]) -> Arc<Notify> {
        let mut waiters = lock(&self.waiters);
        if let Some(n) = waiters.get(value_key).and_then(Weak::upgrade) {
            return n;
        }
        if waiters.len() >= 1024 {
            waiters.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        waiters.insert(value_key.to_vec(), Arc::downgrade(&n));
        n
    }

    /// Applies a message from the bus.
    pub(crate) fn receive(&self, message: Message) {
        match message {
            Message::Ready { value_key } => {
                if let Some(n) = lock(&self.waiters).remove(&value_key).and_then(|w| w.upgrade()) {
                    n.notify_waiters();
                }
            }
            Message::Invalidate { origin, resource, key } if origin != self.instance => {
                bump(&self.counters.invalidations_received);
                if let Some(local) = self.local(&resource) {
                    drop(own_runtime().spawn(local.invalidate(&key)));
                }
            }
            Message::Clear { origin, resource } if origin != self.instance => {
                bump(&self.counters.invalidations_received);
                let targets: Vec<_> = match resource.as_deref() {
                    Some(r) => self.local(r).into_iter().collect(),
                    None => lock(&self.locals).values().cloned().collect(),
                };
                for local in targets {
                    drop(own_runtime().spawn(local.clear()));
                }
            }
            Message::SessionEnd { origin, id } if origin != self.instance => {
                let hooks: Vec<_> = lock(&self.session_end).iter().filter_map(Weak::upgrade).collect();
                for hook in hooks {
                    hook(id.clone());
                }
            }
            _ => {}
        }
    }

    // ---- Session ends across instances (the web layer's shared sessions) ----

    /// Adds what a session end broadcast by another instance does here (the hook gets the
    /// digest of the cookie id). Kept while the caller holds the `Arc`.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn on_session_end(&self, hook: &SessionEndHook) {
        let mut hooks = lock(&self.session_end);
        hooks.retain(|h| h.strong_count() > 0);
        hooks.push(Arc::downgrade(hook));
    }

    /// Ends session `id` (the digest of its cookie id) on every instance: deletes its record
    /// (`{prefix}:session:{id}`) and tells the other instances. Kept for later when Redis is
    /// away (published when it is back). True if it was done now.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) async fn end_session_everywhere(&self, id: &str) -> bool {
        if !self.is_down() && self.end_session_now(id).await {
            return true;
        }
        let mut pending = lock(&self.pending);
        if pending.session_ends.len() < MAX_PENDING {
            pending.session_ends.push(id.to_owned());
        } else {
            tracing::warn!(
                prefix = %self.settings.prefix,
                "connscope: too many session ends kept while Redis is away; this one reaches other instances only through its record's expiry"
            );
        }
        false
    }

    async fn end_session_now(&self, id: &str) -> bool {
        let key = format!("{}:session:{id}", self.settings.prefix);
        let deleted = self
            .command(
                move |mut conn| async move { redis::cmd("DEL").arg(key).query_async::<i64>(&mut conn).await },
            )
            .await
            .is_some();
        deleted && self.publish(Message::SessionEnd { origin: self.instance, id: id.to_owned() }).await
    }

    // ---- end of session ends ----

    pub(crate) async fn publish(&self, message: Message) -> bool {
        let channel = self.channel.clone();
        let payload = message.encode();
        self.command(move |mut conn| async move {
            redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<i64>(&mut conn).await
        })
        .await
        .is_some()
    }

    /// Removes `key` of `resource` from Redis and from every instance's local tier (this one's
    /// was removed by the caller). Kept for later when Redis is away.
    pub(crate) async fn invalidate(&self, resource: &str, keys: &Keys, key: Vec<u8>) {
        bump(&self.counters.invalidations_sent);
        if !self.is_down() && self.invalidate_now(resource, keys, &key).await {
            return;
        }
        let mut pending = lock(&self.pending);
        if pending.invalidations.len() >= MAX_PENDING {
            pending.overflow = true;
        } else {
            pending.invalidations.push((resource.to_owned(), key));
        }
    }

    async fn invalidate_now(&self, resource: &str, keys: &Keys, key: &[u8]) -> bool {
        if resource == GENERATIONS {
            return self.bump_generation_now(keys, key).await;
        }
        let (value_key, lock_key) = (keys.value(key), keys.lock(key));
        // The lock goes too: a load in flight elsewhere (which may have read the data before it
        // changed) then finds its lock gone and does not store its value.
        let deleted = self
            .command(move |mut conn| async move {
                redis::cmd("DEL").arg(value_key).arg(lock_key).query_async::<i64>(&mut conn).await
            })
            .await
            .is_some();
        let message =
            Message::Invalidate { origin: self.instance, resource: resource.to_owned(), key: key.to_vec() };
        deleted && self.publish(message).await
    }

    /// Bumps the generation `key` of the SQL query cache (`INCR`) and publishes it, in one step.
    async fn bump_generation_now(&self, keys: &Keys, key: &[u8]) -> bool {
        let message = Message::Invalidate {
            origin: self.instance,
            resource: GENERATIONS.to_owned(),
            key: key.to_vec(),
        };
        let (counter, channel, payload) = (keys.generation(key), self.channel.clone(), message.encode());
        self.command(move |mut conn| async move {
            redis::Script::new(BUMP)
                .key(counter)
                .key(channel)
                .arg(payload)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await
        .is_some()
    }

    /// Removes every value of `resource` from Redis and from every instance's local tier.
    pub(crate) async fn clear(&self, resource: &str, keys: &Keys) {
        bump(&self.counters.invalidations_sent);
        if !self.is_down() && self.clear_now(Some(resource), Some(keys)).await {
            return;
        }
        lock(&self.pending).clears.push(resource.to_owned());
    }

    /// `SCAN`s and `UNLINK`s the keys of `resource` (all of this app's keys with `None`), then
    /// broadcasts the clear.
    async fn clear_now(&self, resource: Option<&str>, keys: Option<&Keys>) -> bool {
        let pattern = match keys {
            Some(keys) => keys.pattern(),
            None => format!("{}:*", self.settings.prefix).into_bytes(),
        };
        // Session records (`{prefix}:session:…`) and the CSRF key (`{prefix}:session-csrf-key`),
        // the web layer's, are not cached values.
        let sessions = format!("{}:session:", self.settings.prefix).into_bytes();
        let csrf_key = format!("{}:session-csrf-key", self.settings.prefix).into_bytes();
        // Nor are the SQL query cache's generation counters: removed, they would count again
        // from zero, and a value read at an old count could be read again.
        let generations = Keys::new(&self.settings.prefix, GENERATIONS).generation(b"");
        let mut cursor: u64 = 0;
        loop {
            let (pattern, sessions, csrf_key, generations) =
                (pattern.clone(), sessions.clone(), csrf_key.clone(), generations.clone());
            let step = self
                .command(move |mut conn| async move {
                    let (next, mut found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    found.retain(|key| {
                        !key.starts_with(&sessions) && !key.starts_with(&generations) && *key != csrf_key
                    });
                    if !found.is_empty() {
                        redis::cmd("UNLINK").arg(found).query_async::<i64>(&mut conn).await?;
                    }
                    Ok(next)
                })
                .await;
            match step {
                None => return false,
                Some(0) => break,
                Some(next) => cursor = next,
            }
        }
        let message = Message::Clear { origin: self.instance, resource: resource.map(str::to_owned) };
        self.publish(message).await
    }

    /// Publishes what was kept, unless Redis is away or a flush is running. Called on every
    /// heartbeat, not only when an outage ends: a command that failed while Redis stayed up (a
    /// timeout) is retried within a quarter of the invalidation bound.
    pub(crate) fn retry_pending(self: &Arc<Self>) {
        if self.is_down() || lock(&self.pending).is_empty() || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let tier = Arc::clone(self);
        drop(own_runtime().spawn(async move {
            tier.flush_pending().await;
            tier.flushing.store(false, Ordering::Release);
        }));
    }

    /// Redis is back: publish what was kept. Returns false if it failed (kept for next time).
    async fn flush_pending(&self) -> bool {
        let pending = std::mem::take(&mut *lock(&self.pending));
        // Logouts first: they revoke access.
        for id in &pending.session_ends {
            if !self.end_session_now(id).await {
                return self.keep(pending);
            }
        }
        if pending.overflow {
            return self.clear_now(None, None).await || self.keep(pending);
        }
        let prefix = self.settings.prefix.clone();
        for resource in &pending.clears {
            if !self.clear_now(Some(resource), Some(&Keys::new(&prefix, resource))).await {
                return self.keep(pending);
            }
        }
        for (resource, key) in &pending.invalidations {
            if !self.invalidate_now(resource, &Keys::new(&prefix, resource), key).await {
                return self.keep(pending);
            }
        }
        true
    }

    fn keep(&self, pending: Pending) -> bool {
        let mut now = lock(&self.pending);
        now.overflow |= pending.overflow;
        now.clears.extend(pending.clears);
        now.invalidations.extend(pending.invalidations);
        now.session_ends.extend(pending.session_ends);
        false
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Describes a Redis error by its kind only: its text may quote the URL (and its password).
trait QuietKind {
    fn kind_name_quiet(&self) -> String;
}

impl QuietKind for redis::RedisError {
    fn kind_name_quiet(&self) -> String {
        format!("{:?}", self.kind())
    }
}
