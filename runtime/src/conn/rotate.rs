//! Rebuilding a live client ahead of its credentials' expiry ([`Provider::expires_at`]): at
//! the due time (expiry minus 10% of the client's lifetime, at most one minute) the
//! replacement connects first, under the connect lock, while users keep the current client;
//! it is then swapped into the slot in one step (no `.await` between the connect's result and
//! the swap), new users get it, and the old client is closed by the same path as any client
//! taken out of the slot (`close_taken`): after its last user, or the grace period, exactly
//! once. A rebuild that fails keeps the current client and is retried with backoff.
//!
//! The timer is a task of its own holding only weak references: a handle dropped or released,
//! or a client retired meanwhile, ends it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, ConnInner, Live};
use crate::provider::Provider;

/// Never more than this ahead of expiry.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// Longest wait between two failed rebuilds.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

enum Rebuild {
    /// Replaced (or no longer needed: retired, closed or released meanwhile).
    Done,
    /// The connect failed: the current client was kept.
    Failed,
}

/// When a client born at `born` whose credentials expire at `expires` is rebuilt: 10% of its
/// lifetime before expiry, at most one minute before.
pub(super) fn rebuild_due(born: Instant, expires: Instant) -> Instant {
    let lifetime = expires.saturating_duration_since(born);
    expires.checked_sub((lifetime / 10).min(MAX_MARGIN)).unwrap_or(expires)
}

impl<P: Provider> Conn<P> {
    /// Starts the rebuild timer of `live` if its credentials expire and this handle can
    /// reconnect (and a Tokio runtime is there to run the timer).
    pub(super) fn schedule_rebuild(&self, live: &Arc<Live<P::Raw>>) {
        let Some(expires) = live.expires_at else { return };
        if !self.inner.can_reconnect {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let due = rebuild_due(live.born, expires);
        let first_backoff = (expires.saturating_duration_since(due) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        let conn: Weak<ConnInner<P>> = Arc::downgrade(&self.inner);
        let target = Arc::downgrade(live);
        handle.spawn(async move {
            tokio::time::sleep_until(due).await;
            let mut backoff = first_backoff;
            loop {
                let (Some(inner), Some(live)) = (conn.upgrade(), target.upgrade()) else { return };
                let this = Conn { inner };
                if let Rebuild::Done = this.rebuild(live).await {
                    return;
                }
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    fn holds(&self, live: &Arc<Live<P::Raw>>) -> bool {
        matches!(&*self.inner.live.read().unwrap_or_else(|p| p.into_inner()), Some(cur) if Arc::ptr_eq(cur, live))
    }

    /// Replaces `old` by a freshly connected client, if `old` is still the live one.
    async fn rebuild(&self, old: Arc<Live<P::Raw>>) -> Rebuild {
        // Serialized with every other connect: one replacement at a time.
        let _guard = self.inner.connect_lock.lock().await;
        if self.inner.released.load(Ordering::Acquire) || !self.holds(&old) {
            return Rebuild::Done;
        }
        // Users keep `old` meanwhile. Dropped here, the half-made client was never installed
        // nor counted, and `old` is untouched.
        let started = Instant::now();
        tracing::debug!(connection = %self.inner.name, "connscope: rebuilding the connection ahead of its credentials' expiry");
        let raw = match self.inner.provider.connect().await {
            Ok(raw) => raw,
            Err(e) => {
                self.inner.counters.rebuild_failures.fetch_add(1, Ordering::Relaxed);
                let expired = old.expires_at.is_some_and(|t| t <= Instant::now());
                tracing::warn!(
                    connection = %self.inner.name,
                    error = %e,
                    expired,
                    "connscope: rebuilding the connection ahead of its credentials' expiry failed; \
                     keeping the current one and retrying"
                );
                return Rebuild::Failed;
            }
        };
        let expires_at = self.inner.provider.expires_at(&raw);
        let fresh = Arc::new(Live::new(raw, expires_at));
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
                "connscope: connection rebuilt ahead of its credentials' expiry"
            );
            self.schedule_rebuild(&fresh);
            // Closed once, after its last user (or the grace period), in a task of its own.
            self.close_taken(old, false).await;
        } else {
            // `old` was closed meanwhile (`close` does not wait for the connect lock): the
            // fresh client is not wanted either.
            self.close_taken(fresh, false).await;
        }
        Rebuild::Done
    }
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
