//! SQL errors: [`ConnectError`] (why a connection could not be opened, by cause, never a bare
//! "pool timed out") and [`SqlError`] (what a query or statement call returns).

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// Why opening a database connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectCause {
    /// Nothing listens at the address: the server is down or on another port.
    Refused,
    /// The server rejected the credentials (wrong password, unknown or locked role).
    Auth,
    /// The server has no database of that name (or SQLite cannot open the file).
    UnknownDatabase,
    /// No answer within the connect timeout.
    Timeout,
    /// The host cannot be resolved or reached.
    Unreachable,
    /// TLS negotiation failed.
    Tls,
    /// The settings (usually `url`) are malformed.
    Config,
    /// The credential source (`password_command`, `password_file`, `password_env`, or one given
    /// in code) gave no credentials.
    Credentials,
    /// Anything else; the database's message says what.
    Other,
}

impl ConnectCause {
    fn advice(self) -> &'static str {
        match self {
            ConnectCause::Refused => {
                "connection refused: nothing listens there (is the server running, on that host and port?)"
            }
            ConnectCause::Auth => "authentication failed (check `user` and `password`)",
            ConnectCause::UnknownDatabase => "unknown database (check the database name in `url`)",
            ConnectCause::Timeout => {
                "timed out (`connect_timeout`): the server is unreachable, or too busy to answer"
            }
            ConnectCause::Unreachable => "the host cannot be reached (check the host in `url`)",
            ConnectCause::Tls => "TLS negotiation failed",
            ConnectCause::Config => "invalid connection settings (check `url`)",
            ConnectCause::Credentials => {
                "the credential source failed (check `password_command`, `password_file` or `password_env`)"
            }
            ConnectCause::Other => "the connection failed",
        }
    }
}

/// A connection to a SQL database could not be opened. Names the backend, the target (host,
/// port, database, user: never a password) and the cause, and keeps sqlx's error.
///
/// Inside [`Error::Connect`] it is the `source`; [`SqlError::connect_cause`] digs it out.
#[derive(Debug)]
pub struct ConnectError {
    pub(crate) backend: &'static str,
    pub(crate) target: String,
    pub(crate) cause: ConnectCause,
    pub(crate) timeout: Option<Duration>,
    pub(crate) source: Option<sqlx::Error>,
}

impl ConnectError {
    /// The cause.
    pub fn cause(&self) -> ConnectCause {
        self.cause
    }

    /// sqlx's own error, if there was one (a timeout has none).
    pub fn sqlx_error(&self) -> Option<&sqlx::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.backend, self.target, self.cause.advice())?;
        if let Some(t) = self.timeout {
            write!(f, " after {t:?}")?;
        }
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// What a SQL call (`fetch_*`, `execute`) returns on failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// No usable connection: configuration, scope (no session, session ended), or the database
    /// could not be reached — then an [`Error::Connect`] naming the connection, with a
    /// [`ConnectError`] inside naming the cause.
    #[error(transparent)]
    Connection(#[from] Error),
    /// The database rejected the statement (syntax, constraint, permission, no row…): its own
    /// message. Never retried, never cached.
    #[error("statement on connection `{connection}` failed: {source}")]
    Database {
        /// The connection name.
        connection: String,
        /// sqlx's error, with the database's message and code.
        source: sqlx::Error,
    },
    /// The connection dropped while the statement ran. A query is retried once on a fresh
    /// connection first (`retried`); a write (`execute`) that was already sent is not, because
    /// it may or may not have been applied.
    #[error(
        "connection `{connection}` dropped during the statement{}: {source}",
        if *retried { " and again on a fresh connection" } else { " (writes are not retried: it may or may not have been applied)" }
    )]
    ConnectionLost {
        /// The connection name.
        connection: String,
        /// Whether the statement was retried on a fresh connection.
        retried: bool,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// Every pooled connection stayed busy for the whole connect timeout (the server itself
    /// answers).
    #[error(
        "connection `{connection}`: no pooled connection came free within {waited:?} (all {max} busy); \
         raise `max_connections` or `connect_timeout`, or hold connections for less time"
    )]
    PoolExhausted {
        /// The connection name.
        connection: String,
        /// How long the call waited.
        waited: Duration,
        /// The pool size.
        max: u32,
    },
    /// The statement was still running when the connection's `statement_timeout` ran out.
    /// Its connection was closed (never reused mid-statement) and the statement was not
    /// retried; nothing was cached.
    #[error(
        "statement on connection `{connection}` did not finish within {after:?} (`statement_timeout`); \
         its connection was closed. Raise `statement_timeout`, or make the statement cheaper"
    )]
    StatementTimeout {
        /// The connection name.
        connection: String,
        /// The connection's `statement_timeout`.
        after: Duration,
    },
}

impl SqlError {
    /// Why the connection could not be opened, when that is what failed.
    pub fn connect_cause(&self) -> Option<ConnectCause> {
        match self {
            SqlError::Connection(Error::Connect { source, .. }) => {
                source.downcast_ref::<ConnectError>().map(ConnectError::cause)
            }
            _ => None,
        }
    }

    /// The database's error code (SQLSTATE), if the database rejected the statement.
    pub fn code(&self) -> Option<String> {
        match self {
            SqlError::Database { source, .. } => {
                source.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
            }
            _ => None,
        }
    }
}

/// Maps a failed connect attempt to its cause. `classify_db` knows the backend's error codes.
pub(crate) fn connect_cause(
    err: &sqlx::Error,
    classify_db: fn(&sqlx::Error) -> Option<ConnectCause>,
) -> ConnectCause {
    if let Some(cause) = classify_db(err) {
        return cause;
    }
    match err {
        sqlx::Error::Io(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectCause::Refused,
            std::io::ErrorKind::TimedOut => ConnectCause::Timeout,
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
            | std::io::ErrorKind::AddrNotAvailable => ConnectCause::Unreachable,
            _ => ConnectCause::Other,
        },
        sqlx::Error::Tls(_) => ConnectCause::Tls,
        sqlx::Error::Configuration(_) => ConnectCause::Config,
        sqlx::Error::PoolTimedOut => ConnectCause::Timeout,
        _ => ConnectCause::Other,
    }
}

/// Whether `err` means the connection itself is gone (so a fresh connection may succeed), as
/// opposed to the database rejecting the statement. `lost_db` knows the backend's codes.
pub(crate) fn is_connection_lost(
    err: &sqlx::Error,
    lost_db: fn(&dyn sqlx::error::DatabaseError) -> bool,
) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLSTATE class 08: connection exception (all backends).
            db.code().is_some_and(|c| c.starts_with("08")) || lost_db(&**db)
        }
        _ => false,
    }
}
