//! The statement API on `Conn<P>` of a SQL provider: [`Query`] (cached reads with binds and a
//! per-call ttl, typed rows) and [`Execute`] (writes, never cached, invalidating tags), and
//! running a statement with one retry on a fresh connection when the connection dropped.

use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sqlx::{Connection as _, FromRow, SqlSafeStr, SqlStr};

use super::backend::Backend;
use super::cache::{Cached, Entry, QueryKey, ReadKey, Shape, identity, query_cache};
use super::client::renew_after_refusal;
use super::client::{SqlStats, connect_direct};
use super::error::{ConnectCause, ConnectError, SqlError, connect_cause, is_connection_lost};
use super::generations::{clear_connection, generation, pin};
use super::settings::SqlProvider;
use super::shared;
use super::value::SqlValue;
use crate::cache::BoxFuture;
use crate::conn::{Conn, ConnRef};
use crate::error::Error;

/// A statement ready to run: SQL, binds and, for reads, the result shape.
struct Statement {
    sql: SqlStr,
    binds: Arc<[SqlValue]>,
    shape: Shape,
}

/// Runs a statement on one connection.
type Op<DB, R> = for<'c> fn(
    &'c mut <DB as sqlx::Database>::Connection,
    &'c Statement,
) -> BoxFuture<'c, Result<R, sqlx::Error>>;

impl<P: SqlProvider> Conn<P> {
    /// A read: bind parameters, pick a ttl (default: the connection's `query_ttl`), then
    /// `fetch_all` / `fetch_one` / `fetch_optional` typed rows. Results are cached in this
    /// connection's scope (global, or the session's), keyed by the connection's settings, the
    /// SQL text and the binds. A read whose connection dropped is retried once on a fresh one.
    ///
    /// ```no_run
    /// # async fn f(conn: connscope::Conn<connscope::sql::SqliteDb>) -> Result<(), connscope::sql::SqlError> {
    /// #[derive(sqlx::FromRow)]
    /// struct Customer { id: i64, name: String }
    ///
    /// let rows = conn
    ///     .query("select id, name from customers where region = ?")
    ///     .bind("emea")
    ///     .ttl(std::time::Duration::from_secs(60))
    ///     .fetch_all::<Customer>()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn query(&self, sql: impl SqlSafeStr) -> Query<'_, P> {
        Query {
            conn: self,
            sql: sql.into_sql_str(),
            binds: Vec::new(),
            ttl: None,
            cached: true,
            per_session: false,
            tags: Vec::new(),
            sharing: PhantomData,
        }
    }

    /// A write (`insert`, `update`, DDL…): never cached, and able to invalidate cached queries by
    /// tag. Retried on a fresh connection only when its connection dropped before the statement
    /// was sent; once sent, a dropped connection is an error (it may or may not have applied).
    /// Await it for the number of rows affected.
    pub fn execute(&self, sql: impl SqlSafeStr) -> Execute<'_, P> {
        Execute { conn: self, sql: sql.into_sql_str(), binds: Vec::new(), invalidates: Vec::new() }
    }

    /// What this SQL connection has done so far.
    pub fn sql_stats(&self) -> SqlStats {
        self.provider().state().counters.snapshot()
    }

    /// Makes every cached query of this connection (same settings) stale, in every scope.
    pub fn clear_query_cache(&self) {
        clear_connection(identity(self.provider()));
        shared::clear_connection_in_background(self);
    }
}

/// A read being built: see [`Conn::query`]. `S` says whether its result may go to the shared
/// tier ([`Query::shared`], feature `redis`).
#[must_use = "a query does nothing until `fetch_all`, `fetch_one` or `fetch_optional` is awaited"]
pub struct Query<'c, P: SqlProvider, S = NotShared> {
    conn: &'c Conn<P>,
    sql: SqlStr,
    binds: Vec<SqlValue>,
    ttl: Option<Duration>,
    cached: bool,
    per_session: bool,
    tags: Vec<Arc<str>>,
    sharing: PhantomData<S>,
}

/// A [`Query`] cached in this process only (the default).
pub enum NotShared {}

/// A [`Query`] whose result also goes to the shared tier: see [`Query::shared`].
#[cfg(feature = "redis")]
pub enum Shared {}

#[cfg(feature = "redis")]
impl<'c, P: SqlProvider> Query<'c, P, NotShared> {
    /// Shares the result with the app's other instances through Redis (feature `redis`, with
    /// `[redis]` or `REDIS_URL` configured; otherwise this changes nothing): a local miss reads
    /// it from Redis, or runs the query once across instances while the others wait for it; a
    /// tag invalidation or [`Conn::clear_query_cache`] on any instance reaches every one within
    /// the invalidation bound. The rows must be serde types (encoded with postcard); the key
    /// holds the SQL, the binds, the row type's name and the tags' generations, so a changed row
    /// type or query never reads old bytes.
    ///
    /// Never shared, whatever this says: reads of a session connection or `per_session` (one
    /// user's results), and in-memory SQLite (each process has its own database).
    ///
    /// ```no_run
    /// # async fn f(conn: connscope::Conn<connscope::sql::SqliteDb>) -> Result<(), connscope::sql::SqlError> {
    /// #[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
    /// struct Total { region: String, amount: f64 }
    ///
    /// let totals = conn
    ///     .query("select region, sum(amount) as amount from orders group by region")
    ///     .tag("orders")
    ///     .shared()
    ///     .fetch_all::<Total>()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn shared(self) -> Query<'c, P, Shared> {
        let Query { conn, sql, binds, ttl, cached, per_session, tags, sharing: _ } = self;
        Query { conn, sql, binds, ttl, cached, per_session, tags, sharing: PhantomData }
    }
}

impl<P: SqlProvider, S> Query<'_, P, S> {
    /// Caches the result in the current session, even on a connection every user shares: each
    /// user then has results of their own (read through the same pool), released when their
    /// session ends. Without a current session the query fails with
    /// [`Error::NoActiveSession`](crate::Error::NoActiveSession) instead of caching for everyone.
    ///
    /// Use it when what a user may see differs per user but the connection does not (row-level
    /// security keyed by a session setting, a `where owner = ?` the app binds), or simply to keep
    /// one user's large results out of the shared cache.
    pub fn per_session(mut self) -> Self {
        self.per_session = true;
        self
    }

    /// Binds the next parameter (`$1`, `?`…).
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.binds.push(value.into());
        self
    }

    /// How long the result stays cached (zero: not cached).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Runs it against the database every time, without reading or filling the cache.
    pub fn uncached(mut self) -> Self {
        self.cached = false;
        self
    }

    /// Tags the cached result: [`Execute::invalidates`] or [`invalidate`](super::invalidate)
    /// with this tag makes it stale.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(Arc::from(tag));
        self
    }

    async fn load<T>(self, shape: Shape, codec: Option<shared::RowCodec>) -> Result<Cached, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + Send + Sync + Unpin + 'static,
    {
        let op: Op<P::Db, Cached> = read::<P::Db, T>;
        let conn = self.conn;
        let provider = conn.provider();
        let settings = provider.pool_settings();
        let ttl = self.ttl.unwrap_or(settings.query_ttl);
        let st = Statement { sql: self.sql, binds: self.binds.into(), shape };
        if !self.cached || ttl.is_zero() {
            return run(conn, &st, op, true).await;
        }
        let counters = &provider.state().counters;
        let (cache, runtime) = match query_cache(conn, ttl, settings.query_cache_entries, self.per_session) {
            Ok(found) => found,
            Err(e) => {
                counters.errors.fetch_add(1, Relaxed);
                return Err(e.into());
            }
        };
        let target = codec.and_then(|codec| Some((shared::Target::of(conn, runtime.as_ref())?, codec)));
        // Borrowed unless the read is shared: an unshared hit allocates nothing for it.
        let local_tags = shared::local_tags(&self.tags, target.is_some());
        let local_tags: &[Arc<str>] = &local_tags;
        let id = identity(provider);
        let key = QueryKey {
            identity: id,
            generation: generation(id, local_tags),
            sql: st.sql.clone(),
            binds: Arc::clone(&st.binds),
            shape,
            row: std::any::TypeId::of::<T>(),
        };
        let (tags, st, target) = (&self.tags, &st, &target);
        let ran_flag = std::sync::atomic::AtomicBool::new(false);
        let ran = &ran_flag;
        let loader = move || async move {
            ran.store(true, Relaxed);
            let pins = pin(id, local_tags);
            let loaded = match target {
                Some((target, codec)) => {
                    let row = (std::any::type_name::<T>(), size_of::<T>());
                    let read = ReadKey { sql: st.sql.as_str(), binds: &st.binds, shape, tags, row };
                    target.load(conn, read, ttl, *codec, run(conn, st, op, true)).await
                }
                None => run(conn, st, op, true).await.map(|value| (value, None)),
            };
            // A result read from Redis is kept here only as long as Redis keeps it.
            loaded.map(|(value, remaining)| Entry::new(value, remaining.map_or(ttl, |r| r.min(ttl)), pins))
        };
        let mut entry = cache.try_get_with_own_error(key.clone(), loader()).await;
        if let Ok(found) = &entry
            && !ran.load(Relaxed)
            && found.is_expired()
        {
            // Past its own ttl, though its bucket's cache still holds it: load it again. (Two
            // callers meeting the same expired entry may both remove it; the later removal can
            // then drop the other's fresh value: one extra load, never a stale value.)
            cache.invalidate(&key).await;
            entry = cache.try_get_with_own_error(key, loader()).await;
        }
        if ran.load(Relaxed) {
            counters.cache_misses.fetch_add(1, Relaxed);
        } else if entry.is_ok() {
            counters.cache_hits.fetch_add(1, Relaxed);
        }
        entry.map(|e| e.value)
    }
}

impl<P: SqlProvider> Query<'_, P, NotShared> {
    /// Every row.
    pub async fn fetch_all<T>(self) -> Result<Arc<Vec<T>>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + Send + Sync + Unpin + 'static,
    {
        self.load::<T>(Shape::All, None).await.map(all)
    }

    /// Exactly one row (the first); no row is [`SqlError::Database`] with `RowNotFound`.
    pub async fn fetch_one<T>(self) -> Result<Arc<T>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + Send + Sync + Unpin + 'static,
    {
        self.load::<T>(Shape::One, None).await.map(one)
    }

    /// The first row, if any.
    pub async fn fetch_optional<T>(self) -> Result<Option<Arc<T>>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + Send + Sync + Unpin + 'static,
    {
        self.load::<T>(Shape::Optional, None).await.map(optional)
    }
}

#[cfg(feature = "redis")]
impl<P: SqlProvider> Query<'_, P, Shared> {
    /// Every row (serde rows: they may come from another instance).
    pub async fn fetch_all<T>(self) -> Result<Arc<Vec<T>>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + SharedRow,
    {
        self.load::<T>(Shape::All, Some(shared::codec::<T>(Shape::All))).await.map(all)
    }

    /// Exactly one row (the first); no row is [`SqlError::Database`] with `RowNotFound`.
    pub async fn fetch_one<T>(self) -> Result<Arc<T>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + SharedRow,
    {
        self.load::<T>(Shape::One, Some(shared::codec::<T>(Shape::One))).await.map(one)
    }

    /// The first row, if any.
    pub async fn fetch_optional<T>(self) -> Result<Option<Arc<T>>, SqlError>
    where
        T: for<'r> FromRow<'r, <P::Db as sqlx::Database>::Row> + SharedRow,
    {
        self.load::<T>(Shape::Optional, Some(shared::codec::<T>(Shape::Optional))).await.map(optional)
    }
}

/// A row type a shared read can return: serde (it crosses instances) as well as `FromRow`.
#[cfg(feature = "redis")]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a row of a shared read: rows of `.shared()` cross app instances through Redis",
    label = "derive `serde::Serialize` and `serde::Deserialize` for it (besides `sqlx::FromRow`)",
    note = "or leave `.shared()` out to cache this read in this process only"
)]
pub trait SharedRow: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static {}

#[cfg(feature = "redis")]
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static> SharedRow for T {}

fn all<T: Send + Sync + 'static>(value: Cached) -> Arc<Vec<T>> {
    value.downcast::<Vec<T>>().unwrap_or_else(|_| unreachable!("connscope: cached result of another type"))
}

fn one<T: Send + Sync + 'static>(value: Cached) -> Arc<T> {
    value.downcast::<T>().unwrap_or_else(|_| unreachable!("connscope: cached result of another type"))
}

fn optional<T: Send + Sync + 'static>(value: Cached) -> Option<Arc<T>> {
    let value = value
        .downcast::<Option<Arc<T>>>()
        .unwrap_or_else(|_| unreachable!("connscope: cached result of another type"));
    Option::clone(&value)
}

fn read<'c, DB: Backend, T>(
    conn: &'c mut DB::Connection,
    st: &'c Statement,
) -> BoxFuture<'c, Result<Cached, sqlx::Error>>
where
    T: for<'r> FromRow<'r, DB::Row> + Send + Sync + Unpin + 'static,
{
    Box::pin(async move {
        let (sql, binds) = (st.sql.clone(), &*st.binds);
        Ok(match st.shape {
            Shape::All => Arc::new(DB::fetch_all::<T>(conn, sql, binds).await?) as Cached,
            Shape::One => {
                let row = DB::fetch_optional::<T>(conn, sql, binds).await?.ok_or(sqlx::Error::RowNotFound)?;
                Arc::new(row) as Cached
            }
            Shape::Optional => {
                Arc::new(DB::fetch_optional::<T>(conn, sql, binds).await?.map(Arc::new)) as Cached
            }
        })
    })
}

fn write<'c, DB: Backend>(
    conn: &'c mut DB::Connection,
    st: &'c Statement,
) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
    DB::execute(conn, st.sql.clone(), &st.binds)
}

/// A write being built: see [`Conn::execute`]. Await it for the number of rows affected.
#[must_use = "a statement does nothing until it is awaited"]
pub struct Execute<'c, P: SqlProvider> {
    conn: &'c Conn<P>,
    sql: SqlStr,
    binds: Vec<SqlValue>,
    invalidates: Vec<Arc<str>>,
}

impl<P: SqlProvider> Execute<'_, P> {
    /// Binds the next parameter (`$1`, `?`…).
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.binds.push(value.into());
        self
    }

    /// Once the statement ran, makes every cached query tagged `tag` stale (in every scope).
    pub fn invalidates(mut self, tag: &str) -> Self {
        self.invalidates.push(Arc::from(tag));
        self
    }
}

impl<'c, P: SqlProvider> IntoFuture for Execute<'c, P> {
    type Output = Result<u64, SqlError>;
    type IntoFuture = BoxFuture<'c, Result<u64, SqlError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let st = Statement { sql: self.sql, binds: self.binds.into(), shape: Shape::All };
            let result = run(self.conn, &st, write::<P::Db>, false).await;
            // Also after a failure: a dropped connection may have applied it.
            for tag in &self.invalidates {
                super::generations::invalidate(tag);
            }
            shared::invalidate_tags_of(self.conn, &self.invalidates).await;
            result
        })
    }
}

/// Runs `op` on a pooled connection. If the connection dropped, a read (`retry`) runs once
/// more on a connection opened after the failure; anything else is returned at once.
async fn run<P: SqlProvider, R>(
    conn: &Conn<P>,
    st: &Statement,
    op: Op<P::Db, R>,
    retry: bool,
) -> Result<R, SqlError> {
    let result = run_once_or_twice(conn, st, op, retry).await;
    if result.is_err() {
        conn.provider().state().counters.errors.fetch_add(1, Relaxed);
    }
    result
}

async fn run_once_or_twice<P: SqlProvider, R>(
    conn: &Conn<P>,
    st: &Statement,
    op: Op<P::Db, R>,
    retry: bool,
) -> Result<R, SqlError> {
    let counters = &conn.provider().state().counters;
    let limit = conn.provider().pool_settings().statement_timeout;
    let client = conn.get().await?;
    let error = match acquire(conn, &client).await {
        Ok(mut pooled) => {
            counters.statements.fetch_add(1, Relaxed);
            match within(limit, op(&mut pooled, st)).await {
                Err(after) => {
                    // Stopped mid-statement: the connection's state is unknown.
                    pooled.close_on_drop();
                    return Err(timed_out(conn, after));
                }
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) if lost::<P>(&e) => {
                    // Never hand this one out again.
                    pooled.close_on_drop();
                    counters.connections_lost.fetch_add(1, Relaxed);
                    if !retry {
                        return Err(SqlError::ConnectionLost {
                            connection: conn.name().to_owned(),
                            retried: false,
                            source: e,
                        });
                    }
                    e
                }
                Ok(Err(e)) => {
                    return Err(SqlError::Database { connection: conn.name().to_owned(), source: e });
                }
            }
        }
        // A connection the pool was opening got cut: the statement was never sent, so even a
        // write can run on a fresh connection.
        Err(e) if lost::<P>(&e) => {
            counters.connections_lost.fetch_add(1, Relaxed);
            e
        }
        Err(e) => return Err(Box::pin(acquire_failed(conn, &client, e)).await),
    };
    // The rare path, boxed: it keeps the common query future small.
    Box::pin(retry_on_fresh(conn, &client, st, op, error)).await
}

/// The second run of a read whose connection dropped (`error`), on a connection opened now.
async fn retry_on_fresh<P: SqlProvider, R>(
    conn: &Conn<P>,
    client: &ConnRef<P>,
    st: &Statement,
    op: Op<P::Db, R>,
    error: sqlx::Error,
) -> Result<R, SqlError> {
    let counters = &conn.provider().state().counters;
    let limit = conn.provider().pool_settings().statement_timeout;
    tracing::info!(connection = %conn.name(), %error, "connscope: connection dropped; retrying on a fresh one");
    let timeout = conn.provider().pool_settings().connect_timeout;
    // Refused for authentication: tried once more with fresh credentials (see `acquire`).
    let mut renewed = false;
    let attempt = loop {
        let tried = client.credentials_generation();
        match connect_direct::<P::Db>(&client.pool().connect_options(), timeout).await {
            Err(e)
                if !renewed
                    && e.cause == ConnectCause::Auth
                    && Box::pin(renew_after_refusal(conn.provider(), client, tried)).await =>
            {
                renewed = true
            }
            other => break other,
        }
    };
    let mut fresh = match attempt {
        Ok(c) => c,
        Err(e) => {
            client.report_broken();
            return Err(Error::connect(conn.name(), e).into());
        }
    };
    counters.connections_opened.fetch_add(1, Relaxed);
    counters.reconnects.fetch_add(1, Relaxed);
    counters.retries.fetch_add(1, Relaxed);
    counters.statements.fetch_add(1, Relaxed);
    let second = within(limit, op(&mut fresh, st)).await;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), fresh.close()).await;
    });
    match second.map_err(|after| timed_out(conn, after))? {
        Ok(r) => Ok(r),
        Err(e) if lost::<P>(&e) => {
            // Twice in a row: the server itself may be gone; check the pool on next use.
            client.report_broken();
            Err(SqlError::ConnectionLost { connection: conn.name().to_owned(), retried: true, source: e })
        }
        Err(e) => Err(SqlError::Database { connection: conn.name().to_owned(), source: e }),
    }
}

/// Whether `e` means the connection itself dropped (what a read is retried on).
fn lost<P: SqlProvider>(e: &sqlx::Error) -> bool {
    is_connection_lost(e, <P::Db as Backend>::connection_lost)
}

/// A statement stopped by `conn`'s `statement_timeout` after `after`.
fn timed_out<P: SqlProvider>(conn: &Conn<P>, after: Duration) -> SqlError {
    SqlError::StatementTimeout { connection: conn.name().to_owned(), after }
}

/// A pooled connection. A connect the pool made for it that the server refused for
/// authentication (credentials rotated away before their declared expiry) is tried once more
/// with fresh credentials from the provider's source.
async fn acquire<P: SqlProvider>(
    conn: &Conn<P>,
    client: &ConnRef<P>,
) -> Result<sqlx::pool::PoolConnection<P::Db>, sqlx::Error> {
    let mut renewed = false;
    loop {
        let tried = client.credentials_generation();
        match client.pool().acquire().await {
            Err(e)
                if !renewed
                    && connect_cause(&e, <P::Db as Backend>::connect_cause) == ConnectCause::Auth
                    && Box::pin(renew_after_refusal(conn.provider(), client, tried)).await =>
            {
                renewed = true
            }
            other => return other,
        }
    }
}

/// `fut`, unless it runs longer than `limit` (then `Err(limit)`).
async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Result<T, Duration> {
    match limit {
        Some(after) => tokio::time::timeout(after, fut).await.map_err(|_| after),
        None => Ok(fut.await),
    }
}

/// Why no pooled connection came: all busy (the server answers a direct attempt), or the
/// server cannot be reached — then the direct attempt names the cause.
async fn acquire_failed<P: SqlProvider>(conn: &Conn<P>, client: &ConnRef<P>, e: sqlx::Error) -> SqlError {
    let settings = conn.provider().pool_settings();
    let options = client.pool().connect_options();
    let failure = match e {
        sqlx::Error::PoolTimedOut => {
            match connect_direct::<P::Db>(&options, settings.connect_timeout).await {
                Ok(c) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
                    return SqlError::PoolExhausted {
                        connection: conn.name().to_owned(),
                        waited: settings.connect_timeout,
                        max: settings.max_connections,
                    };
                }
                Err(direct) => direct,
            }
        }
        e => ConnectError {
            backend: <P::Db as Backend>::KIND,
            target: <P::Db as Backend>::target(&options),
            cause: connect_cause(&e, <P::Db as Backend>::connect_cause),
            timeout: None,
            source: Some(e),
        },
    };
    client.report_broken();
    Error::connect(conn.name(), failure).into()
}
