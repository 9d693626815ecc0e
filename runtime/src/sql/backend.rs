//! [`Backend`]: what differs between SQLite, PostgreSQL and MySQL — URL and credentials,
//! error codes (connect causes, dropped connections), and running a statement with binds.

use sqlx::error::DatabaseError;
use sqlx::{Database, FromRow, SqlStr};

use super::error::ConnectCause;
use super::value::SqlValue;
use crate::cache::BoxFuture;

/// The connect options type of backend `DB`.
pub type ConnectOptionsOf<DB> = <<DB as Database>::Connection as sqlx::Connection>::Options;

mod sealed {
    pub trait Sealed {}
}

/// A database connscope's SQL providers support: `sqlx::Sqlite` (feature `sqlite`),
/// `sqlx::Postgres` (feature `postgres`) and `sqlx::MySql` (feature `mysql`). Sealed.
pub trait Backend: Database + sealed::Sealed {
    /// `"sqlite"`, `"postgres"` or `"mysql"`.
    const KIND: &'static str;

    /// Parses `url` and applies `user` / `password` over what it says.
    #[doc(hidden)]
    fn options(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<ConnectOptionsOf<Self>, sqlx::Error>;

    /// Whether `url` names an in-memory database (one per connect options, shared by the pool).
    #[doc(hidden)]
    fn is_in_memory(url: &str) -> bool {
        let _ = url;
        false
    }

    /// Where the options point, for errors and logs: host, port, database, user. Never a password.
    #[doc(hidden)]
    fn target(options: &ConnectOptionsOf<Self>) -> String;

    /// The connect cause the backend's own error codes tell, if any.
    #[doc(hidden)]
    fn connect_cause(err: &sqlx::Error) -> Option<ConnectCause>;

    /// Whether a database error means the connection is gone (backend terminated, killed…).
    #[doc(hidden)]
    fn connection_lost(err: &dyn DatabaseError) -> bool;

    /// Runs `sql` with `binds`, returning every row.
    #[doc(hidden)]
    fn fetch_all<'c, T>(
        conn: &'c mut Self::Connection,
        sql: SqlStr,
        binds: &'c [SqlValue],
    ) -> BoxFuture<'c, Result<Vec<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, Self::Row> + Send + Unpin + 'static;

    /// Runs `sql` with `binds`, returning the first row, if any.
    #[doc(hidden)]
    fn fetch_optional<'c, T>(
        conn: &'c mut Self::Connection,
        sql: SqlStr,
        binds: &'c [SqlValue],
    ) -> BoxFuture<'c, Result<Option<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, Self::Row> + Send + Unpin + 'static;

    /// Runs `sql` with `binds`, returning the number of rows affected.
    #[doc(hidden)]
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        sql: SqlStr,
        binds: &'c [SqlValue],
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;
}

/// The statement-running methods, identical in text for every backend but needing its concrete
/// types (sqlx's executor bounds do not carry over generic code).
macro_rules! statements {
    ($db:ty) => {
        fn fetch_all<'c, T>(
            conn: &'c mut Self::Connection,
            sql: SqlStr,
            binds: &'c [SqlValue],
        ) -> BoxFuture<'c, Result<Vec<T>, sqlx::Error>>
        where
            T: for<'r> FromRow<'r, Self::Row> + Send + Unpin + 'static,
        {
            Box::pin(async move {
                let args = arguments::<$db>(binds)?;
                sqlx::query_as_with::<$db, T, _>(sql, args).fetch_all(conn).await
            })
        }

        fn fetch_optional<'c, T>(
            conn: &'c mut Self::Connection,
            sql: SqlStr,
            binds: &'c [SqlValue],
        ) -> BoxFuture<'c, Result<Option<T>, sqlx::Error>>
        where
            T: for<'r> FromRow<'r, Self::Row> + Send + Unpin + 'static,
        {
            Box::pin(async move {
                let args = arguments::<$db>(binds)?;
                sqlx::query_as_with::<$db, T, _>(sql, args).fetch_optional(conn).await
            })
        }

        fn execute<'c>(
            conn: &'c mut Self::Connection,
            sql: SqlStr,
            binds: &'c [SqlValue],
        ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
            Box::pin(async move {
                let args = arguments::<$db>(binds)?;
                Ok(sqlx::query_with::<$db, _>(sql, args).execute(conn).await?.rows_affected())
            })
        }
    };
}

/// Builds the backend's argument list from owned bind values.
#[allow(dead_code)] // used by whichever backends are enabled
fn arguments<DB>(binds: &[SqlValue]) -> Result<DB::Arguments, sqlx::Error>
where
    DB: Database,
    Option<bool>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<i16>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<i32>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<i64>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<f32>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<f64>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<Vec<u8>>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments as _;
    let mut args = DB::Arguments::default();
    for value in binds {
        let added = match value.clone() {
            SqlValue::Bool(v) => args.add(v),
            SqlValue::I16(v) => args.add(v),
            SqlValue::I32(v) => args.add(v),
            SqlValue::I64(v) => args.add(v),
            SqlValue::F32(v) => args.add(v),
            SqlValue::F64(v) => args.add(v),
            SqlValue::Text(v) => args.add(v),
            SqlValue::Bytes(v) => args.add(v),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::Sqlite {}

#[cfg(feature = "sqlite")]
impl Backend for sqlx::Sqlite {
    const KIND: &'static str = "sqlite";

    fn options(
        url: &str,
        _user: Option<&str>,
        _password: Option<&str>,
    ) -> Result<ConnectOptionsOf<Self>, sqlx::Error> {
        url.parse()
    }

    fn is_in_memory(url: &str) -> bool {
        url.contains(":memory:") || url.contains("mode=memory")
    }

    fn target(options: &ConnectOptionsOf<Self>) -> String {
        let file = options.get_filename().display().to_string();
        if file.starts_with("file:sqlx-in-memory-") {
            "an in-memory database".to_owned()
        } else {
            format!("file `{file}`")
        }
    }

    fn connect_cause(err: &sqlx::Error) -> Option<ConnectCause> {
        // SQLITE_CANTOPEN (14), possibly extended.
        let code = err.as_database_error()?.code()?.parse::<u32>().ok()?;
        (code & 0xff == 14).then_some(ConnectCause::UnknownDatabase)
    }

    fn connection_lost(_err: &dyn DatabaseError) -> bool {
        false
    }

    statements!(sqlx::Sqlite);
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::Postgres {}

#[cfg(feature = "postgres")]
impl Backend for sqlx::Postgres {
    const KIND: &'static str = "postgres";

    fn options(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<ConnectOptionsOf<Self>, sqlx::Error> {
        let mut options: sqlx::postgres::PgConnectOptions = url.parse()?;
        if let Some(user) = user {
            options = options.username(user);
        }
        if let Some(password) = password {
            options = options.password(password);
        }
        Ok(options)
    }

    fn target(o: &ConnectOptionsOf<Self>) -> String {
        let db =
            o.get_database().map_or_else(|| "the user's default database".to_owned(), |d| format!("`{d}`"));
        format!("{}:{} (database {db}, user `{}`)", o.get_host(), o.get_port(), o.get_username())
    }

    fn connect_cause(err: &sqlx::Error) -> Option<ConnectCause> {
        match &*err.as_database_error()?.code()? {
            // invalid_password, invalid_authorization_specification (unknown role, no login)
            "28P01" | "28000" => Some(ConnectCause::Auth),
            // invalid_catalog_name
            "3D000" => Some(ConnectCause::UnknownDatabase),
            _ => None,
        }
    }

    fn connection_lost(err: &dyn DatabaseError) -> bool {
        // admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now,
        // idle_session_timeout, idle_in_transaction_session_timeout: the backend is gone.
        matches!(err.code().as_deref(), Some("57P01" | "57P02" | "57P03" | "57P05" | "25P03"))
    }

    statements!(sqlx::Postgres);
}

#[cfg(feature = "mysql")]
impl sealed::Sealed for sqlx::MySql {}

#[cfg(feature = "mysql")]
impl Backend for sqlx::MySql {
    const KIND: &'static str = "mysql";

    fn options(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<ConnectOptionsOf<Self>, sqlx::Error> {
        let mut options: sqlx::mysql::MySqlConnectOptions = url.parse()?;
        if let Some(user) = user {
            options = options.username(user);
        }
        if let Some(password) = password {
            options = options.password(password);
        }
        Ok(options)
    }

    fn target(o: &ConnectOptionsOf<Self>) -> String {
        let db = o.get_database().map_or_else(|| "none".to_owned(), |d| format!("`{d}`"));
        format!("{}:{} (database {db}, user `{}`)", o.get_host(), o.get_port(), o.get_username())
    }

    fn connect_cause(err: &sqlx::Error) -> Option<ConnectCause> {
        let db = err.as_database_error()?;
        let number = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?.number();
        match number {
            // access denied (user / to database), plugin auth, password expired
            1044 | 1045 | 1698 | 1862 => Some(ConnectCause::Auth),
            // unknown database
            1049 => Some(ConnectCause::UnknownDatabase),
            _ => None,
        }
    }

    fn connection_lost(err: &dyn DatabaseError) -> bool {
        let Some(e) = err.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() else { return false };
        // connection killed (KILL), server shutdown, aborted connection, net read/write
        // errors and timeouts, server gone away, lost connection.
        matches!(e.number(), 1927 | 1053 | 1152 | 1158 | 1159 | 1160 | 1161 | 2006 | 2013)
    }

    statements!(sqlx::MySql);
}
