//! `Conn::run`: an operation on the live client, run once more on a fresh client when its own
//! was lost (the provider's `is_lost` says so, or `is_open` reports the client closed after
//! the failure). The replacement reuses the handle's single-reconnect path (`retire` +
//! `connect`), so concurrent runs that lose one client replace it once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Conn, ConnRef, Live, millis_since};
use crate::error::Error;
use crate::provider::Provider;

/// What [`Conn::run`] returns on failure: no usable connection, or the operation's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E> {
    /// No live client could be had: the connect failed, the session's login is gone, the handle
    /// was released. The operation did not run (again).
    #[error(transparent)]
    Connection(#[from] Error),
    /// The operation failed. `retried`: it failed on a lost client first and this is the
    /// error of its second run, on a fresh client.
    #[error(
        "operation on connection `{connection}` failed{}: {source}",
        if *retried { " again on a fresh connection" } else { "" }
    )]
    Operation {
        /// The connection name.
        connection: String,
        /// Whether the operation ran a second time, on a fresh client.
        retried: bool,
        /// The provider's error, untouched.
        source: E,
    },
}

impl<E> RunError<E> {
    /// The operation's own error, if it ran and failed.
    pub fn operation_error(&self) -> Option<&E> {
        match self {
            RunError::Operation { source, .. } => Some(source),
            RunError::Connection(_) => None,
        }
    }
}

impl<P: Provider> Conn<P> {
    /// Runs `op` on the live client (connecting first if there is none) and, if it fails
    /// because the client was lost, replaces the client and runs `op` once more on the fresh
    /// one. "Lost" is what [`Provider::is_lost`] says of the error; for any other error,
    /// `is_open` is asked once and a client it reports closed counts as lost too. Each second
    /// run is counted in [`ConnCounters::retries`](super::ConnCounters) (and in the connection
    /// cache's `retries`), each replaced client in `reconnects`.
    ///
    /// `op` receives a [`ConnRef`] (it derefs to `P::Raw`) that it owns, so it can move it into
    /// an `async move` block; the client is not closed under it while it holds it. `op` is
    /// called once or twice (an `FnMut`): clone inside it what its future takes by value.
    ///
    /// Retrying runs the operation twice: do it for reads, and for writes only when the
    /// provider's `is_lost` says yes only for errors that show the request was never sent.
    ///
    /// Concurrent runs that lose the same client replace it once. Dropping the returned future
    /// at any point strands nothing: a client found lost is marked broken before anything is
    /// awaited (the next use checks it whatever the health-check policy), and one taken out of
    /// the handle is closed exactly once, in a task of its own. A connection made from a user's
    /// login cannot reconnect: losing its client gives [`Error::LoginRequired`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use connscope::{Conn, Provider};
    ///
    /// /// Its first client's requests fail as if its socket had been reset.
    /// struct Flaky { connects: AtomicU64 }
    /// struct Client { dead: bool }
    /// impl Provider for Flaky {
    ///     type Raw = Client;
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<Client, std::io::Error> {
    ///         Ok(Client { dead: self.connects.fetch_add(1, Ordering::SeqCst) == 0 })
    ///     }
    ///     async fn is_open(&self, _: &Client) -> bool { true }
    ///     fn is_lost(&self, e: &std::io::Error) -> bool { e.kind() == std::io::ErrorKind::ConnectionReset }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let conn = Conn::new("flaky", Flaky { connects: AtomicU64::new(0) });
    /// let answer = conn
    ///     .run(|client| async move {
    ///         if client.dead {
    ///             return Err(std::io::ErrorKind::ConnectionReset.into());
    ///         }
    ///         Ok(42)
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(answer, 42);
    /// assert_eq!((conn.counters().retries, conn.counters().reconnects), (1, 1));
    /// # }
    /// ```
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, RunError<P::Error>>
    where
        F: FnMut(ConnRef<P>) -> Fut,
        Fut: Future<Output = Result<T, P::Error>>,
    {
        let user = self.get().await?;
        let live = Arc::clone(&user.live);
        let err = match op(user).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !self.is_lost_after(&live, &err).await {
            return Err(self.failed(err, false));
        }
        tracing::info!(connection = %self.inner.name, error = %err, "connscope: connection lost; retrying on a fresh one");
        let user = self.replace_lost(live).await?;
        self.count_retry();
        let live = Arc::clone(&user.live);
        op(user).await.map_err(|e| {
            if self.inner.provider.is_lost(&e) {
                // Lost again: the next use checks the client whatever the policy.
                live.broken.store(true, Ordering::Release);
            }
            self.failed(e, true)
        })
    }

    /// Whether the client `live` is lost after an operation on it failed with `err`: the
    /// provider says so, or `is_open` then reports it closed. Marks it broken first, so a
    /// caller dropped while `is_open` runs leaves it to be checked by the next use.
    async fn is_lost_after(&self, live: &Arc<Live<P::Raw>>, err: &P::Error) -> bool {
        live.broken.store(true, Ordering::Release);
        if self.inner.provider.is_lost(err) {
            return true;
        }
        // Counted as a user while checking: a close meanwhile waits for the check.
        let check = ConnRef::<P>::new(Arc::clone(live));
        self.inner.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        if self.inner.provider.is_open(&check.live.raw).await {
            live.broken.store(false, Ordering::Release);
            live.checked_at.store(millis_since(live.born), Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Takes the lost client out of the handle (unless someone else already did) and hands out
    /// its replacement: the same single-reconnect path as a health check that found a client
    /// closed, so one replacement however many callers lost it.
    async fn replace_lost(&self, live: Arc<Live<P::Raw>>) -> Result<ConnRef<P>, Error> {
        tracing::warn!(connection = %self.inner.name, "connscope: connection lost");
        let retired = self.retire(live).await;
        if !self.inner.can_reconnect {
            return Err(Error::LoginRequired {
                connection: self.inner.name.to_string(),
                reason: "the connection was lost; log in again",
            });
        }
        self.connect(retired).await
    }

    fn count_retry(&self) {
        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = &*self.inner.cache_stats.lock().unwrap_or_else(|p| p.into_inner()) {
            stats.retry();
        }
    }

    fn failed(&self, source: P::Error, retried: bool) -> RunError<P::Error> {
        RunError::Operation { connection: self.inner.name.to_string(), retried, source }
    }
}
