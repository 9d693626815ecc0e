//! connscope's own error type: what went wrong and what to do next.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::scope::SessionId;

/// A boxed, shareable error from a provider or a release hook.
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// connscope's error. Cheap to clone (sources are shared), so one failed load can be reported to
/// every caller that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session-scoped resource was used outside [`Session::run`](crate::Session::run).
    #[error(
        "no active session: `{what}` is session-scoped; call it inside `Session::run` \
         (or `Runtime::session().run(...)`)"
    )]
    NoActiveSession {
        /// What needed the session (a cached function or a connection name).
        what: String,
    },
    /// The session was ended (explicitly, by idle timeout or by shutdown).
    #[error("session {id} has ended; start a new session with `Runtime::session()`")]
    SessionEnded {
        /// The ended session.
        id: SessionId,
    },
    /// The runtime was shut down.
    #[error("the connscope runtime has been shut down; build a new `Runtime`")]
    RuntimeShutDown,
    /// The session has no live connection for this name: log in (again).
    #[error("login required for connection `{connection}`: {reason}")]
    LoginRequired {
        /// The connection name.
        connection: String,
        /// Why: never logged in, logged out, or the connection was found closed.
        reason: &'static str,
    },
    /// Configuration could not be read or does not fit the provider.
    #[error("configuration error in {file} [{section}]: {message}")]
    Config {
        /// The secrets file consulted (or `<code>` / `<env>`).
        file: PathBuf,
        /// The section, e.g. `connections.warehouse`.
        section: String,
        /// What is wrong, naming the field where there is one.
        message: String,
    },
    /// The provider's `connect` failed.
    #[error("could not connect `{connection}`: {source}")]
    Connect {
        /// The connection name.
        connection: String,
        /// The provider's own error, untouched.
        source: SharedError,
    },
    /// Another caller's load of the same key failed; this caller waited for it.
    #[error("loading `{resource}` failed in a concurrent call: {source}")]
    SharedLoadFailed {
        /// The cached resource.
        resource: String,
        /// The loader's error as the first caller saw it.
        source: SharedError,
    },
}

impl Error {
    /// Wraps a provider's connect error.
    pub fn connect(connection: impl Into<String>, source: impl StdError + Send + Sync + 'static) -> Self {
        Error::Connect { connection: connection.into(), source: Arc::new(source) }
    }
}

/// Why a release hook did not complete normally.
#[derive(Clone, Debug)]
pub struct ReleaseFailure {
    /// The cache the value came from.
    pub resource: Arc<str>,
    /// What happened: the hook's error, or its panic message.
    pub message: String,
    /// Whether the hook panicked (rather than returning an error).
    pub panicked: bool,
}

impl fmt::Display for ReleaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked { "panicked" } else { "failed" };
        write!(f, "release hook of `{}` {how}: {}", self.resource, self.message)
    }
}

impl StdError for ReleaseFailure {}

/// The outcome of releasing several values at once (clear, session end, shutdown).
///
/// Every value was removed and every hook ran, whatever the others did; `failures` lists the
/// hooks that returned an error or panicked.
///
/// Ignoring it is fine (`session.end().await;`): every failed hook is also logged as a
/// `tracing` warning and counted in the cache's `release_failures`.
#[derive(Clone, Debug, Default)]
pub struct ReleaseReport {
    /// How many values were released.
    pub released: usize,
    /// Hooks that failed or panicked.
    pub failures: Vec<ReleaseFailure>,
}

impl ReleaseReport {
    /// True when every hook completed normally.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Adds another report into this one.
    pub fn merge(&mut self, other: ReleaseReport) {
        self.released += other.released;
        self.failures.extend(other.failures);
    }
}
