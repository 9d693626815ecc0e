//! The runtime of connscope: scopes, sessions, caches that release each value exactly once,
//! and self-healing connections. Use it through the `connscope` facade crate.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod conn;
mod credentials;
mod error;
mod form;
mod login;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod named;
mod provider;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod resource;
mod runtime;
mod scope;
mod secrets;
mod session;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))))]
pub mod sql;
mod stats;
mod watch;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod web;

#[doc(hidden)]
pub mod macro_support;

pub use cache::{BoxFuture, CacheConfig, HookError, LoadError, Refresh, ReleaseHook, ResourceCache};
pub use conn::{Conn, ConnCounters, ConnId, ConnRef, RunError};
pub use credentials::{CredentialSource, Credentials, CredentialsError, Fetched};
pub use error::{Error, ReleaseFailure, ReleaseReport, SharedError};
pub use form::{FieldError, FieldProblem, FormError, FormValue, FormValues};
pub use named::ConnectSettings;
pub use provider::{Connection, FieldKind, FormField, HealthCheck, Provider, Renewal};
#[cfg(feature = "redis")]
pub use redis::{RedisSettings, SharedSpec};
pub use resource::{ReleaseFn, Resource};
pub use runtime::{
    DEFAULT_GRACE_PERIOD, DEFAULT_HOOK_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAINTENANCE_INTERVAL,
    DEFAULT_SESSION_LIFETIME, Runtime, RuntimeBuilder,
};
pub use scope::{GlobalScope, Scope, ScopeKind, SessionScope};
pub use secrets::{ENV_PREFIX, SECRETS_FILE_VAR, Secret};
pub use session::{Session, SessionId};
pub use stats::{CacheStats, CacheStatsEntry, RemovalCause, StatsSnapshot};
pub use watch::{DEFAULT_SECRETS_POLL_INTERVAL, FileStamp};

/// What generated code names (`crate = "crate"` inside this crate; the facade's `__private`
/// re-exports the same). Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::*;
    pub use core;
    pub use serde;
    pub use std;
    pub use toml;
}
