//! The live client of a SQL provider ([`SqlClient`]: a sqlx pool) and the provider contract on
//! it: connect (a direct attempt first, so a failure names its real cause), a cheap health
//! check under its own timeout, close; plus the per-connection counters ([`SqlStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::pool::{Pool, PoolOptions};

use super::backend::{Backend, ConnectOptionsOf};
use super::error::{ConnectCause, ConnectError, connect_cause, is_connection_lost};
use super::redact::redact_url;
use super::settings::{SqlDb, SqlLogin, SqlProvider};
use crate::provider::{Provider, Renewal};

/// The live client of a SQL connection: a sqlx pool (plus, for an in-memory SQLite database,
/// one connection that keeps the database alive while the pool opens and closes others).
///
/// `conn.get().await?.pool()` gives the pool for anything the `query` API does not cover
/// (transactions, streaming).
pub struct SqlClient<DB: Backend> {
    pool: Pool<DB>,
    anchor: Option<tokio::sync::Mutex<Option<DB::Connection>>>,
    /// When the credentials this pool connects with stop working (renewed in place, ahead).
    expires_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The user name those credentials are for: fresh credentials for another user (Vault's
    /// dynamic secrets) need a new pool; for the same user, they are renewed in place.
    user: Option<String>,
    /// Held while the credentials are renewed (one fetch at a time).
    renewing: tokio::sync::Mutex<()>,
    /// How many times the pool's connect options were renewed.
    generation: AtomicU64,
    /// The file the credentials were read from (`password_file`), as it was then: when it
    /// changes, the pool's credentials are renewed in place from it (stamped anew).
    stamp: std::sync::Mutex<Option<crate::FileStamp>>,
}

impl<DB: Backend> SqlClient<DB> {
    /// The sqlx pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Which renewal of its credentials the pool connects with now (0: those it was built with).
    pub(crate) fn credentials_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// When the credentials this pool connects with stop working (they are renewed ahead).
    pub fn credentials_expire_at(&self) -> Option<tokio::time::Instant> {
        *self.expires_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<DB: Backend> std::fmt::Debug for SqlClient<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlClient")
            .field("backend", &DB::KIND)
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish()
    }
}

/// What a SQL connection handle has done so far (see `Conn::sql_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlStats {
    /// Statements sent to the database (queries run, writes executed, retries included).
    pub statements: u64,
    /// Query calls answered from the query cache, without reaching the database.
    pub cache_hits: u64,
    /// Cached query calls that found no live result here: they ran the query (or, for a
    /// shared read, found the result in Redis).
    pub cache_misses: u64,
    /// Database connections opened (the pool's, the connect check's, and retries').
    pub connections_opened: u64,
    /// Connections found dropped: by a failed statement or by the pre-use ping.
    pub connections_lost: u64,
    /// Fresh connections opened to replace dropped ones (a transparent reconnect).
    pub reconnects: u64,
    /// Queries that failed because their connection dropped and were run again on a fresh one.
    pub retries: u64,
    /// Calls that returned an error.
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) statements: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_lost: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Dropped pooled connections the pool has not replaced yet.
    pending_replacements: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SqlStats {
        SqlStats {
            statements: self.statements.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            connections_opened: self.connections_opened.load(Relaxed),
            connections_lost: self.connections_lost.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            retries: self.retries.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// A pooled connection was found dropped; the pool opens a replacement on demand.
    pub(crate) fn pooled_connection_lost(&self) {
        self.connections_lost.fetch_add(1, Relaxed);
        self.pending_replacements.fetch_add(1, Relaxed);
    }

    fn pool_connected(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
        let replaced = self.pending_replacements.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok();
        if replaced {
            self.reconnects.fetch_add(1, Relaxed);
        }
    }
}

/// One direct connection attempt under `timeout`, its failure mapped to a cause.
pub(crate) async fn connect_direct<DB: Backend>(
    options: &ConnectOptionsOf<DB>,
    timeout: Duration,
) -> Result<DB::Connection, ConnectError> {
    let error = |cause, timeout, source| ConnectError {
        backend: DB::KIND,
        target: DB::target(options),
        cause,
        timeout,
        source,
    };
    match tokio::time::timeout(timeout, DB::Connection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(error(connect_cause(&e, DB::connect_cause), None, Some(e))),
        Err(_) => Err(error(ConnectCause::Timeout, Some(timeout), None)),
    }
}

/// The credentials of one connect: fetched from the provider's source, if it has one, else its
/// `user` and `password`; and when they expire.
struct Creds {
    user: Option<String>,
    password: Option<crate::secrets::Secret>,
    expires_at: Option<tokio::time::Instant>,
    stamp: Option<crate::FileStamp>,
}

async fn credentials<P: SqlProvider>(p: &P) -> Result<Creds, ConnectError> {
    let fetched_at = tokio::time::Instant::now();
    let lifetime = p.credentials_lifetime().map(|l| fetched_at + l);
    let Some(source) = p.credentials() else {
        return Ok(Creds {
            user: p.user().map(str::to_owned),
            password: p.password().cloned(),
            expires_at: lifetime,
            stamp: None,
        });
    };
    match source.fetch().await {
        Ok(f) => Ok(Creds {
            user: f.user.or_else(|| p.user().map(str::to_owned)),
            password: Some(f.password),
            expires_at: f.expires_at.or(lifetime),
            stamp: f.stamp,
        }),
        Err(e) => Err(ConnectError {
            backend: <P::Db as Backend>::KIND,
            target: format!("`{}`", redact_url(p.url())),
            cause: ConnectCause::Credentials,
            timeout: None,
            source: Some(sqlx::Error::Configuration(Box::new(e))),
        }),
    }
}

fn options_with<P: SqlProvider>(p: &P, c: &Creds) -> Result<ConnectOptionsOf<P::Db>, ConnectError> {
    <P::Db as Backend>::options(p.url(), c.user.as_deref(), c.password.as_ref().map(|s| s.expose())).map_err(
        |e| ConnectError {
            backend: <P::Db as Backend>::KIND,
            target: format!("`{}`", redact_url(p.url())),
            cause: ConnectCause::Config,
            timeout: None,
            source: Some(e),
        },
    )
}

/// Connects with freshly fetched credentials; credentials from a source that are rejected
/// (they may have just been rotated) are fetched once more and tried again before `Auth` is
/// reported. `replacing`: the number of connections the pool this one replaces has open.
async fn connect<P: SqlProvider>(p: &P, replacing: Option<u32>) -> Result<SqlClient<P::Db>, ConnectError> {
    match connect_with(p, credentials(p).await?, replacing).await {
        Err(e) if e.cause == ConnectCause::Auth && p.credentials().is_some() => {
            tracing::info!(
                target = %e.target,
                "connscope: credentials rejected; fetching fresh ones and trying once more"
            );
            connect_with(p, credentials(p).await?, replacing).await
        }
        other => other,
    }
}

async fn connect_with<P: SqlProvider>(
    p: &P,
    creds: Creds,
    replacing: Option<u32>,
) -> Result<SqlClient<P::Db>, ConnectError> {
    let s = p.pool_settings();
    let options = options_with(p, &creds)?;
    let target = <P::Db as Backend>::target(&options);
    let in_memory = <P::Db as Backend>::is_in_memory(p.url());
    // An in-memory database lives in its anchor connection: never rebuilt (that would empty it).
    let expires_at = creds.expires_at.filter(|_| !in_memory);
    let stamp = creds.stamp.clone().filter(|_| !in_memory);
    let user = creds.user.clone();
    drop(creds);
    let counters = Arc::clone(&p.state().counters);
    // A replacement for a pool in use (a rebuild) opens as many connections as that pool has
    // open before it is swapped in (at least one, at least `min_connections`): its users do not
    // wait for connects, and a pool sized to its demand costs the server no more connections
    // opened and closed per rebuild than it uses.
    // (An in-memory database is never replaced this way: it lives in its first connection.)
    let fill = replacing
        .filter(|_| !in_memory)
        .map(|open| open.max(s.min_connections).clamp(1, s.max_connections.max(1)));
    // One direct attempt first: it fails fast with the real cause (refused, auth, unknown
    // database, timeout) where a pool would retry until "pool timed out". A replacement skips
    // it: one connect less per rebuild; it is diagnosed the same way only if filling it fails.
    let first = if fill.is_some() {
        None
    } else {
        let first = connect_direct::<P::Db>(&options, s.connect_timeout).await?;
        counters.connections_opened.fetch_add(1, Relaxed);
        Some(first)
    };

    let on_connect = Arc::clone(&counters);
    let on_acquire = Arc::clone(&counters);
    let (check_after, health) = (s.check_idle_after, s.health_timeout);
    let pool = PoolOptions::<P::Db>::new()
        .max_connections(s.max_connections)
        .min_connections(s.min_connections)
        .acquire_timeout(s.connect_timeout)
        .idle_timeout(s.idle_timeout)
        .max_lifetime(s.max_lifetime)
        // Our own check below: only connections idle for a while, under a timeout, counted.
        .test_before_acquire(false)
        .after_connect(move |_, _| {
            on_connect.pool_connected();
            Box::pin(async { Ok(()) })
        })
        .before_acquire(move |conn, meta| {
            let counters = Arc::clone(&on_acquire);
            Box::pin(async move {
                if meta.idle_for < check_after {
                    return Ok(true);
                }
                let alive = matches!(tokio::time::timeout(health, conn.ping()).await, Ok(Ok(())));
                if !alive {
                    counters.pooled_connection_lost();
                }
                Ok(alive)
            })
        })
        .connect_lazy_with(options.clone());

    let anchor = match first {
        // The database lives as long as one connection to it does: keep this one.
        Some(first) if in_memory => Some(tokio::sync::Mutex::new(Some(first))),
        Some(first) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), first.close()).await;
            None
        }
        None => None,
    };
    let client = SqlClient {
        pool,
        anchor,
        expires_at: std::sync::Mutex::new(expires_at),
        stamp: std::sync::Mutex::new(stamp),
        user,
        renewing: tokio::sync::Mutex::new(()),
        generation: AtomicU64::new(0),
    };
    if let Some(n) = fill {
        // A pool that cannot be filled is not handed out (the caller keeps its current one).
        if let Err(e) = open(&client, n, s.connect_timeout, Pace::OneAtATime).await {
            close(&client, &s).await;
            // The direct attempt names the real cause, if it fails too.
            connect_direct::<P::Db>(&options, s.connect_timeout).await.map(drop)?;
            return Err(ConnectError {
                backend: <P::Db as Backend>::KIND,
                target,
                cause: connect_cause(&e, <P::Db as Backend>::connect_cause),
                timeout: None,
                source: Some(e),
            });
        }
    } else if s.min_connections > 0 {
        // `min_connections` are opened before the pool is handed out, not by the first requests
        // (a replacement pool swapped in must not make its first users wait for connects).
        // Best effort: sqlx opens the rest in the background as usual.
        let n = s.min_connections.min(s.max_connections);
        if let Err(e) = open(&client, n, s.connect_timeout, Pace::OneAtATime).await {
            tracing::debug!(target = %target, error = %e, "connscope: could not open every `min_connections` up front");
        }
    }
    Ok(client)
}

/// Renews a pool's credentials in place: fetches fresh ones and gives them to the pool for
/// its later connects. Its open connections stay: PostgreSQL and MySQL check credentials when a
/// connection is opened, and neither a password change nor a token's expiry ends a session.
/// A pool whose credentials come from a watched file is rebuilt when the file changes instead;
/// fresh credentials for another user need a new pool (a rebuild), as do changed settings.
async fn renew<P: SqlProvider>(p: &P, client: &SqlClient<P::Db>) -> Result<Renewal, ConnectError> {
    let _renewing = client.renewing.lock().await;
    renew_locked(p, client).await
}

/// [`renew`], its lock held.
async fn renew_locked<P: SqlProvider>(p: &P, client: &SqlClient<P::Db>) -> Result<Renewal, ConnectError> {
    let creds = credentials(p).await?;
    if creds.user != client.user {
        return Ok(Renewal::Rebuild);
    }
    let options = options_with(p, &creds)?;
    client.pool.set_connect_options(options);
    *client.expires_at.lock().unwrap_or_else(|p| p.into_inner()) = creds.expires_at;
    if creds.stamp.is_some() {
        // Re-read from its file: the file as it is now is what the next change is seen against.
        *client.stamp.lock().unwrap_or_else(|p| p.into_inner()) = creds.stamp;
    }
    client.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    Ok(Renewal::InPlace(creds.expires_at))
}

/// After a connect of `client`'s pool was refused for authentication (the credentials it
/// holds were rotated away before their declared expiry): fresh ones from the provider's
/// source are given to the pool in place, if they are for the same user. Whether it got them:
/// the caller then tries once more. `tried` is the [`SqlClient::credentials_generation`] the
/// refused connect started with: many connects refused at once fetch once, the others find
/// the credentials renewed since they started and try again with those.
pub(crate) async fn renew_after_refusal<P: SqlProvider>(
    p: &P,
    client: &SqlClient<P::Db>,
    tried: u64,
) -> bool {
    if p.credentials().is_none() {
        return false;
    }
    let _renewing = client.renewing.lock().await;
    if client.credentials_generation() != tried {
        return true;
    }
    let renewed = matches!(renew_locked(p, client).await, Ok(Renewal::InPlace(_)));
    tracing::info!(
        target = %redact_url(p.url()),
        renewed,
        "connscope: a pooled connect was refused for authentication; fetched fresh credentials"
    );
    renewed
}

/// How [`open`] opens its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// All at once: the caller waits for them (a login).
    AllAtOnce,
    /// One after the other: a pool opened while another one serves the app (a rebuild, a
    /// replacement for changed settings) must not take the CPU from the queries in flight.
    /// Measured on PostgreSQL (`suite/tests/credentials.rs`, 8 connections, 2 cores): opened
    /// at once, the queries running meanwhile had a p90 of 1.1-1.6 ms against 0.3 ms outside a
    /// rebuild; one at a time, 0.35 ms.
    OneAtATime,
}

/// Opens `n` pooled connections (each within `limit`) and runs a first statement on each;
/// returns the first failure, if any (the connections opened stay in the pool).
async fn open<DB: Backend>(
    client: &SqlClient<DB>,
    n: u32,
    limit: Duration,
    pace: Pace,
) -> Result<(), sqlx::Error> {
    let one = |pool: Pool<DB>| async move {
        tokio::time::timeout(limit, async {
            let mut conn = pool.acquire().await?;
            // A fresh server backend pays for its first statement (catalog caches, the
            // planner): paid here, not by the first request on this connection. A failure is
            // the first request's to report.
            let _ = DB::execute(&mut conn, sqlx::SqlStr::from_static("select 0"), &[]).await;
            Ok::<_, sqlx::Error>(conn)
        })
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    };
    // Held until all are open: else the pool would hand the same idle one out again.
    let mut opened = Vec::new();
    match pace {
        Pace::OneAtATime => {
            for _ in 0..n {
                opened.push(one(client.pool.clone()).await?);
            }
            Ok(())
        }
        Pace::AllAtOnce => {
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..n {
                opening.spawn(one(client.pool.clone()));
            }
            let mut failure = None;
            while let Some(done) = opening.join_next().await {
                match done {
                    Ok(Ok(conn)) => opened.push(conn),
                    Ok(Err(e)) => failure = failure.or(Some(e)),
                    Err(_) => failure = failure.or(Some(sqlx::Error::PoolTimedOut)),
                }
            }
            failure.map_or(Ok(()), Err)
        }
    }
}

/// Open = the pool is not closed and hands out a connection that answers a ping, all within
/// `health_timeout`. A pool whose connections are all busy counts as open (busy is working;
/// each statement reports its own failure). One dropped connection does not make the pool
/// closed: it is discarded and another one tried.
async fn is_open<DB: Backend>(client: &SqlClient<DB>, s: &super::PoolSettings) -> bool {
    let pool = &client.pool;
    if pool.is_closed() {
        return false;
    }
    if pool.num_idle() == 0 && pool.size() >= s.max_connections {
        return true;
    }
    let check = async {
        for _ in 0..2 {
            let mut conn = pool.acquire().await.ok()?;
            if conn.ping().await.is_ok() {
                return Some(());
            }
            conn.close_on_drop();
        }
        None
    };
    matches!(tokio::time::timeout(s.health_timeout, check).await, Ok(Some(())))
}

async fn close<DB: Backend>(client: &SqlClient<DB>, s: &super::PoolSettings) {
    // `Pool::close` waits for checked-out connections; connscope already waited for its users.
    let limit = s.connect_timeout.max(Duration::from_secs(1));
    // The idle connections one at a time, a few milliseconds apart: a server ending all of a
    // pool's sessions at once (process exits, for PostgreSQL) holds up the queries of the pool
    // that replaced it. Measured (`suite/tests/credentials.rs`, 8 connections): queries between
    // a swap and the old pool's close had a p99 of 2-11 ms closed at once, 1.8-2.8 ms paced.
    // Taken out of the pool before it is marked closed (so it opens no more to keep up
    // `min_connections`), then closed in turn. SQLite has no server sessions: closed at once.
    let idle: Vec<_> = if DB::KIND == "sqlite" {
        Vec::new()
    } else {
        std::iter::from_fn(|| client.pool.try_acquire()).collect()
    };
    let closing = client.pool.close();
    let gap = CLOSE_GAP.min(MAX_CLOSE_PACING / (idle.len().max(1) as u32));
    for conn in idle {
        let _ = tokio::time::timeout(limit, conn.close()).await;
        tokio::time::sleep(gap).await;
    }
    let _ = tokio::time::timeout(limit, closing).await;
    if let Some(anchor) = &client.anchor
        && let Some(conn) = anchor.lock().await.take()
    {
        let _ = tokio::time::timeout(limit, conn.close()).await;
    }
}

/// Between two connections closed by [`close`].
const CLOSE_GAP: Duration = Duration::from_millis(5);
/// At most this long spent pacing the close of a whole pool (a large pool is closed faster).
const MAX_CLOSE_PACING: Duration = Duration::from_millis(250);

/// A connect error whose sqlx error means the connection itself dropped (I/O, TLS, protocol,
/// SQLSTATE class 08, the backend's own "terminated" codes): what the query API retries on.
fn lost<DB: Backend>(err: &ConnectError) -> bool {
    err.sqlx_error().is_some_and(|e| is_connection_lost(e, DB::connection_lost))
}

impl<DB: Backend> Provider for SqlDb<DB> {
    type Raw = SqlClient<DB>;
    type Error = ConnectError;
    async fn connect(&self) -> Result<SqlClient<DB>, ConnectError> {
        connect(self, None).await
    }
    /// A pool opened to as many connections as `old` has open (at least `min_connections`).
    async fn replace(&self, old: &SqlClient<DB>) -> Result<SqlClient<DB>, ConnectError> {
        connect(self, Some(old.pool.size())).await
    }
    async fn is_open(&self, raw: &SqlClient<DB>) -> bool {
        is_open(raw, &self.pool_settings()).await
    }
    async fn close(&self, raw: &SqlClient<DB>) {
        close(raw, &self.pool_settings()).await
    }
    fn is_lost(&self, err: &ConnectError) -> bool {
        lost::<DB>(err)
    }
    fn expires_at(&self, raw: &SqlClient<DB>) -> Option<tokio::time::Instant> {
        raw.credentials_expire_at()
    }
    async fn renew(&self, raw: &SqlClient<DB>) -> Result<Renewal, ConnectError> {
        renew(self, raw).await
    }
    fn watched_file(&self, raw: &SqlClient<DB>) -> Option<crate::FileStamp> {
        raw.stamp.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<DB: Backend> Provider for SqlLogin<DB> {
    type Raw = SqlClient<DB>;
    type Error = ConnectError;
    /// Connects with the user's credentials, then forgets the password: the pool's connections
    /// are opened now, and its connect options are replaced by password-less ones. A connection
    /// lost later cannot be reopened with the user's password (on a server that asks for one),
    /// so the user is sent back to the login form instead of the password living on in memory.
    async fn connect(&self) -> Result<SqlClient<DB>, ConnectError> {
        let client = connect(self, None).await?;
        let s = self.pool_settings();
        let _ = open(&client, s.max_connections.max(1), s.connect_timeout, Pace::AllAtOnce).await;
        if let Ok(options) = DB::options(self.url(), self.user(), None) {
            client.pool.set_connect_options(options);
        }
        Ok(client)
    }
    async fn is_open(&self, raw: &SqlClient<DB>) -> bool {
        is_open(raw, &self.pool_settings()).await
    }
    async fn close(&self, raw: &SqlClient<DB>) {
        close(raw, &self.pool_settings()).await
    }
    fn is_lost(&self, err: &ConnectError) -> bool {
        lost::<DB>(err)
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::{ConnectCause, ConnectError};
    use crate::provider::Provider;
    use crate::sql::SqliteDb;

    fn error(source: Option<sqlx::Error>) -> ConnectError {
        ConnectError {
            backend: "sqlite",
            target: "`t`".into(),
            cause: ConnectCause::Other,
            timeout: None,
            source,
        }
    }

    #[test]
    fn a_dropped_connection_is_lost_and_a_refused_statement_is_not() {
        let db = SqliteDb::new("sqlite::memory:");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(db.is_lost(&error(Some(sqlx::Error::Io(reset)))));
        assert!(db.is_lost(&error(Some(sqlx::Error::PoolClosed))));
        assert!(!db.is_lost(&error(Some(sqlx::Error::RowNotFound))));
        assert!(!db.is_lost(&error(None)), "a timeout says nothing about a live client");
    }
}
