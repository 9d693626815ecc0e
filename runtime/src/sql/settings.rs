//! The two SQL providers' settings: [`SqlDb`] (a global pool from a URL) and [`SqlLogin`] (a
//! session-scoped pool with a user's own credentials) and their defaults. Their `Connection`
//! impls come from `#[derive(Connection)]`, as an outside provider author's would.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::backend::Backend;
use super::client::Counters;
use super::redact::redact_url;
use crate::credentials::CredentialSource;
use crate::provider::Connection;
use crate::secrets::Secret;
use connscope_macros::Connection;

/// Pool and cache settings of a SQL connection, resolved (durations of zero mean "never").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections the pool keeps open even when idle.
    pub min_connections: u32,
    /// How long opening a connection, or waiting for a pooled one, may take.
    pub connect_timeout: Duration,
    /// How long the health check (`is_open`) may take before the pool counts as not open.
    pub health_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long (`None`: never).
    pub max_lifetime: Option<Duration>,
    /// A pooled connection idle for at least this long is pinged before use (zero: always).
    pub check_idle_after: Duration,
    /// The ttl of a cached query that does not set its own.
    pub query_ttl: Duration,
    /// Most cached query results per scope and ttl range (ttls within one power of two of
    /// milliseconds share a cache).
    pub query_cache_entries: u64,
    /// How long a statement may run (`None`: no limit).
    pub statement_timeout: Option<Duration>,
}

/// Per-instance state of a SQL provider: its identity and counters. Not settings: never
/// deserialized, never in the login form.
#[doc(hidden)]
pub struct SqlState {
    pub(crate) instance: u64,
    pub(crate) identity: OnceLock<u64>,
    pub(crate) counters: Arc<Counters>,
}

impl Default for SqlState {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SqlState {
            instance: NEXT.fetch_add(1, Ordering::Relaxed),
            identity: OnceLock::new(),
            counters: Arc::default(),
        }
    }
}

/// A provider whose live client is a [`SqlClient`](super::SqlClient): [`SqlDb`] and
/// [`SqlLogin`]. `Conn<P>` of such a provider has the `query` / `execute` API.
pub trait SqlProvider: Connection<Raw = super::SqlClient<Self::Db>, Error = super::ConnectError> {
    /// The database backend.
    type Db: Backend;
    /// The connection URL.
    fn url(&self) -> &str;
    /// The user, over the URL's.
    fn user(&self) -> Option<&str>;
    /// The password, over the URL's.
    fn password(&self) -> Option<&Secret>;
    /// Pool and cache settings.
    fn pool_settings(&self) -> PoolSettings;
    /// Identity and counters of this instance.
    #[doc(hidden)]
    fn state(&self) -> &SqlState;
    /// Where fresh credentials come from for every pool and ahead of every expiry, if anywhere
    /// (they win over `user` and `password`).
    fn credentials(&self) -> Option<CredentialSource> {
        None
    }
    /// How long credentials work when their source gives no expiry (`None`: until rotated
    /// out of band, never rebuilt).
    fn credentials_lifetime(&self) -> Option<Duration> {
        None
    }
}

mod defaults {
    use std::time::Duration;
    pub fn max_connections() -> u32 {
        10
    }
    pub fn session_max_connections() -> u32 {
        2
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn check_idle_after() -> Duration {
        Duration::from_secs(1)
    }
    pub fn query_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn query_cache_entries() -> u64 {
        10_000
    }
}

/// A duration in settings: `"5s"`, `"10m"`, `"250ms"` (humantime) or a number of seconds.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration ({e}); write e.g. \"5s\" or \"10m\""
                ))
            }),
        }
    }
}

fn never_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Declares a SQL provider struct: shared fields, defaults, `Debug` without secrets, and the
/// `SqlProvider` accessors. `$max` names the default pool size's function, once for serde (a
/// string) and once for `with_defaults`.
macro_rules! sql_provider {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $( $(#[$fmeta:meta])* pub $field:ident : $fty:ty, )* }
        max_connections = $max:literal ($max_fn:path);
        user = |$s:ident| $user:expr;
        password = |$p:ident| $password:expr;
    ) => {
        #[derive(Connection, serde::Deserialize)]
        $(#[$meta])*
        #[serde(bound = "", deny_unknown_fields)]
        pub struct $name<DB: Backend> {
            $( $(#[$fmeta])* pub $field: $fty, )*
            /// Most connections the pool opens.
            #[connection(fixed)]
            #[serde(default = $max)]
            pub max_connections: u32,
            /// Connections kept open even when idle (default 0).
            #[connection(fixed)]
            #[serde(default)]
            pub min_connections: u32,
            /// How long opening a connection, or waiting for a pooled one, may take (default 5 s).
            #[connection(fixed)]
            #[serde(default = "defaults::connect_timeout", with = "duration")]
            pub connect_timeout: Duration,
            /// How long the health check may take before the pool counts as not open (default 2 s).
            #[connection(fixed)]
            #[serde(default = "defaults::health_timeout", with = "duration")]
            pub health_timeout: Duration,
            /// Idle connections above `min_connections` close after this long (default 10 min; 0: never).
            #[connection(fixed)]
            #[serde(default = "defaults::idle_timeout", with = "duration")]
            pub idle_timeout: Duration,
            /// Connections are replaced after this long (default 30 min; 0: never).
            #[connection(fixed)]
            #[serde(default = "defaults::max_lifetime", with = "duration")]
            pub max_lifetime: Duration,
            /// A pooled connection idle this long is pinged before use (default 1 s; 0: always).
            #[connection(fixed)]
            #[serde(default = "defaults::check_idle_after", with = "duration")]
            pub check_idle_after: Duration,
            /// The ttl of a cached query that sets none (default 60 s).
            #[connection(fixed)]
            #[serde(default = "defaults::query_ttl", with = "duration")]
            pub query_ttl: Duration,
            /// Most cached query results per scope and ttl range (ttls within one power of two of
            /// milliseconds share a cache; default 10 000).
            #[connection(fixed)]
            #[serde(default = "defaults::query_cache_entries")]
            pub query_cache_entries: u64,
            /// A statement still running after this long fails with
            /// [`SqlError::StatementTimeout`](super::SqlError::StatementTimeout) and its
            /// connection is closed (default 0: no limit). Client-side: it also ends a statement
            /// stuck on a half-open socket.
            #[connection(fixed)]
            #[serde(default, with = "duration")]
            pub statement_timeout: Duration,
            /// A command run (with `sh -c`) for every pool and renewal whose trimmed output is the
            /// password or token, e.g. `"vault read -field=password database/creds/app"`.
            #[connection(fixed)]
            #[serde(default)]
            pub password_command: Option<String>,
            /// A file whose trimmed content is the password (a Kubernetes-mounted secret),
            /// re-read for every pool; the pool is rebuilt when the file changes.
            #[connection(fixed)]
            #[serde(default)]
            pub password_file: Option<String>,
            /// An environment variable read for every pool and renewal for the password.
            #[connection(fixed)]
            #[serde(default)]
            pub password_env: Option<String>,
            /// How long fetched credentials work when their source says nothing (default 0:
            /// no expiry). A connection with expiring credentials is renewed ahead of expiry
            /// (by 10% of the lifetime, at most 1 min): in place for the same user, else
            /// rebuilt (the old pool drained and closed).
            #[connection(fixed)]
            #[serde(default, with = "duration")]
            pub credentials_lifetime: Duration,
            /// A credential source given in code ([`with_credentials`](Self::with_credentials)).
            #[serde(skip)]
            credentials: Option<CredentialSource>,
            // Runtime state, not settings: `#[serde(skip)]` keeps them out of config and the form.
            #[serde(skip)]
            state: SqlState,
            #[serde(skip)]
            _db: PhantomData<fn() -> DB>,
        }

        impl<DB: Backend> SqlProvider for $name<DB> {
            type Db = DB;
            fn url(&self) -> &str {
                &self.url
            }
            fn user(&self) -> Option<&str> {
                let $s = self;
                $user
            }
            fn password(&self) -> Option<&Secret> {
                let $p = self;
                $password
            }
            fn pool_settings(&self) -> PoolSettings {
                PoolSettings {
                    max_connections: self.max_connections.max(1),
                    min_connections: self.min_connections,
                    connect_timeout: self.connect_timeout,
                    health_timeout: self.health_timeout,
                    idle_timeout: never_if_zero(self.idle_timeout),
                    max_lifetime: never_if_zero(self.max_lifetime),
                    check_idle_after: self.check_idle_after,
                    query_ttl: self.query_ttl,
                    query_cache_entries: self.query_cache_entries.max(1),
                    statement_timeout: never_if_zero(self.statement_timeout),
                }
            }
            fn state(&self) -> &SqlState {
                &self.state
            }
            fn credentials(&self) -> Option<CredentialSource> {
                if let Some(c) = &self.credentials {
                    return Some(c.clone());
                }
                if let Some(c) = &self.password_command {
                    return Some(CredentialSource::command(c.clone()));
                }
                if let Some(f) = &self.password_file {
                    return Some(CredentialSource::file(f.clone()));
                }
                self.password_env.as_ref().map(|v| CredentialSource::env(v.clone()))
            }
            fn credentials_lifetime(&self) -> Option<Duration> {
                never_if_zero(self.credentials_lifetime)
            }
        }

        impl<DB: Backend> $name<DB> {
            /// Fetches credentials from `source` for every pool and ahead of every expiry, over `user` and `password`
            /// (and over `password_command`, `password_file`, `password_env`).
            pub fn with_credentials(mut self, source: impl Into<CredentialSource>) -> Self {
                self.credentials = Some(source.into());
                self
            }

            /// Declares that fetched credentials stop working `lifetime` after the fetch
            /// (when the source gives no expiry of its own): the connection is rebuilt ahead.
            pub fn with_credentials_lifetime(mut self, lifetime: Duration) -> Self {
                self.credentials_lifetime = lifetime;
                self
            }
        }

        impl<DB: Backend> $name<DB> {
            /// These settings, with every pool setting at its default.
            fn with_defaults($($field: $fty),*) -> Self {
                $name {
                    $($field,)*
                    max_connections: $max_fn(),
                    min_connections: 0,
                    connect_timeout: defaults::connect_timeout(),
                    health_timeout: defaults::health_timeout(),
                    idle_timeout: defaults::idle_timeout(),
                    max_lifetime: defaults::max_lifetime(),
                    check_idle_after: defaults::check_idle_after(),
                    query_ttl: defaults::query_ttl(),
                    query_cache_entries: defaults::query_cache_entries(),
                    statement_timeout: Duration::ZERO,
                    password_command: None,
                    password_file: None,
                    password_env: None,
                    credentials_lifetime: Duration::ZERO,
                    credentials: None,
                    state: SqlState::default(),
                    _db: PhantomData,
                }
            }
        }

        /// The settings (the password as a digest keyed per process, see [`Secret`]'s `Hash`),
        /// never the instance's state: what [`Runtime::connect`](crate::Runtime::connect) keys
        /// a connection by.
        impl<DB: Backend> std::hash::Hash for $name<DB> {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                DB::KIND.hash(h);
                $( self.$field.hash(h); )*
                self.pool_settings().hash(h);
                self.credentials().hash(h);
                self.credentials_lifetime.hash(h);
            }
        }

        impl<DB: Backend> fmt::Debug for $name<DB> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("backend", &DB::KIND)
                    .field("url", &redact_url(&self.url))
                    .field("user", &SqlProvider::user(self))
                    .field("password", &SqlProvider::password(self).map(|_| "***"))
                    .field("pool", &self.pool_settings())
                    .field("credentials", &SqlProvider::credentials(self))
                    .field("credentials_lifetime", &SqlProvider::credentials_lifetime(self))
                    .finish()
            }
        }
    };
}

sql_provider! {
    /// A global SQL connection: one pool shared by every user of the runtime, configured from
    /// `[connections.<name>]` (or in code with [`SqlDb::new`]).
    ///
    /// ```toml
    /// [connections.app]
    /// url = "sqlite::memory:"            # or postgres://…, mysql://…
    /// max_connections = 10               # optional; see the fields for all settings
    /// ```
    ///
    /// An in-memory SQLite URL (`sqlite::memory:`) is one database shared by the whole pool
    /// and kept alive as long as the connection is.
    #[connection(crate = "crate", scope = "global", name = "sql")]
    pub struct SqlDb {
        /// `sqlite::memory:`, `sqlite://app.db` (`?mode=rwc` creates a missing file),
        /// `postgres://user@host/db`, `mysql://…`.
        #[connection(fixed)]
        pub url: String,
        /// The user, over the URL's (optional).
        #[connection(fixed)]
        #[serde(default)]
        pub user: Option<String>,
        /// The password, over the URL's (optional; keep it out of `url` to keep it out of logs).
        #[connection(fixed)]
        #[serde(default)]
        pub password: Option<Secret>,
    }
    max_connections = "defaults::max_connections" (defaults::max_connections);
    user = |s| s.user.as_deref();
    password = |p| p.password.as_ref();
}

sql_provider! {
    /// A session-scoped SQL connection with one user's own credentials (each user connects as
    /// their own database role): a small pool per session, closed when the session ends.
    ///
    /// ```toml
    /// [connections.warehouse]
    /// url = "postgres://db.internal/analytics"   # no credentials here
    /// # user and password come from the user's login (or CONNSCOPE__WAREHOUSE__USER / __PASSWORD)
    /// ```
    ///
    /// Its login form (`connscope::web`) asks for `user` and `password`; `url` and the pool
    /// settings are fixed by the app from the section. The default name is `sql_login`; pick
    /// the section with `WebSessions::connection_name::<PostgresLogin>("warehouse")`.
    #[connection(crate = "crate", scope = "session", name = "sql_login")]
    pub struct SqlLogin {
        /// The server and database, without credentials (from config, not the login form).
        #[connection(fixed)]
        pub url: String,
        /// The user's database role.
        pub user: String,
        /// The user's password.
        #[connection(secret)]
        pub password: Secret,
    }
    max_connections = "defaults::session_max_connections" (defaults::session_max_connections);
    user = |s| Some(s.user.as_str());
    password = |p| Some(&p.password);
}

impl<DB: Backend> SqlDb<DB> {
    /// A global connection to `url` with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        SqlDb::with_defaults(url.into(), None, None)
    }
}

impl<DB: Backend> SqlLogin<DB> {
    /// A session connection to `url` as `user` with default settings.
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: impl Into<Secret>) -> Self {
        SqlLogin::with_defaults(url.into(), user.into(), password.into())
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod derived {
    use std::time::Duration;

    use sqlx::Sqlite;

    use super::{SqlDb, SqlLogin, SqlProvider};
    use crate::form::{FieldProblem, FormValues};
    use crate::provider::{Connection, FieldKind, FormField};
    use crate::scope::Scope;

    fn section(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_login_form_asks_for_credentials_only() {
        let field = |name, label, kind| FormField { name, label, kind, default: None, required: true };
        assert_eq!(
            SqlLogin::<Sqlite>::FORM,
            &[field("user", "User", FieldKind::Text), field("password", "Password", FieldKind::Password)]
        );
        assert_eq!((SqlLogin::<Sqlite>::NAME, SqlLogin::<Sqlite>::scope()), ("sql_login", Scope::Session));
        assert_eq!((SqlDb::<Sqlite>::NAME, SqlDb::<Sqlite>::scope()), ("sql", Scope::Global));
        assert!(SqlDb::<Sqlite>::FORM.is_empty(), "a global connection is configured, not logged in to");
    }

    #[test]
    fn a_login_reads_the_pool_settings_of_its_section() {
        let config =
            section("url = 'sqlite::memory:'\nmax_connections = 3\nconnect_timeout = '2s'\nidle_timeout = 0");
        let values = FormValues::submitted([("user", "ada"), ("password", "pw")]).fix_all(config.clone());
        let mut login = SqlLogin::<Sqlite>::from_form(&values).unwrap();
        let pool = login.pool_settings();
        assert_eq!((login.url(), login.user(), pool.max_connections), ("sqlite::memory:", Some("ada"), 3));
        assert_eq!((pool.connect_timeout, pool.idle_timeout), (Duration::from_secs(2), None));
        assert_eq!((pool.query_ttl, pool.health_timeout), (Duration::from_secs(60), Duration::from_secs(2)));
        login.forget_secrets();
        assert!(login.password.is_empty());

        // The config loader reads the same section the same way.
        let mut full = config;
        full.insert("user".into(), "ada".into());
        full.insert("password".into(), "pw".into());
        let loaded: SqlLogin<Sqlite> = full.try_into().unwrap();
        assert_eq!(loaded.pool_settings(), pool);
        assert_ne!(loaded.state().instance, login.state().instance, "each instance has its own state");
    }

    #[test]
    fn a_login_names_what_is_missing_or_malformed() {
        let values = FormValues::submitted([("user", "ada")]).fix_all(section("connect_timeout = 'soon'"));
        let err = SqlLogin::<Sqlite>::from_form(&values).err().unwrap();
        let problems: Vec<_> = err.fields().iter().map(|f| (f.name, f.problem.clone())).collect();
        assert_eq!(problems[0], ("url", FieldProblem::MissingFixed));
        assert_eq!(problems[1], ("password", FieldProblem::Missing));
        assert!(
            matches!(&problems[2], ("connect_timeout", FieldProblem::Invalid(why)) if why.contains("not a duration")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 3);
    }

    #[test]
    fn a_global_connection_builds_from_its_section() {
        let values =
            FormValues::new().fix_all(section("url = 'sqlite::memory:'\npassword = 'pw'\nquery_ttl = '5m'"));
        let db = SqlDb::<Sqlite>::from_form(&values).unwrap();
        assert_eq!((db.url(), db.user()), ("sqlite::memory:", None));
        assert_eq!(db.password().map(|p| p.expose()), Some("pw"));
        let mut expected = SqlDb::<Sqlite>::new("sqlite::memory:");
        expected.query_ttl = Duration::from_secs(300);
        assert_eq!(db.pool_settings(), expected.pool_settings(), "defaults as `SqlDb::new`'s");
    }
}
