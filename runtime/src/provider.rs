//! The provider contract (`connect`, `is_open`, optional `close`) and the `Connection` trait the
//! derive implements (scope, ttl, max_entries, name, health-check policy).

use std::future::Future;
use std::time::Duration;

use crate::form::{FormError, FormValues};
use crate::scope::{Scope, ScopeKind};

/// What a provider author implements by hand: how to open a live client and how to tell
/// whether it is still open.
///
/// ```
/// use connscope::Provider;
///
/// struct Echo { greeting: String }
///
/// impl Provider for Echo {
///     type Raw = String;
///     type Error = std::io::Error;
///     async fn connect(&self) -> Result<String, std::io::Error> { Ok(self.greeting.clone()) }
///     async fn is_open(&self, _raw: &String) -> bool { true }
/// }
/// ```
pub trait Provider: Send + Sync + 'static {
    /// The live client: a pool, a connection, an HTTP client…
    type Raw: Send + Sync + 'static;
    /// The provider's own error type; connscope keeps it intact inside [`Error::Connect`](crate::Error).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a live client from the settings in `self`.
    fn connect(&self) -> impl Future<Output = Result<Self::Raw, Self::Error>> + Send;

    /// Tells whether `raw` can still be used. Called according to the [`HealthCheck`] policy.
    fn is_open(&self, raw: &Self::Raw) -> impl Future<Output = bool> + Send;

    /// Closes `raw` gracefully. Called exactly once per live client, after its last user let go
    /// (or after the grace period). The default does nothing and lets `Drop` clean up.
    fn close(&self, raw: &Self::Raw) -> impl Future<Output = ()> + Send {
        let _ = raw;
        async {}
    }

    /// Whether `err`, returned by an operation on a live client, means the client itself is
    /// gone (a dropped socket, a terminated backend) rather than the operation being refused.
    /// [`Conn::run`](crate::Conn::run) then replaces the client and runs the operation once
    /// more on a fresh one. The default says no: only a failure after which `is_open` reports
    /// the client closed is then retried.
    ///
    /// Say yes only where running the operation again is safe: for a write, only when the
    /// error shows the request was never sent.
    ///
    /// ```
    /// use connscope::Provider;
    ///
    /// struct Upstream;
    /// impl Provider for Upstream {
    ///     type Raw = ();
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    ///     async fn is_open(&self, _: &()) -> bool { true }
    ///     fn is_lost(&self, err: &std::io::Error) -> bool {
    ///         use std::io::ErrorKind::*;
    ///         matches!(err.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected)
    ///     }
    /// }
    /// ```
    fn is_lost(&self, err: &Self::Error) -> bool {
        let _ = err;
        false
    }

    /// When `raw` stops working because its credentials expire (a token's lifetime, a
    /// Vault lease). A connection that can reconnect renews such a client ahead of that
    /// instant (by 10% of its lifetime, at most one minute): in place when
    /// [`Provider::renew`] can, else by a rebuild (the replacement connects first, is swapped
    /// in, in-flight users finish on the old client, which is then closed once).
    /// The default: never.
    fn expires_at(&self, raw: &Self::Raw) -> Option<tokio::time::Instant> {
        let _ = raw;
        None
    }

    /// Opens the client that replaces `old` in a rebuild (ahead of its credentials' expiry, at
    /// the end of a refresh period, or when its credentials file changed), while `old` still
    /// serves its users. The default: [`Provider::connect`]. connscope's SQL providers open the
    /// replacement pool to as many connections as `old` has open.
    fn replace(&self, old: &Self::Raw) -> impl Future<Output = Result<Self::Raw, Self::Error>> + Send {
        let _ = old;
        self.connect()
    }

    /// Gives `raw` fresh credentials in place, ahead of their expiry, when the provider can:
    /// the client keeps its open connections (a database server checks credentials when a
    /// connection is opened, not afterwards) and opens later ones with the fresh credentials.
    /// Returns [`Renewal::InPlace`] with their expiry, or [`Renewal::Rebuild`] when the client
    /// must be replaced instead (the default; for connscope's SQL providers, when the user name
    /// changed, as with Vault's dynamic secrets). An error is handled like a failed rebuild:
    /// the client is kept and the renewal retried with backoff.
    ///
    /// ```
    /// use connscope::{Provider, Renewal};
    /// use std::sync::Mutex;
    /// use tokio::time::{Duration, Instant};
    ///
    /// /// An HTTP client whose bearer token is swapped in place.
    /// struct Api;
    /// struct Client { token: Mutex<String>, expires_at: Mutex<Instant> }
    ///
    /// impl Provider for Api {
    ///     type Raw = Client;
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<Client, std::io::Error> {
    ///         let expires_at = Instant::now() + Duration::from_secs(900);
    ///         Ok(Client { token: Mutex::new("t1".into()), expires_at: Mutex::new(expires_at) })
    ///     }
    ///     async fn is_open(&self, _: &Client) -> bool { true }
    ///     fn expires_at(&self, raw: &Client) -> Option<Instant> {
    ///         Some(*raw.expires_at.lock().unwrap())
    ///     }
    ///     async fn renew(&self, raw: &Client) -> Result<Renewal, std::io::Error> {
    ///         let expires_at = Instant::now() + Duration::from_secs(900);
    ///         *raw.token.lock().unwrap() = "t2".into();
    ///         *raw.expires_at.lock().unwrap() = expires_at;
    ///         Ok(Renewal::InPlace(Some(expires_at)))
    ///     }
    /// }
    /// ```
    fn renew(&self, raw: &Self::Raw) -> impl Future<Output = Result<Renewal, Self::Error>> + Send {
        let _ = raw;
        async { Ok(Renewal::Rebuild) }
    }

    /// The file `raw`'s credentials were read from, as it was then (a
    /// [`CredentialSource::file`](crate::CredentialSource::file), e.g. a Kubernetes-mounted
    /// secret). A connection that can reconnect polls it (every
    /// [`RuntimeBuilder::secrets_poll_interval`](crate::RuntimeBuilder::secrets_poll_interval),
    /// 1 s by default) and, when it changed, renews the client's credentials the way they are
    /// renewed ahead of expiry: [`renew`](Self::renew) first (which re-reads the file and
    /// stamps it anew), else a rebuild. The default: none.
    fn watched_file(&self, raw: &Self::Raw) -> Option<crate::FileStamp> {
        let _ = raw;
        None
    }
}

/// What [`Provider::renew`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The client has fresh credentials, expiring then (`None`: never); it is renewed again
    /// ahead of that.
    InPlace(Option<tokio::time::Instant>),
    /// The client cannot be renewed in place: it is rebuilt (connected anew and swapped in).
    Rebuild,
}

/// How often [`Provider::is_open`] runs before a live client is handed out.
///
/// Health checks cost a round trip on most backends, so this is a policy. The default is
/// [`HealthCheck::Interval`] of 5 seconds: a client is checked when it was last checked more
/// than 5 seconds ago, and always after a user reported an error with
/// [`ConnRef::report_broken`](crate::ConnRef::report_broken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// Check before every use.
    EveryUse,
    /// Check at most once per interval (and after a reported error).
    Interval(Duration),
    /// Check only after a user reported an error.
    OnError,
}

impl HealthCheck {
    /// The default policy: at most every 5 seconds, and after a reported error.
    pub const DEFAULT: HealthCheck = HealthCheck::Interval(Duration::from_secs(5));
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One field of a provider's login form (derived from the settings struct).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormField {
    /// The struct field's name, also the form input's name.
    pub name: &'static str,
    /// The human label.
    pub label: &'static str,
    /// Text or password input.
    pub kind: FieldKind,
    /// The default value shown in the form, if any.
    pub default: Option<&'static str>,
    /// Whether the form must supply it.
    pub required: bool,
}

/// The kind of input a login-form field needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A plain text input.
    Text,
    /// A password input: the value is a [`Secret`](crate::Secret).
    Password,
}

/// The caching policy of a provider type; `#[derive(Connection)]` implements it from
/// `#[connection(scope = "...", ttl = "...", max_entries = N, name = "...")]`.
pub trait Connection: Provider {
    /// `GlobalScope` or `SessionScope`: the scope, as a type, for compile-time checks.
    type Scope: ScopeKind;
    /// The default connection name (the `[connections.<name>]` section).
    const NAME: &'static str;
    /// How long a cached connection lives before it is closed and released (`None`: forever).
    const TTL: Option<Duration> = None;
    /// How many connections of this type a scope keeps (least recently used goes first).
    const MAX_ENTRIES: Option<u64> = None;
    /// How long a live client is used before it is rebuilt (`None`: only ahead of its
    /// credentials' expiry, [`Provider::expires_at`]). `#[connection(refresh = "14m")]`: a
    /// connection the runtime hands out replaces its client every 14 minutes, the way a client
    /// is rebuilt ahead of expiry (the replacement connects first, in-flight users finish on the
    /// old one, which is then closed once).
    const REFRESH: Option<Duration> = None;
    /// When `is_open` runs.
    const HEALTH_CHECK: HealthCheck = HealthCheck::DEFAULT;
    /// The login-form description of the settings fields.
    const FORM: &'static [FormField] = &[];

    /// The scope as a value.
    fn scope() -> Scope {
        <Self::Scope as ScopeKind>::SCOPE
    }

    /// Builds the settings from a submitted login form (see [`FORM`](Self::FORM)), naming every
    /// missing or malformed field. `#[derive(Connection)]` implements it; the default says the
    /// provider has no login form.
    fn from_form(values: &FormValues) -> Result<Self, FormError>
    where
        Self: Sized,
    {
        let _ = values;
        Err(FormError::NoForm { provider: std::any::type_name::<Self>() })
    }

    /// Wipes the secret fields (zeroized) once a login connection is open, so a user's
    /// credentials do not outlive the connect. `#[derive(Connection)]` implements it for
    /// `#[connection(secret)]` fields; the default wipes nothing.
    fn forget_secrets(&mut self) {}
}
