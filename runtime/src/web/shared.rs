//! Sessions across instances (feature `redis`, when the runtime has a Redis tier): every
//! logged-in browser has a record in Redis (`{prefix}:session:{digest of the cookie id}`), so a
//! cookie issued by one instance resolves on any other, which takes the session over as a local
//! session of its own under the same cookie id. A logout ends the session on every instance
//! (record deleted, end broadcast, kept for later while Redis is away); an idle end is local,
//! the record's expiry being the idle end across instances. A login connection cannot cross
//! processes: an instance that did not see the login asks for it again.
//!
//! Nothing here logs or sends a cookie id or a CSRF secret: only digests leave the process, and
//! logs name connscope's own session ids.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::sessions::{Entry, Inner, Resolved, WebSessions};
use crate::cache::own_runtime;
use crate::redis::{Fetched, Record, SharedSessions, Tier, digest, unix_ms};
use crate::runtime::Runtime;

/// Record expiry when the runtime has neither an idle timeout nor a session lifetime.
const NO_LIMIT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// At most this many ended digests are remembered.
const MAX_TOMBSTONES: usize = 100_000;

/// The shared sessions of one [`WebSessions`].
pub(crate) struct Shared {
    sessions: SharedSessions,
    /// What a session end broadcast by another instance does here (the tier holds it weakly).
    _hook: Arc<dyn Fn(String) + Send + Sync>,
}

/// The registry's part for shared sessions.
#[derive(Default)]
pub(crate) struct Index {
    /// Cookie id by digest (what the bus names).
    pub(crate) by_digest: HashMap<String, String>,
    /// Digests of sessions that ended (logout here or anywhere), with when (runtime ms).
    tombstones: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Index {
    fn bury(&mut self, digest: &str, now_ms: u64, window_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < window_ms && self.order.len() < MAX_TOMBSTONES {
                break;
            }
            if let Some((at, d)) = self.order.pop_front()
                && self.tombstones.get(&d) == Some(&at)
            {
                self.tombstones.remove(&d);
            }
        }
        self.tombstones.insert(digest.to_owned(), now_ms);
        self.order.push_back((now_ms, digest.to_owned()));
    }

    /// Remembers that session `digest` ended (under the registry's lock, in the same step that
    /// forgets it: no request can take it over in between).
    pub(crate) fn bury_now(&mut self, digest: &str, rt: &Runtime) {
        self.bury(digest, now_ms(rt), tombstone_window(rt));
    }

    fn is_buried(&self, digest: &str) -> bool {
        self.tombstones.contains_key(digest)
    }
}

/// A session's record, as this instance tracks it.
pub(crate) struct SharedEntry {
    pub(crate) digest: Arc<str>,
    pub(crate) created_unix_ms: u64,
    /// The end of the session's absolute lifetime (Unix ms), if the runtime has one: a session
    /// taken over here started here later than the login.
    deadline_unix_ms: Option<u64>,
    /// Runtime ms of the last request, and of the last expiry refresh sent.
    last_seen: AtomicU64,
    refreshed: AtomicU64,
    /// Whether the record is in Redis (not yet when Redis was away at login).
    stored: AtomicBool,
    /// The tier's outage count when the record was last confirmed: a change means a session
    /// end may have been missed, so the record is checked before the next request uses it.
    outages_seen: AtomicU64,
}

impl Shared {
    pub(crate) fn new(tier: &Arc<Tier>, web: Weak<Inner>) -> Shared {
        let sessions = SharedSessions::new(Arc::clone(tier));
        drop(own_runtime().spawn(load_browser_key(sessions.clone(), web.clone())));
        let hook: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |digest: String| {
            if let Some(inner) = web.upgrade() {
                ended_elsewhere(&WebSessions::from_inner(inner), &digest);
            }
        });
        tier.on_session_end(&hook);
        Shared { sessions, _hook: hook }
    }

    /// The record of a new cookie id (`created`: the first login's time, when the session is
    /// older than this id).
    pub(crate) fn entry(&self, id: &str, created: Option<u64>, rt: &Runtime) -> Arc<SharedEntry> {
        let created_unix_ms = created.unwrap_or_else(unix_ms);
        let now = now_ms(rt);
        Arc::new(SharedEntry {
            digest: Arc::from(digest(id)),
            created_unix_ms,
            deadline_unix_ms: rt.session_limits().1.map(|l| created_unix_ms.saturating_add(l)),
            last_seen: AtomicU64::new(now),
            refreshed: AtomicU64::new(now),
            stored: AtomicBool::new(false),
            outages_seen: AtomicU64::new(self.sessions.outages()),
        })
    }

    /// Writes the record of a login (awaited by the login, so that the browser's next request
    /// resolves on any instance). Redis away: written later, by a request that finds it missing.
    pub(crate) async fn store(&self, web: &WebSessions, entry: &Entry) {
        let Some(shared) = &entry.shared else { return };
        let ttl = record_ttl(web.runtime(), shared.created_unix_ms);
        if self.sessions.store(&shared.digest, &record(entry), ttl).await {
            shared.stored.store(true, Ordering::Release);
        }
    }

    /// Ends the session of `digest` on every instance, in the background (a caller dropped
    /// meanwhile does not stop it). Returns the task, for a caller that waits.
    pub(crate) fn end_everywhere_in_background(
        &self,
        web: &WebSessions,
        digest: &str,
    ) -> tokio::task::JoinHandle<bool> {
        let window = tombstone_window(web.runtime());
        web.registry().shared.bury(digest, now_ms(web.runtime()), window);
        let (sessions, digest) = (self.sessions.clone(), digest.to_owned());
        own_runtime().spawn(async move { sessions.end_everywhere(&digest).await })
    }

    /// [`WebSessions::resolve`] with shared sessions. `local`: the live entry of this instance,
    /// or the ended one it had (now forgotten), or none.
    pub(crate) async fn resolve(
        &self,
        web: &WebSessions,
        id: &str,
        local: Result<Entry, Option<Entry>>,
    ) -> Resolved {
        let rt = web.runtime();
        match local {
            Ok(entry) => return self.resolve_live(web, entry).await,
            Err(Some(ended)) => {
                if rt.is_shut_down() {
                    // This instance is going away; the others still serve the session.
                    return Resolved::Unknown;
                }
                if let Some(shared) = &ended.shared {
                    let idle = rt.session_limits().0;
                    let silent = now_ms(rt).saturating_sub(shared.last_seen.load(Ordering::Relaxed));
                    if idle.is_none_or(|idle| silent < idle) {
                        // Ended here on purpose (not for being idle, not by a shutdown): a logout
                        // by other means; so everywhere.
                        drop(self.end_everywhere_in_background(web, &shared.digest));
                        return Resolved::Gone;
                    }
                    // Idle here only: another instance may still serve it.
                }
            }
            Err(None) => {}
        }
        self.take_over(web, id).await
    }

    async fn resolve_live(&self, web: &WebSessions, entry: Entry) -> Resolved {
        let Some(shared) = entry.shared.clone() else { return Resolved::Found(entry) };
        let rt = web.runtime();
        if shared.deadline_unix_ms.is_some_and(|d| unix_ms() >= d) {
            end_here(web, &shared.digest, "lifetime (across instances)");
            return Resolved::Gone;
        }
        let now = now_ms(rt);
        shared.last_seen.store(now, Ordering::Relaxed);
        let outages = self.sessions.outages();
        if outages != shared.outages_seen.load(Ordering::Relaxed) && shared.stored.load(Ordering::Acquire) {
            // Redis was away meanwhile: a logout elsewhere may not have reached us.
            if self.sessions.tier().is_down() {
                return Resolved::Found(entry);
            }
            shared.refreshed.store(now, Ordering::Relaxed);
            match self.sessions.refresh(&shared.digest, record_ttl(rt, shared.created_unix_ms)).await {
                Some(true) => shared.outages_seen.store(outages, Ordering::Relaxed),
                Some(false) => {
                    end_here(web, &shared.digest, "its record is gone (ended elsewhere)");
                    return Resolved::Gone;
                }
                None => {}
            }
            return Resolved::Found(entry);
        }
        self.refresh_if_due(web, &entry, &shared, now);
        Resolved::Found(entry)
    }

    /// Extends the record's expiry, at most every tenth of it, in the background.
    fn refresh_if_due(&self, web: &WebSessions, entry: &Entry, shared: &Arc<SharedEntry>, now: u64) {
        let rt = web.runtime();
        let ttl = record_ttl(rt, shared.created_unix_ms);
        let every = (ttl.as_millis() as u64 / 10).max(1);
        let last = shared.refreshed.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every
            || shared.refreshed.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let (sessions, web, shared, record) =
            (self.sessions.clone(), web.clone(), Arc::clone(shared), record(entry));
        drop(own_runtime().spawn(async move {
            let done = if shared.stored.load(Ordering::Acquire) {
                let refreshed = sessions.refresh(&shared.digest, ttl).await;
                if refreshed == Some(false) {
                    end_here(&web, &shared.digest, "its record is gone (ended elsewhere)");
                }
                refreshed.is_some()
            } else {
                let stored = sessions.store_if_missing(&shared.digest, &record, ttl).await;
                if stored.is_some() {
                    shared.stored.store(true, Ordering::Release);
                }
                stored.is_some()
            };
            if !done {
                // Try again on the next request.
                let _ = shared.refreshed.compare_exchange(now, last, Ordering::AcqRel, Ordering::Relaxed);
            }
        }));
    }

    /// A cookie this instance does not know: take its session over from its record.
    async fn take_over(&self, web: &WebSessions, id: &str) -> Resolved {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Resolved::Gone;
        }
        let digest = digest(id);
        if web.registry().shared.is_buried(&digest) {
            return Resolved::Gone;
        }
        let record = match self.sessions.fetch(&digest).await {
            Fetched::Found(record) => record,
            Fetched::Missing => return Resolved::Gone,
            Fetched::Unavailable => return Resolved::Unknown,
        };
        let rt = web.runtime();
        if rt.session_limits().1.is_some_and(|l| unix_ms() >= record.created_unix_ms.saturating_add(l)) {
            return Resolved::Gone;
        }
        let mut registry = web.registry();
        // Ended while we looked (a logout whose record we read before it was deleted).
        if registry.shared.is_buried(&digest) {
            return Resolved::Gone;
        }
        // Another request of this browser took it over meanwhile.
        if let Some(entry) = registry.ids.get(id).filter(|e| !e.session.is_ended()) {
            return Resolved::Found(entry.clone());
        }
        let session = rt.session();
        if session.is_ended() {
            // Shut down: this instance takes nothing over, the others still serve the session.
            return Resolved::Unknown;
        }
        let logins: Arc<[Arc<str>]> = record.logins.iter().map(|l| Arc::<str>::from(l.as_str())).collect();
        let shared = self.entry(id, Some(record.created_unix_ms), rt);
        shared.stored.store(true, Ordering::Release);
        let entry = Entry {
            session,
            secret: Arc::from(record.secret),
            logins: Arc::clone(&logins),
            elsewhere: logins,
            shared: Some(shared),
        };
        registry.remove(id);
        registry.insert(id.to_owned(), entry.clone());
        drop(registry);
        tracing::info!(session = %entry.session.id(), "connscope: session taken over from another instance");
        Resolved::Found(entry)
    }
}

/// Loads the browser CSRF key every instance shares (made by the first instance), so that a
/// login form served by one instance is accepted by another; retried while Redis is away.
async fn load_browser_key(sessions: SharedSessions, web: Weak<Inner>) {
    let mut candidate = [0u8; 32];
    super::sessions::fill_random(&mut candidate);
    let mut wait = Duration::from_millis(100);
    loop {
        if web.strong_count() == 0 {
            return;
        }
        if let Some(key) = sessions.shared_key(candidate).await {
            if let Some(inner) = web.upgrade() {
                WebSessions::from_inner(inner).signer().share_key(key);
            }
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The record of an entry.
fn record(entry: &Entry) -> Record {
    Record {
        created_unix_ms: entry.shared.as_ref().map_or_else(unix_ms, |s| s.created_unix_ms),
        secret: entry.secret.to_string(),
        logins: entry.logins.iter().map(|l| l.to_string()).collect(),
    }
}

/// A record lives for the idle timeout plus a tenth (the refresh period: it never expires
/// before the last request plus the idle timeout), and never past the session lifetime.
fn record_ttl(rt: &Runtime, created_unix_ms: u64) -> Duration {
    let (idle, lifetime) = rt.session_limits();
    let by_idle = idle.map(|i| i.saturating_add(i / 10));
    let by_lifetime = lifetime.map(|l| created_unix_ms.saturating_add(l).saturating_sub(unix_ms()));
    let ms = match (by_idle, by_lifetime) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(NO_LIMIT_TTL.as_millis() as u64),
    };
    Duration::from_millis(ms.max(1))
}

/// How long an ended digest is remembered: as long as its record could still be read.
fn tombstone_window(rt: &Runtime) -> u64 {
    record_ttl(rt, unix_ms()).as_millis() as u64
}

fn now_ms(rt: &Runtime) -> u64 {
    rt.millis_since_epoch(Instant::now())
}

/// Another instance ended session `digest` (a logout): end this instance's copy, once.
fn ended_elsewhere(web: &WebSessions, digest: &str) {
    end_here(web, digest, "ended on another instance");
}

/// Ends this instance's session of `digest` (if any) in the background and forgets it; the
/// digest is not taken over again.
fn end_here(web: &WebSessions, digest: &str, why: &'static str) {
    let rt = web.runtime();
    let entry = {
        let mut registry = web.registry();
        registry.shared.bury(digest, now_ms(rt), tombstone_window(rt));
        let id = registry.shared.by_digest.get(digest).cloned();
        id.and_then(|id| registry.remove(&id))
    };
    if let Some(entry) = entry {
        tracing::info!(session = %entry.session.id(), why, "connscope: ending this instance's copy of a shared session");
        drop(own_runtime().spawn(async move { entry.session.end().await }));
    }
}
