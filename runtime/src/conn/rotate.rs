//! Keeping a live client's credentials fresh while it is in use. Ahead of their expiry
//! ([`Provider::expires_at`]: expiry minus 10% of the client's lifetime, at most one minute),
//! and when the file they came from changed ([`Provider::watched_file`]), the provider is first
//! asked to renew them in place ([`Provider::renew`]: the client keeps its open connections,
//! later ones use the fresh credentials; nothing is connected, swapped or closed). Where it
//! cannot (the default; a SQL pool whose user name changed), and every `refresh` period
//! ([`Connection::REFRESH`](crate::Connection::REFRESH)), the client is rebuilt: the
//! replacement connects first, under the connect lock, while users keep the current client; it
//! is then swapped into the slot in one step (no `.await` between the connect's result and the
//! swap), new users get it, and the old client is closed by the same path as any client taken
//! out of the slot (`close_taken`): after its last user, or the grace period, exactly once. A
//! renewal or rebuild that fails keeps the current client and is retried with backoff.
//!
//! The timer is a task of its own holding only weak references: a handle dropped or released,
//! or a client retired meanwhile, ends it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, ConnInner, Home, Live};
use crate::provider::{Provider, Renewal};
use crate::watch::DEFAULT_SECRETS_POLL_INTERVAL;

/// Never more than this ahead of expiry.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// Longest wait between two failed rebuilds.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

enum Step {
    /// Replaced (or no longer needed: retired, closed or released meanwhile).
    Done,
    /// Renewed in place: its credentials now expire then.
    Renewed(Option<Instant>),
    /// The provider cannot renew in place: rebuild.
    Rebuild,
    /// The renewal or the connect failed: the current client was kept.
    Failed,
}

/// Why a client is rebuilt (for the logs).
#[derive(Clone, Copy)]
enum Why {
    Expiry,
    Refresh,
    FileChanged,
}

impl Why {
    fn text(self) -> &'static str {
        match self {
            Why::Expiry => "ahead of its credentials' expiry",
            Why::Refresh => "at the end of its refresh period",
            Why::FileChanged => "because its credentials file changed",
        }
    }
}

/// When a client born (or renewed) at `born` whose credentials expire at `expires` is renewed
/// or rebuilt: 10% of its lifetime before expiry, at most one minute before.
pub(super) fn rebuild_due(born: Instant, expires: Instant) -> Instant {
    let lifetime = expires.saturating_duration_since(born);
    expires.checked_sub((lifetime / 10).min(MAX_MARGIN)).unwrap_or(expires)
}

impl<P: Provider> Conn<P> {
    /// How often this handle polls a watched credentials file: its runtime's
    /// `secrets_poll_interval`, else the default (1 s).
    fn poll_interval(&self) -> Duration {
        let shared = match self.inner.home.get() {
            Some(Home::Global(shared)) => shared.upgrade(),
            Some(Home::Session(inner)) => inner.upgrade().map(|inner| Arc::clone(&inner.runtime().shared)),
            None => None,
        };
        shared.map_or(DEFAULT_SECRETS_POLL_INTERVAL, |s| s.secrets_poll_interval())
    }

    /// Starts the rebuild timer of `live` if it is to be renewed or rebuilt at all (its
    /// credentials expire, the handle has a refresh period, or its credentials file is
    /// watched) and this handle can reconnect (and a Tokio runtime is there to run the timer).
    pub(super) fn schedule_rebuild(&self, live: &Arc<Live<P::Raw>>) {
        if !self.inner.can_reconnect {
            return;
        }
        let expiry = self
            .inner
            .provider
            .expires_at(&live.raw)
            .map(|expires| (rebuild_due(live.born, expires), expires));
        let refresh = self.inner.refresh.and_then(|r| live.born.checked_add(r));
        let watched = self.inner.provider.watched_file(&live.raw).is_some();
        if expiry.is_none() && refresh.is_none() && !watched {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let period = self.inner.refresh;
        let poll = watched.then(|| self.poll_interval().max(Duration::from_millis(1)));
        let conn: Weak<ConnInner<P>> = Arc::downgrade(&self.inner);
        let target = Arc::downgrade(live);
        let born = live.born;
        handle.spawn(async move {
            let mut expiry = expiry;
            let mut next_poll = poll.map(|p| Instant::now() + p);
            let mut backoff = first_backoff(expiry, period);
            // A failed attempt is retried at its backoff: the file is not polled meanwhile.
            let mut retry: Option<(Instant, Why)> = None;
            if expiry.is_some_and(|(due, _)| due <= born) {
                // A client whose credentials expired as it connected: rebuilt after the backoff,
                // not at once in a loop of connects.
                retry = Some((Instant::now() + backoff, Why::Expiry));
            }
            loop {
                let due = retry.or_else(|| {
                    earliest(expiry.map(|(d, _)| (d, Why::Expiry)), refresh.map(|r| (r, Why::Refresh)))
                });
                let wake = match (due, next_poll) {
                    (Some((d, _)), Some(p)) => d.min(p),
                    (Some((d, _)), None) => d,
                    (None, Some(p)) => p,
                    (None, None) => return,
                };
                tokio::time::sleep_until(wake).await;
                let (Some(inner), Some(live)) = (conn.upgrade(), target.upgrade()) else { return };
                let this = Conn { inner };
                if this.inner.released.load(Ordering::Acquire) || !this.holds(&live) {
                    return;
                }
                let now = Instant::now();
                let mut why = due.filter(|&(d, _)| d <= now).map(|(_, why)| why);
                if why.is_none()
                    && retry.is_none()
                    && let Some(every) = poll
                {
                    next_poll = Some(now + every);
                    if this.file_changed(&live).await {
                        why = Some(Why::FileChanged);
                    }
                }
                let Some(why) = why else { continue };
                let mut step = match why {
                    Why::Expiry | Why::FileChanged => this.renew(&live, why).await,
                    Why::Refresh => Step::Rebuild,
                };
                if let Step::Rebuild = step {
                    step = this.rebuild(live, why).await;
                }
                drop(this);
                match step {
                    Step::Done => return,
                    Step::Renewed(expires) => {
                        let renewed = Instant::now();
                        expiry = expires.map(|e| (rebuild_due(renewed, e), e));
                        if expiry.is_some_and(|(due, _)| due <= renewed) {
                            // Fresh credentials already due again (a source handing out expired
                            // ones): asked again after a growing backoff, never in a loop.
                            if let Some(inner) = conn.upgrade() {
                                tracing::warn!(
                                    connection = %inner.name,
                                    "connscope: the renewed credentials expire at once; asking again after {backoff:?}"
                                );
                            }
                            retry = Some((renewed + backoff, Why::Expiry));
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        } else {
                            retry = None;
                            backoff = first_backoff(expiry, period);
                        }
                    }
                    Step::Rebuild | Step::Failed => {
                        // Failed: the same reason is tried again after the backoff.
                        retry = Some((Instant::now() + backoff, why));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// Renews `live`'s credentials in place, if it is still the live client and the provider can.
    async fn renew(&self, live: &Arc<Live<P::Raw>>, why: Why) -> Step {
        // Serialized with every connect, as a rebuild is.
        let _guard = self.inner.connect_lock.lock().await;
        if self.inner.released.load(Ordering::Acquire) || !self.holds(live) {
            return Step::Done;
        }
        match self.inner.provider.renew(&live.raw).await {
            Ok(Renewal::InPlace(expires)) => {
                self.inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    connection = %self.inner.name,
                    "connscope: credentials renewed in place {}",
                    why.text()
                );
                Step::Renewed(expires)
            }
            Ok(Renewal::Rebuild) => Step::Rebuild,
            Err(e) => self.not_renewed(live, &e, "renewing the credentials", "ones", why),
        }
    }

    /// A renewal or rebuild of `live` that failed (`doing`, for the log): counted, logged with
    /// whether the credentials in use have expired meanwhile; `live` stays, retried later.
    fn not_renewed(&self, live: &Live<P::Raw>, e: &P::Error, doing: &str, kept: &str, why: Why) -> Step {
        self.inner.counters.rebuild_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            connection = %self.inner.name,
            error = %e,
            expired = self.expired(live),
            "connscope: {doing} {} failed; keeping the current {kept} and retrying",
            why.text()
        );
        Step::Failed
    }

    /// Whether `live`'s credentials have expired already.
    fn expired(&self, live: &Live<P::Raw>) -> bool {
        self.inner.provider.expires_at(&live.raw).is_some_and(|t| t <= Instant::now())
    }

    /// Whether the credentials file `live` was built from changed since (read off the async
    /// threads).
    async fn file_changed(&self, live: &Arc<Live<P::Raw>>) -> bool {
        let Some(stamp) = self.inner.provider.watched_file(&live.raw) else { return false };
        crate::credentials::blocking(move || stamp.changed()).await.unwrap_or(false)
    }

    fn holds(&self, live: &Arc<Live<P::Raw>>) -> bool {
        matches!(&*self.inner.live.read().unwrap_or_else(|p| p.into_inner()), Some(cur) if Arc::ptr_eq(cur, live))
    }

    /// Replaces `old` by a freshly connected client, if `old` is still the live one.
    async fn rebuild(&self, old: Arc<Live<P::Raw>>, why: Why) -> Step {
        // Serialized with every other connect: one replacement at a time.
        let _guard = self.inner.connect_lock.lock().await;
        if self.inner.released.load(Ordering::Acquire) || !self.holds(&old) {
            return Step::Done;
        }
        // Users keep `old` meanwhile. Dropped here, the half-made client was never installed
        // nor counted, and `old` is untouched.
        let started = Instant::now();
        tracing::debug!(connection = %self.inner.name, "connscope: rebuilding the connection {}", why.text());
        let raw = match self.inner.provider.replace(&old.raw).await {
            Ok(raw) => raw,
            Err(e) => return self.not_renewed(&old, &e, "rebuilding the connection", "one", why),
        };
        let fresh = Arc::new(Live::new(raw));
        self.inner.counters.connects.fetch_add(1, Ordering::Relaxed);
        // The swap: nothing awaited between the connect's result and here.
        let swapped = {
            let mut slot = self.inner.live.write().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Some(cur) if Arc::ptr_eq(cur, &old) && !self.inner.released.load(Ordering::Acquire) => {
                    *slot = Some(Arc::clone(&fresh));
                    true
                }
                _ => false,
            }
        };
        if swapped {
            self.inner.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                connection = %self.inner.name,
                took = ?started.elapsed(),
                "connscope: connection rebuilt {}",
                why.text()
            );
            self.schedule_rebuild(&fresh);
            // Closed once, after its last user (or the grace period), in a task of its own.
            self.close_taken(old, false).await;
        } else {
            // `old` was closed meanwhile (`close` does not wait for the connect lock): the
            // fresh client is not wanted either.
            self.close_taken(fresh, false).await;
        }
        Step::Done
    }
}

/// The earlier of two due times (the first on a tie).
fn earliest(a: Option<(Instant, Why)>, b: Option<(Instant, Why)>) -> Option<(Instant, Why)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The first wait after a failed attempt: a quarter of the margin before expiry, else a
/// fortieth of the refresh period, else one second; between 50 ms and 5 s.
fn first_backoff(expiry: Option<(Instant, Instant)>, refresh: Option<Duration>) -> Duration {
    match (expiry, refresh) {
        (Some((due, expires)), _) => expires.saturating_duration_since(due) / 4,
        (None, Some(period)) => period / 40,
        (None, None) => Duration::from_secs(1),
    }
    .clamp(Duration::from_millis(50), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_tenth_of_the_lifetime_and_at_most_a_minute() {
        let born = Instant::now();
        let due = |lifetime| rebuild_due(born, born + lifetime).duration_since(born);
        assert_eq!(due(Duration::from_secs(2)), Duration::from_millis(1800));
        assert_eq!(due(Duration::from_secs(15 * 60)), Duration::from_secs(14 * 60));
        assert_eq!(due(Duration::from_secs(3600)), Duration::from_secs(3540));
        assert_eq!(due(Duration::ZERO), Duration::ZERO);
    }
}
