//! SQL providers on sqlx (features `sqlite` — the default —, `postgres`, `mysql`): a global
//! pool ([`SqlDb`]), a per-session pool with the user's own credentials ([`SqlLogin`]), and a
//! `query` / `execute` API on their `Conn` whose reads are cached per scope.
//!
//! ```no_run
//! use std::time::Duration;
//! use connscope::{Runtime, sql::SqliteDb};
//!
//! #[derive(sqlx::FromRow)]
//! struct Product { name: String, price: f64 }
//!
//! # async fn f() -> Result<(), connscope::sql::SqlError> {
//! let rt = Runtime::builder().connection_setting("shop", "url", "sqlite::memory:").build();
//! let conn = rt.connection::<SqliteDb>("shop").await?;           // [connections.shop]
//! conn.execute("create table products (name text, price real)").await?;
//! conn.execute("insert into products values (?, ?)").bind("tea").bind(3.5).invalidates("products").await?;
//! let cheap = conn
//!     .query("select name, price from products where price < ?")
//!     .bind(5.0)
//!     .ttl(Duration::from_secs(60))
//!     .tag("products")
//!     .fetch_all::<Product>()
//!     .await?;                                                   // cached for 60 s
//! # Ok(()) }
//! ```
//!
//! * **Connecting** makes one direct attempt first, so a failure names its cause
//!   ([`ConnectCause`]: refused, auth, unknown database, timeout…) and the connection, never a
//!   bare "pool timed out". An in-memory SQLite URL is one database shared by the whole pool.
//! * **Health**: `is_open` takes a pooled connection and pings it under `health_timeout`; a
//!   pooled connection idle for `check_idle_after` or more is pinged before use.
//! * **Dropped connections**: a read whose connection dropped (I/O error, backend terminated,
//!   connection killed) runs once more on a freshly opened connection, counted in
//!   [`SqlStats`]; any other failure (syntax, constraint, permission) is returned at once with
//!   the database's message. Writes are not retried.
//! * **Caching**: a read is cached in the scope of its connection — the runtime for a global
//!   connection, the session for a session connection — keyed by the connection's settings
//!   (not its name), the SQL text, the binds and the row type, for the call's `ttl` (default:
//!   the connection's `query_ttl`). `uncached()` skips the cache; writes never use it.
//! * **Several instances** (feature `redis`): `.shared()` keeps a read's result in Redis too,
//!   computed once across instances; tag invalidations and `clear_query_cache` reach every
//!   instance within the invalidation bound.

mod backend;
mod cache;
mod client;
mod error;
mod generations;
mod query;
mod redact;
mod settings;
#[cfg(feature = "redis")]
mod shared;
#[cfg(not(feature = "redis"))]
#[path = "shared_off.rs"]
mod shared;
mod value;

pub use backend::{Backend, ConnectOptionsOf};
#[doc(hidden)]
pub use cache::query_cache_kinds;
pub use client::{SqlClient, SqlStats};
pub use error::{ConnectCause, ConnectError, SqlError};
#[doc(hidden)]
pub use generations::live_tag_counters;
pub use query::{Execute, NotShared, Query};
#[cfg(feature = "redis")]
pub use query::{Shared, SharedRow};
pub use settings::{PoolSettings, SqlDb, SqlLogin, SqlProvider, SqlState};
pub use value::SqlValue;

/// Makes every cached query tagged `tag` stale, in every scope — and, with feature `redis`, on
/// every instance (broadcast in the background; [`Execute::invalidates`] waits for it instead).
pub fn invalidate(tag: &str) {
    generations::invalidate(tag);
    shared::invalidate_tag_in_background(tag);
}

/// The sqlx crate connscope's SQL providers are built on (for `sqlx::FromRow`, pools…).
pub use sqlx;

/// A global SQLite connection.
#[cfg(feature = "sqlite")]
pub type SqliteDb = SqlDb<sqlx::Sqlite>;

/// A global PostgreSQL connection.
#[cfg(feature = "postgres")]
pub type PostgresDb = SqlDb<sqlx::Postgres>;

/// A session-scoped PostgreSQL connection with the user's own credentials.
#[cfg(feature = "postgres")]
pub type PostgresLogin = SqlLogin<sqlx::Postgres>;

/// A global MySQL / MariaDB connection.
#[cfg(feature = "mysql")]
pub type MySqlDb = SqlDb<sqlx::MySql>;

/// A session-scoped MySQL / MariaDB connection with the user's own credentials.
#[cfg(feature = "mysql")]
pub type MySqlLogin = SqlLogin<sqlx::MySql>;
