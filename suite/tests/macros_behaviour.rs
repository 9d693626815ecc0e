//! The runtime's guarantees, checked again through the macros: derived providers and
//! `#[cached_resource]` functions. Time is paused (`start_paused`), so expiry is driven by
//! `tokio::time::advance`; hooks signal a counter the tests wait on, never a guessed sleep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use connscope::{
    Conn, Connection, Error, FieldKind, FieldProblem, FormError, FormField, FormValues, HealthCheck,
    Provider, Runtime, Scope, Secret, cached_resource,
};
use tokio::sync::Notify;

/// A counter a test can wait on.
struct Counter {
    n: AtomicUsize,
    changed: Notify,
}

impl Counter {
    const fn new() -> Self {
        Counter { n: AtomicUsize::new(0), changed: Notify::const_new() }
    }
    fn bump(&self) {
        self.n.fetch_add(1, SeqCst);
        self.changed.notify_waiters();
    }
    fn get(&self) -> usize {
        self.n.load(SeqCst)
    }
    /// Waits (on the paused clock, so instantly when it cannot happen) until the count is `n`.
    async fn reaches(&self, n: usize) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.get() >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(600), wait).await.is_ok()
    }
}

/// Checks a `ReleaseReport`: exactly `n` values released, every hook succeeded.
#[track_caller]
fn released(report: connscope::ReleaseReport, n: usize) {
    assert_eq!((report.released, report.is_ok()), (n, true), "{report:?}");
}

fn runtime() -> Runtime {
    Runtime::builder()
        .env_vars(Vec::<(String, String)>::new())
        .secrets_file("/nonexistent/secrets.toml")
        .build()
}

// ---------------------------------------------------------------------------------------------
// A derived provider
// ---------------------------------------------------------------------------------------------

/// What happened to the connections of each `tag` (tests use distinct tags).
static EVENTS: LazyLock<Mutex<HashMap<String, (usize, usize)>>> = LazyLock::new(Default::default);
static CLOSED: Counter = Counter::new();

fn events(tag: &str) -> (usize, usize) {
    EVENTS.lock().unwrap().get(tag).copied().unwrap_or_default()
}

/// Waits (on the paused clock) until the connections of `tag` were closed `n` times.
async fn closed(tag: &str, n: usize) -> bool {
    let wait = async {
        loop {
            let changed = CLOSED.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if events(tag).1 >= n {
                return;
            }
            changed.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait).await.is_ok()
}

/// A warehouse "client" that only records connects and closes.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", ttl = "30m", max_entries = 2, name = "wh", health_check = "every_use")]
struct Warehouse {
    tag: String,
    #[connection(default = 5432, label = "Port number")]
    port: u16,
    user: String,
    #[connection(secret)]
    password: Secret,
    #[connection(fixed, default = "main")]
    database: String,
    note: Option<String>,
    /// Any deserializable type can be fixed by the app (it is not typed into the form).
    #[connection(fixed)]
    replicas: Option<Vec<u8>>,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        EVENTS.lock().unwrap().entry(self.tag.clone()).or_default().0 += 1;
        Ok(format!("{}@{}:{}/{}", self.user, self.tag, self.port, self.database))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
    async fn close(&self, _raw: &String) {
        EVENTS.lock().unwrap().entry(self.tag.clone()).or_default().1 += 1;
        CLOSED.bump();
    }
}

/// A global provider with every default.
#[derive(Connection, serde::Deserialize)]
struct PriceFeed {
    currency: String,
}

impl Provider for PriceFeed {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.currency.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[test]
fn derive_sets_scope_name_and_policy() {
    assert_eq!(Warehouse::NAME, "wh");
    assert_eq!(Warehouse::scope(), Scope::Session);
    assert_eq!(Warehouse::TTL, Some(Duration::from_secs(30 * 60)));
    assert_eq!(Warehouse::MAX_ENTRIES, Some(2));
    assert_eq!(Warehouse::HEALTH_CHECK, HealthCheck::EveryUse);

    assert_eq!(PriceFeed::NAME, "price_feed");
    assert_eq!(PriceFeed::scope(), Scope::Global);
    assert_eq!(PriceFeed::TTL, None);
    assert_eq!(PriceFeed::MAX_ENTRIES, None);
    assert_eq!(PriceFeed::HEALTH_CHECK, HealthCheck::DEFAULT);
}

#[test]
fn derive_describes_the_login_form() {
    let field = |name, label, kind, default, required| FormField { name, label, kind, default, required };
    assert_eq!(
        Warehouse::FORM,
        &[
            field("tag", "Tag", FieldKind::Text, None, true),
            field("port", "Port number", FieldKind::Text, Some("5432"), false),
            field("user", "User", FieldKind::Text, None, true),
            field("password", "Password", FieldKind::Password, None, true),
            // `database` is fixed by the app: not in the form.
            field("note", "Note", FieldKind::Text, None, false),
        ]
    );
}

#[test]
fn from_form_builds_the_settings() {
    let values =
        FormValues::submitted([("tag", "t"), ("user", "ada"), ("password", "hunter2"), ("port", "")])
            .fix("database", "sales")
            .fix("replicas", vec![1, 2]);
    let w = Warehouse::from_form(&values).unwrap();
    assert_eq!((w.tag.as_str(), w.port, w.user.as_str()), ("t", 5432, "ada"));
    assert_eq!((w.password.expose(), w.database.as_str(), w.note), ("hunter2", "sales", None));
    assert_eq!(w.replicas, Some(vec![1, 2]));

    // A fixed field falls back to its default, and a user cannot override it by submitting it.
    let values =
        FormValues::submitted([("tag", "t"), ("user", "u"), ("password", "p"), ("database", "evil")]);
    let w = Warehouse::from_form(&values).unwrap();
    assert_eq!((w.database.as_str(), w.replicas), ("main", None));
}

#[test]
fn from_form_names_every_missing_or_malformed_field() {
    let values = FormValues::submitted([("tag", "t"), ("port", "fifty")]).fix("replicas", "three");
    let err = Warehouse::from_form(&values).err().unwrap();
    let problems: Vec<_> = err.fields().iter().map(|f| (f.name, f.problem.clone())).collect();
    assert_eq!(
        problems,
        vec![
            ("port", FieldProblem::Invalid("expected a whole number from 0 to 65535".into())),
            ("user", FieldProblem::Missing),
            ("password", FieldProblem::Missing),
            ("replicas", FieldProblem::Invalid("invalid type: string \"three\", expected a sequence".into())),
        ]
    );
    let text = err.to_string();
    assert!(text.contains("`user` (User) is required"), "{text}");
    assert!(!text.contains("fifty"), "values are never echoed: {text}");
    assert!(matches!(err, FormError::Fields { .. }));
}

/// Secrets of any supported shape, marked or typed.
#[derive(Connection, serde::Deserialize)]
struct ApiKey {
    region: String,
    #[connection(secret)]
    key: String,
    backup: Option<Secret>,
}

impl Provider for ApiKey {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    async fn is_open(&self, _raw: &()) -> bool {
        true
    }
}

#[test]
fn forget_secrets_wipes_secret_fields_only() {
    let values = FormValues::submitted([("region", "eu"), ("key", "k-123"), ("backup", "b-456")]);
    let mut k = ApiKey::from_form(&values).unwrap();
    assert_eq!(
        ApiKey::FORM.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [FieldKind::Text, FieldKind::Password, FieldKind::Password]
    );
    k.forget_secrets();
    assert_eq!((k.region.as_str(), k.key.as_str()), ("eu", ""));
    assert!(k.backup.as_ref().is_some_and(Secret::is_empty));
}

#[tokio::test(start_paused = true)]
async fn login_with_a_derived_provider_wipes_the_password() {
    let rt = runtime();
    let s = rt.session();
    let values = FormValues::submitted([("tag", "login"), ("user", "ada"), ("password", "pw")]);
    let conn = s.login("wh", Warehouse::from_form(&values).unwrap()).await.unwrap();
    assert!(conn.provider().password.is_empty(), "credentials wiped after connecting");
    assert_eq!(*conn.get().await.unwrap(), "ada@login:5432/main");
    released(s.end().await, 1);
    assert_eq!(events("login"), (1, 1), "closed once at session end");
    released(rt.shutdown().await, 0);
}

/// A runtime whose connection `name` has settings for `Warehouse` with this `tag`.
fn warehouse_runtime(tag: &str, name: &str) -> Runtime {
    Runtime::builder()
        .env_vars(Vec::<(String, String)>::new())
        .secrets_file("/nonexistent/secrets.toml")
        .connection_setting(name, "tag", tag)
        .connection_setting(name, "port", 1)
        .connection_setting(name, "user", "u")
        .connection_setting(name, "password", "p")
        .connection_setting(name, "database", "d")
        .build()
}

#[tokio::test(start_paused = true)]
async fn derived_session_connection_is_closed_once_at_session_end() {
    let rt = warehouse_runtime("end", "wh");
    let s = rt.session();
    let raw = s
        .run(async {
            let conn = rt.connection::<Warehouse>("wh").await.unwrap();
            let raw = conn.get().await.unwrap().clone();
            // Same session, same name: the same cached connection.
            let again = rt.connection::<Warehouse>("wh").await.unwrap();
            assert_eq!(again.get().await.unwrap().clone(), raw);
            raw
        })
        .await;
    assert_eq!(raw, "u@end:1/d");
    assert_eq!(events("end"), (1, 0));
    released(s.end().await, 1);
    assert_eq!(events("end"), (1, 1));
    released(rt.shutdown().await, 0);
    assert_eq!(events("end"), (1, 1), "closed exactly once");
}

#[tokio::test(start_paused = true)]
async fn derived_ttl_expires_the_connection_once() {
    let rt = warehouse_runtime("ttl", "wh");
    let s = rt.session();
    s.run(async {
        let conn = rt.connection::<Warehouse>("wh").await.unwrap();
        drop(conn.get().await.unwrap());
    })
    .await;
    tokio::time::advance(Duration::from_secs(30 * 60 + 1)).await;
    rt.run_maintenance().await;
    assert!(closed("ttl", 1).await, "the expired connection was never closed");
    released(rt.shutdown().await, 0);
    assert_eq!(events("ttl"), (1, 1), "closed exactly once");
}

#[tokio::test(start_paused = true)]
async fn derived_max_entries_evicts_the_least_recent_connection() {
    let mut b =
        Runtime::builder().env_vars(Vec::<(String, String)>::new()).secrets_file("/nonexistent/x.toml");
    for (name, tag) in [("a", "max-a"), ("b", "max-b"), ("c", "max-c")] {
        b = b
            .connection_setting(name, "tag", tag)
            .connection_setting(name, "port", 1)
            .connection_setting(name, "database", "d")
            .connection_setting(name, "user", "u")
            .connection_setting(name, "password", "p");
    }
    let rt = b.build();
    let s = rt.session();
    s.run(async {
        for name in ["a", "b", "c"] {
            let conn = rt.connection::<Warehouse>(name).await.unwrap();
            drop(conn.get().await.unwrap());
        }
    })
    .await;
    rt.run_maintenance().await;
    assert!(closed("max-a", 1).await, "`a` was never evicted");
    assert_eq!(events("max-a"), (1, 1));
    assert_eq!(events("max-c"), (1, 0));
    released(rt.shutdown().await, 2);
    for tag in ["max-a", "max-b", "max-c"] {
        assert_eq!(events(tag), (1, 1), "{tag} closed exactly once");
    }
}

// ---------------------------------------------------------------------------------------------
// Cached functions
// ---------------------------------------------------------------------------------------------

/// An error type for cached functions: anything connscope reports, or our own failure.
#[derive(Debug)]
enum AppError {
    Connscope(Error),
    Flaky,
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Connscope(e)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Connscope(e) => write!(f, "{e}"),
            AppError::Flaky => f.write_str("flaky"),
        }
    }
}

static TTL_LOADS: Counter = Counter::new();
static TTL_RELEASES: Counter = Counter::new();

async fn release_ttl(_v: Arc<String>) {
    TTL_RELEASES.bump();
}

#[cached_resource(ttl = "10s", on_release = release_ttl)]
async fn ttl_fn(n: u32) -> Result<Arc<String>, AppError> {
    TTL_LOADS.bump();
    Ok(Arc::new(format!("v{n}")))
}

#[tokio::test(start_paused = true)]
async fn ttl_expiry_releases_exactly_once() {
    let rt = runtime();
    let s = rt.session();
    assert_eq!(*s.run(ttl_fn(1)).await.unwrap(), "v1");
    assert_eq!(*s.run(ttl_fn(1)).await.unwrap(), "v1");
    assert_eq!(TTL_LOADS.get(), 1);

    tokio::time::advance(Duration::from_secs(11)).await;
    rt.run_maintenance().await;
    assert!(TTL_RELEASES.reaches(1).await, "expired value never released");

    // The next call loads again.
    assert_eq!(*s.run(ttl_fn(1)).await.unwrap(), "v1");
    assert_eq!(TTL_LOADS.get(), 2);
    released(rt.shutdown().await, 1);
    assert_eq!(TTL_RELEASES.get(), 2, "each value released exactly once");
}

static LRU_RELEASES: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static LRU_RELEASED: Counter = Counter::new();

async fn release_lru(v: u32) -> Result<(), std::io::Error> {
    LRU_RELEASES.lock().unwrap().push(v);
    LRU_RELEASED.bump();
    Ok(())
}

#[cached_resource(max_entries = 2, on_release = release_lru)]
async fn lru_fn(n: u32) -> u32 {
    n
}

#[tokio::test(start_paused = true)]
async fn max_entries_evicts_the_least_recently_used_once() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        lru_fn(1).await;
        lru_fn(2).await;
        lru_fn::resource().cache().unwrap().len().await; // let the cache apply the writes
        lru_fn(1).await; // 1 is now more recent than 2
        lru_fn(3).await;
    })
    .await;
    rt.run_maintenance().await;
    assert!(LRU_RELEASED.reaches(1).await, "nothing evicted");
    assert_eq!(*LRU_RELEASES.lock().unwrap(), vec![2]);
    let stats = s.run(async { lru_fn::stats() }).await;
    assert_eq!(stats.evicted_size, 1);
    released(rt.shutdown().await, 2);
    let mut all = LRU_RELEASES.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(all, vec![1, 2, 3], "each value released exactly once");
}

static INV_LOADS: Counter = Counter::new();
static INV_RELEASES: Counter = Counter::new();

async fn release_inv(_v: String) {
    INV_RELEASES.bump();
}

/// Borrowed arguments are keyed by an owned copy; `_tag` is not part of the key.
#[cached_resource(on_release = release_inv)]
async fn greeting(region: &str, times: u8, _tag: &str) -> Result<String, Error> {
    INV_LOADS.bump();
    Ok(format!("{region}{}", "!".repeat(times.into())))
}

#[tokio::test(start_paused = true)]
async fn invalidate_and_clear_release_once() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        assert_eq!(greeting("emea", 1, "a").await.unwrap(), "emea!");
        assert_eq!(greeting("emea", 1, "b").await.unwrap(), "emea!", "`_tag` is not in the key");
        assert_eq!(INV_LOADS.get(), 1);
        assert_eq!(greeting("apac", 2, "a").await.unwrap(), "apac!!");
        assert_eq!(INV_LOADS.get(), 2);

        assert!(greeting::invalidate("emea", 1).await);
        assert_eq!(INV_RELEASES.get(), 1, "invalidate awaits the hook");
        assert!(!greeting::invalidate("emea", 1).await, "already gone");
        assert_eq!(greeting("emea", 1, "a").await.unwrap(), "emea!");
        assert_eq!(INV_LOADS.get(), 3);

        let report = greeting::clear().await;
        assert_eq!(report.released, 2);
        assert!(report.is_ok());
        assert_eq!(INV_RELEASES.get(), 3);
        let stats = greeting::stats();
        assert_eq!((stats.loads, stats.hits), (3, 1));
    })
    .await;
    released(rt.shutdown().await, 0);
    assert_eq!(INV_RELEASES.get(), 3, "nothing released twice");
}

static SESSION_LOADS: Counter = Counter::new();
static SESSION_RELEASES: Counter = Counter::new();

async fn release_session(_v: Arc<u64>) {
    SESSION_RELEASES.bump();
}

#[cached_resource(scope = "session", on_release = release_session)]
async fn per_user(key: u64) -> Result<Arc<u64>, AppError> {
    SESSION_LOADS.bump();
    Ok(Arc::new(key * 10))
}

#[tokio::test(start_paused = true)]
async fn sessions_are_isolated_and_release_their_own_values() {
    let rt = runtime();
    let (a, b) = (rt.session(), rt.session());
    assert_eq!(*a.run(per_user(1)).await.unwrap(), 10);
    assert_eq!(*b.run(per_user(1)).await.unwrap(), 10);
    assert_eq!(SESSION_LOADS.get(), 2, "two sessions, same key: two loads");
    assert_eq!(*a.run(per_user(1)).await.unwrap(), 10);
    assert_eq!(SESSION_LOADS.get(), 2);

    let report = a.end().await;
    assert_eq!(report.released, 1);
    assert_eq!(SESSION_RELEASES.get(), 1, "ending a releases only a's value");
    assert_eq!(*b.run(per_user(1)).await.unwrap(), 10);
    assert_eq!(SESSION_LOADS.get(), 2, "b's value survived");

    // Outside any session, a session-scoped function reports it through its error type.
    match per_user(1).await {
        Err(AppError::Connscope(Error::NoActiveSession { what })) => {
            assert!(what.ends_with("per_user"), "{what}")
        }
        other => panic!("expected NoActiveSession, got {other:?}"),
    }
    // In an ended session too.
    assert!(matches!(a.run(per_user(1)).await, Err(AppError::Connscope(Error::SessionEnded { .. }))));

    released(b.end().await, 1);
    assert_eq!(SESSION_RELEASES.get(), 2);
    released(rt.shutdown().await, 0);
    assert_eq!(SESSION_RELEASES.get(), 2, "released exactly once");
}

static FLIGHT_LOADS: Counter = Counter::new();

#[cached_resource]
async fn slow_square(n: u64) -> Result<u64, Error> {
    FLIGHT_LOADS.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(n * n)
}

#[tokio::test(start_paused = true)]
async fn single_flight_runs_the_body_once_for_64_callers() {
    let rt = runtime();
    let s = rt.session();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let s = s.clone();
        set.spawn(async move { s.run(slow_square(12)).await });
    }
    let results = set.join_all().await;
    assert_eq!(results.len(), 64);
    assert!(results.iter().all(|r| matches!(r, Ok(144))));
    assert_eq!(FLIGHT_LOADS.get(), 1);
    released(rt.shutdown().await, 1);
}

static FLAKY_LOADS: Counter = Counter::new();

#[cached_resource(scope = "session")]
async fn flaky(n: u32) -> Result<u32, AppError> {
    // `?` converts into the function's error type, as in any async fn.
    let one: u32 = Ok::<u32, Error>(1)?;
    if one != 1 {
        return Ok(0);
    }
    FLAKY_LOADS.bump();
    if FLAKY_LOADS.get() == 1 {
        return Err(AppError::Flaky);
    }
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        assert!(matches!(flaky(5).await, Err(AppError::Flaky)), "the failing caller gets its own error");
        assert_eq!(flaky(5).await.unwrap(), 5, "the error was not cached");
        assert_eq!(flaky(5).await.unwrap(), 5);
        assert_eq!(FLAKY_LOADS.get(), 2);
        let stats = flaky::stats();
        assert_eq!((stats.loads, stats.load_failures, stats.hits), (2, 1, 1));
    })
    .await;
    released(rt.shutdown().await, 1);
}

static CONN_LOADS: Counter = Counter::new();

/// A global function may take a global provider's connection; `_conn` is not in the key.
#[cached_resource(scope = "global", ttl = "1m")]
async fn quote(_conn: &Conn<PriceFeed>, product: String) -> Result<Arc<String>, Error> {
    CONN_LOADS.bump();
    let currency = _conn.get().await?;
    Ok(Arc::new(format!("{product}: 1.00 {}", &*currency)))
}

/// A session function may take a session provider's connection.
#[cached_resource(scope = "session")]
async fn warehouse_user(_conn: &Conn<Warehouse>, _n: u8) -> Result<String, Error> {
    Ok("u".into())
}

#[tokio::test(start_paused = true)]
async fn connections_are_arguments_not_keys() {
    let rt = Runtime::builder()
        .env_vars(Vec::<(String, String)>::new())
        .secrets_file("/nonexistent/secrets.toml")
        .connection_setting("eur", "currency", "EUR")
        .connection_setting("usd", "currency", "USD")
        .build();
    let s = rt.session();
    s.run(async {
        let eur = rt.connection::<PriceFeed>("eur").await.unwrap();
        let usd = rt.connection::<PriceFeed>("usd").await.unwrap();
        assert_eq!(*quote(&eur, "tea".into()).await.unwrap(), "tea: 1.00 EUR");
        assert_eq!(*quote(&usd, "tea".into()).await.unwrap(), "tea: 1.00 EUR", "cached by product only");
        assert_eq!(CONN_LOADS.get(), 1);
        assert_eq!(quote::stats().hits, 1);
        assert_eq!(quote::resource().scope(), Scope::Global);
    })
    .await;
    released(rt.shutdown().await, 3);
}

/// Destructured and `mut` arguments, unit return, and a companion visible from a parent module.
mod nested {
    use connscope::cached_resource;

    #[cached_resource]
    pub(crate) async fn sum((a, b): (u32, u32), mut scale: u32) -> u32 {
        scale += 0;
        (a + b) * scale
    }

    #[cached_resource(crate = "::connscope")]
    pub(super) async fn unit(_n: u8) {}
}

#[tokio::test(start_paused = true)]
async fn patterns_and_visibility() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        assert_eq!(nested::sum((1, 2), 3).await, 9);
        assert_eq!(nested::sum((1, 2), 3).await, 9);
        assert_eq!(nested::sum::stats().loads, 1);
        assert!(nested::sum::invalidate((1, 2), 3).await);
        nested::unit(1).await;
        nested::unit(2).await;
        assert_eq!(nested::unit::stats().loads, 1, "`_n` is not in the key");
        released(nested::unit::clear().await, 1);
    })
    .await;
    released(rt.shutdown().await, 0);
}

/// A session provider used by name in `warehouse_user` compiles; keep it used.
#[tokio::test(start_paused = true)]
async fn session_function_with_session_connection() {
    let rt = warehouse_runtime("sfn", "wh");
    let s = rt.session();
    s.run(async {
        let conn = rt.connection::<Warehouse>("wh").await.unwrap();
        assert_eq!(warehouse_user(&conn, 1).await.unwrap(), "u");
        assert_eq!(warehouse_user::stats().loads, 1);
    })
    .await;
    released(rt.shutdown().await, 2);
}
