//! The dashboard app: routes, providers, cached queries and pages. `main.rs` serves it; the
//! tests (`tests/dashboard.rs`, `tests/browser.rs`) include this file and serve it themselves.
//!
//! * **SQLite** (the default, no server): a fresh database file with sample data. SQLite has no
//!   database roles, so users log in through [`DemoLogin`], a small provider written for this
//!   example that checks the password against a `demo_users` table (demo only!) and gives the
//!   user a read-only pool of their own.
//! * **PostgreSQL** (`DASHBOARD_DATABASE_URL=postgres://app@host/db`, feature `postgres`): the
//!   URL's account creates the sample data; users log in as their own database roles with
//!   [`PostgresLogin`](connscope::sql::PostgresLogin), and row-level security shows each role
//!   its own orders.
//!
//! Each page shows two cached queries: the user's orders (`#[cached_resource(scope = "session")]`,
//! one cache per user session) and the totals per region (`scope = "global"`, one cache shared
//! by everybody), with both caches' statistics, and two charts drawn as inline SVG (no external
//! assets): the totals per region, and the caches' hits and misses over time.
//!
//! `/metrics` serves connscope's statistics in the Prometheus text format
//! (`Runtime::export_metrics` into a recorder of this app's own).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use connscope::sql::SqliteDb;
use connscope::web::{LoggedIn, WebSession, WebSessions, escape_html, logout_button};
use connscope::{Conn, Connection, Provider, ReleaseReport, Runtime, Secret, StatsSnapshot, cached_resource};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The app's own connection (`[connections.dashboard_app]`): a global pool that creates the
/// sample data and runs the company-wide query.
pub const APP_DB: &str = "dashboard_app";

/// The demo users of the SQLite database: (user, password). Demo only.
pub const DEMO_USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")];

/// Sample orders: (id, owner, product, region, amount).
const SAMPLE_ORDERS: &[(i64, &str, &str, &str, f64)] = &[
    (1, "alice", "Green tea", "emea", 12.5),
    (2, "alice", "Teapot", "emea", 39.0),
    (3, "alice", "Tea towels", "apac", 8.25),
    (4, "bob", "Espresso beans", "amer", 18.0),
    (5, "bob", "Coffee grinder", "amer", 89.99),
    (6, "bob", "Milk jug", "emea", 14.5),
    (7, "carol", "Hot chocolate", "apac", 6.75),
    (8, "carol", "Mugs (set of 4)", "amer", 24.0),
];

/// One row of the user's orders.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Order {
    pub id: i64,
    pub product: String,
    pub region: String,
    pub amount: f64,
}

/// One row of the company-wide totals.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RegionTotal {
    pub region: String,
    pub orders: i64,
    pub total: f64,
}

/// What can go wrong in the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// connscope: no session, login required, configuration…
    #[error(transparent)]
    Connscope(#[from] connscope::Error),
    /// A statement through connscope's `query` API.
    #[error(transparent)]
    Sql(#[from] connscope::sql::SqlError),
    /// A statement on a user's own SQLite pool.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The app was started wrongly.
    #[error("{0}")]
    Setup(String),
}

// ---------------------------------------------------------------------------------------------
// SQLite: the demo login provider
// ---------------------------------------------------------------------------------------------

/// A user's login to the SQLite demo database.
///
/// **DEMO ONLY.** SQLite has no users or passwords, so this provider checks the password
/// against the `demo_users` table of the sample data, where passwords are stored in clear
/// text. A real app authenticates against the database server (see `PostgresLogin`) or an
/// identity provider, and never stores passwords in clear text.
///
/// The login form is derived from the fields: `user` (text) and `password` (a password input,
/// wiped from memory once connected); `url` is fixed by the app from `[connections.dashboard]`.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "dashboard", ttl = "8h", health_check = "every_use")]
pub struct DemoLogin {
    /// The demo database, set by the app, never typed by the user.
    #[connection(fixed)]
    pub url: String,
    /// The user name.
    #[connection(label = "User name")]
    pub user: String,
    /// The user's password.
    pub password: Secret,
}

/// The live client of a [`DemoLogin`]: the user's own read-only pool.
pub struct UserDb {
    pub pool: SqlitePool,
    id: u64,
    registry: Arc<UserConnections>,
}

/// Why a demo login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password (one message for both: no user enumeration).
    #[error("wrong user name or password")]
    WrongPassword,
    /// The database could not be opened or queried.
    #[error("the demo database failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl Provider for DemoLogin {
    type Raw = UserDb;
    type Error = LoginError;

    async fn connect(&self) -> Result<UserDb, LoginError> {
        let registry = user_connections(&self.url);
        let options = SqliteConnectOptions::from_str(&self.url)?.read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        // DEMO ONLY: a clear-text password in a table stands in for the database checking it.
        let stored: Option<(String,)> = sqlx::query_as("select password from demo_users where name = $1")
            .bind(&self.user)
            .fetch_optional(&pool)
            .await?;
        let matches = stored
            .is_some_and(|(stored,)| constant_time_eq(stored.as_bytes(), self.password.expose().as_bytes()));
        if !matches {
            pool.close().await;
            registry.refused.fetch_add(1, SeqCst);
            return Err(LoginError::WrongPassword);
        }
        Ok(registry.opened(&self.user, pool))
    }

    async fn is_open(&self, raw: &UserDb) -> bool {
        if raw.pool.is_closed() {
            return false;
        }
        let ping = sqlx::query("select 1").execute(&raw.pool);
        matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(_)))
    }

    async fn close(&self, raw: &UserDb) {
        raw.pool.close().await;
        raw.registry.closed(raw.id);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user connections of one demo database: counted (for the tests), and closable from
/// outside the app's request flow, the way a database administrator kills a session.
#[derive(Debug, Default)]
pub struct UserConnections {
    live: Mutex<Vec<(u64, String, SqlitePool)>>,
    next: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
}

impl UserConnections {
    fn opened(self: Arc<Self>, user: &str, pool: SqlitePool) -> UserDb {
        let id = self.next.fetch_add(1, SeqCst);
        self.live.lock().unwrap().push((id, user.to_owned(), pool.clone()));
        self.opened.fetch_add(1, SeqCst);
        UserDb { pool, id, registry: self }
    }

    fn closed(&self, id: u64) {
        self.live.lock().unwrap().retain(|(i, _, _)| *i != id);
        self.closed.fetch_add(1, SeqCst);
    }

    /// User connections opened (successful logins).
    pub fn opened_count(&self) -> u64 {
        self.opened.load(SeqCst)
    }

    /// User connections closed by the provider's `close` (logout, session end, found closed).
    pub fn closed_count(&self) -> u64 {
        self.closed.load(SeqCst)
    }

    /// Logins refused (wrong user name or password).
    pub fn refused_count(&self) -> u64 {
        self.refused.load(SeqCst)
    }

    /// The users with a live connection, one entry per connection.
    pub fn live_users(&self) -> Vec<String> {
        self.live.lock().unwrap().iter().map(|(_, user, _)| user.clone()).collect()
    }

    /// Kills `user`'s connections behind the app's back (their pools are closed). The app
    /// notices on the next request and shows that user the login form. Returns how many.
    pub async fn kill(&self, user: &str) -> usize {
        let pools: Vec<SqlitePool> = self
            .live
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, u, _)| u == user)
            .map(|(_, _, p)| p.clone())
            .collect();
        for pool in &pools {
            pool.close().await;
        }
        pools.len()
    }
}

/// The registry of each demo database's user connections, by URL (a provider's `connect` only
/// has its settings to go by).
fn user_connections(url: &str) -> Arc<UserConnections> {
    static REGISTRY: LazyLock<Mutex<HashMap<String, Arc<UserConnections>>>> = LazyLock::new(Default::default);
    Arc::clone(REGISTRY.lock().unwrap().entry(url.to_owned()).or_default())
}

// ---------------------------------------------------------------------------------------------
// The cached queries
// ---------------------------------------------------------------------------------------------

/// The user's orders, cached per user session. The connection is not part of the key
/// (`#[not_key]`); the user name is, so a second login in the same browser session never sees
/// the first user's rows.
#[cached_resource(scope = "session", ttl = "30s", max_entries = 10)]
async fn my_orders(#[not_key] conn: &Conn<DemoLogin>, user: String) -> Result<Arc<Vec<Order>>, AppError> {
    let db = conn.get().await?;
    let query = sqlx::query_as::<_, Order>(
        "select o.id, o.product, o.region, o.amount from demo_orders o where o.owner = $1 order by o.id",
    )
    .bind(&user)
    .fetch_all(&db.pool);
    // Boxed, as every query here: the cache's future holds this body's future several times
    // over, and an unboxed sqlx future makes that hundreds of KiB (a stack overflow in a debug
    // build's 2 MiB worker thread).
    let rows = Box::pin(query).await?;
    Ok(Arc::new(rows))
}

/// Orders and totals per region over every user, cached once for the whole app. (`uncached()`:
/// this function is the cache, the `query` API's own cache is not needed on top.)
#[cached_resource(scope = "global", ttl = "60s")]
async fn region_totals(#[not_key] db: &Conn<SqliteDb>) -> Result<Arc<Vec<RegionTotal>>, AppError> {
    let query = db
        .query(
            "select region, count(*) as orders, sum(amount) as total from demo_orders \
             group by region order by region",
        )
        .uncached()
        .fetch_all::<RegionTotal>();
    Ok(Box::pin(query).await?)
}

/// What the pages need from a backend: the provider users log in with, and the two queries.
pub trait Backend: Connection + Sized {
    /// Shown on the page.
    const DESCRIPTION: &'static str;
    /// The logged-in user's name.
    fn user(conn: &Conn<Self>) -> String;
    /// The user's orders (session cache).
    fn my_orders(
        conn: &Conn<Self>,
        user: String,
    ) -> impl Future<Output = Result<Arc<Vec<Order>>, AppError>> + Send;
    /// Statistics of this session's `my_orders` cache.
    fn my_orders_stats() -> StatsSnapshot;
    /// The totals per region (global cache).
    fn region_totals(rt: &Runtime) -> impl Future<Output = Result<Arc<Vec<RegionTotal>>, AppError>> + Send;
    /// Statistics of the global `region_totals` cache.
    fn region_totals_stats() -> StatsSnapshot;
}

impl Backend for DemoLogin {
    const DESCRIPTION: &'static str = "SQLite demo database";
    fn user(conn: &Conn<Self>) -> String {
        conn.provider().user.clone()
    }
    async fn my_orders(conn: &Conn<Self>, user: String) -> Result<Arc<Vec<Order>>, AppError> {
        my_orders(conn, user).await
    }
    fn my_orders_stats() -> StatsSnapshot {
        my_orders::stats()
    }
    async fn region_totals(rt: &Runtime) -> Result<Arc<Vec<RegionTotal>>, AppError> {
        let db = rt.connection::<SqliteDb>(APP_DB).await?;
        region_totals(&db).await
    }
    fn region_totals_stats() -> StatsSnapshot {
        region_totals::stats()
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    //! The same two queries on PostgreSQL, where each user is a database role.

    use std::sync::Arc;

    use connscope::sql::{PostgresDb, PostgresLogin};
    use connscope::{Conn, Runtime, StatsSnapshot, cached_resource};

    use super::{APP_DB, AppError, Backend, Order, RegionTotal};

    /// The user's orders: row-level security lets a role read only its own rows.
    #[cached_resource(scope = "session", ttl = "30s", max_entries = 10)]
    async fn my_orders_pg(
        #[not_key] conn: &Conn<PostgresLogin>,
        user: String,
    ) -> Result<Arc<Vec<Order>>, AppError> {
        let _ = user; // the key: the server knows the role (`current_user`)
        let query = conn
            .query(
                "select id, product, region, amount from demo_orders where owner = current_user order by id",
            )
            .uncached()
            .fetch_all::<Order>();
        Ok(Box::pin(query).await?)
    }

    /// Totals over every user, through the app's own account (the table's owner).
    #[cached_resource(scope = "global", ttl = "60s")]
    async fn region_totals_pg(#[not_key] db: &Conn<PostgresDb>) -> Result<Arc<Vec<RegionTotal>>, AppError> {
        let query = db
            .query(
                "select region, count(*) as orders, sum(amount) as total from demo_orders \
                 group by region order by region",
            )
            .uncached()
            .fetch_all::<RegionTotal>();
        Ok(Box::pin(query).await?)
    }

    impl Backend for PostgresLogin {
        const DESCRIPTION: &'static str = "PostgreSQL";
        fn user(conn: &Conn<Self>) -> String {
            conn.provider().user.clone()
        }
        async fn my_orders(conn: &Conn<Self>, user: String) -> Result<Arc<Vec<Order>>, AppError> {
            my_orders_pg(conn, user).await
        }
        fn my_orders_stats() -> StatsSnapshot {
            my_orders_pg::stats()
        }
        async fn region_totals(rt: &Runtime) -> Result<Arc<Vec<RegionTotal>>, AppError> {
            let db = rt.connection::<PostgresDb>(APP_DB).await?;
            region_totals_pg(&db).await
        }
        fn region_totals_stats() -> StatsSnapshot {
            region_totals_pg::stats()
        }
    }

    /// `url` without its user and password (users log in with their own).
    pub(super) fn without_credentials(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
            None => url.to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------------------------

/// Which database the dashboard runs on.
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file with fresh sample data: this path, or a new temporary file. The file is
    /// removed when the [`Dashboard`] is dropped.
    Sqlite(Option<PathBuf>),
    /// A PostgreSQL server: the URL's account creates the sample data (table `demo_orders`);
    /// users log in as their own roles.
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Database {
    /// `DASHBOARD_DATABASE_URL` (a `postgres://` URL), else SQLite at `sqlite_path`.
    pub fn from_env(sqlite_path: PathBuf) -> Result<Database, AppError> {
        match std::env::var("DASHBOARD_DATABASE_URL") {
            Err(_) => Ok(Database::Sqlite(Some(sqlite_path))),
            Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                #[cfg(feature = "postgres")]
                return Ok(Database::Postgres(url));
                #[cfg(not(feature = "postgres"))]
                return Err(AppError::Setup(
                    "DASHBOARD_DATABASE_URL is a PostgreSQL URL: run with `--features axum,postgres`"
                        .to_owned(),
                ));
            }
            Ok(_) => Err(AppError::Setup(
                "DASHBOARD_DATABASE_URL takes a postgres:// URL; unset it for the SQLite demo database"
                    .to_owned(),
            )),
        }
    }
}

/// A running dashboard: its router (serve it with `axum::serve`) and runtime.
pub struct Dashboard {
    /// The routes: `/` (gated), `/login`, `/logout`, `/metrics`.
    pub router: Router,
    /// The connscope runtime behind it (shut it down at the end).
    pub runtime: Runtime,
    /// Which database, for humans.
    pub description: String,
    user_connections: Option<Arc<UserConnections>>,
    /// The SQLite file (removed when the dashboard is dropped).
    pub file: Option<PathBuf>,
    _file: Option<RemoveOnDrop>,
}

impl Dashboard {
    /// The user connections of the SQLite demo database (`None` on PostgreSQL, where the
    /// server has its own view: `pg_stat_activity`).
    pub fn user_connections(&self) -> Option<&Arc<UserConnections>> {
        self.user_connections.as_ref()
    }

    /// Ends every session (closing the users' connections) and the app's own connection.
    pub async fn shutdown(&self) -> ReleaseReport {
        self.runtime.shutdown().await
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_database_files(&self.0);
    }
}

fn remove_database_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// Builds the dashboard on `database`: creates the sample data, then the routes.
pub async fn app(database: Database) -> Result<Dashboard, AppError> {
    match database {
        Database::Sqlite(path) => {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = path.unwrap_or_else(|| {
                let n = NEXT.fetch_add(1, SeqCst);
                std::env::temp_dir().join(format!("connscope-dashboard-{}-{n}.sqlite", std::process::id()))
            });
            remove_database_files(&path); // start from fresh sample data
            let file = RemoveOnDrop(path.clone());
            let url = format!("sqlite://{}", path.display());
            let runtime = runtime()
                .connection_setting(APP_DB, "url", format!("{url}?mode=rwc"))
                .connection_setting(DemoLogin::NAME, "url", url.clone())
                .build();
            let db = runtime.connection::<SqliteDb>(APP_DB).await?;
            // DEMO ONLY: clear-text passwords, for `DemoLogin` to check (see there).
            db.execute("create table demo_users (name text primary key, password text not null)").await?;
            for (user, password) in DEMO_USERS {
                db.execute("insert into demo_users (name, password) values ($1, $2)")
                    .bind(*user)
                    .bind(*password)
                    .await?;
            }
            db.execute(
                "create table demo_orders (id integer primary key, owner text not null, product text not null, \
                 region text not null, amount real not null)",
            )
            .await?;
            insert_orders(&db).await?;
            Ok(Dashboard {
                router: routes::<DemoLogin>(&runtime),
                runtime,
                description: format!("{} at {}", DemoLogin::DESCRIPTION, path.display()),
                user_connections: Some(user_connections(&url)),
                file: Some(path),
                _file: Some(file),
            })
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            use connscope::sql::{PostgresDb, PostgresLogin};
            let runtime = runtime()
                .connection_setting(APP_DB, "url", url.clone())
                .connection_setting(PostgresLogin::NAME, "url", postgres::without_credentials(&url))
                .build();
            let db = runtime.connection::<PostgresDb>(APP_DB).await?;
            db.execute("drop table if exists demo_orders").await?;
            db.execute(
                "create table demo_orders (id bigint primary key, owner text not null, product text not null, \
                 region text not null, amount double precision not null)",
            )
            .await?;
            insert_orders(&db).await?;
            // Every role may read the table, and row-level security shows each its own rows
            // (the app's account owns the table, so the company-wide totals see them all).
            db.execute("grant select on demo_orders to public").await?;
            db.execute("alter table demo_orders enable row level security").await?;
            db.execute("create policy own_orders on demo_orders for select using (owner = current_user)")
                .await?;
            Ok(Dashboard {
                router: routes::<PostgresLogin>(&runtime),
                runtime,
                description: format!(
                    "{} at {}",
                    PostgresLogin::DESCRIPTION,
                    postgres::without_credentials(&url)
                ),
                user_connections: None,
                file: None,
                _file: None,
            })
        }
    }
}

fn runtime() -> connscope::RuntimeBuilder {
    // A browser session that stays idle this long is ended (its connection closed).
    Runtime::builder().idle_timeout(Duration::from_secs(30 * 60))
}

async fn insert_orders<P: connscope::sql::SqlProvider>(db: &Conn<P>) -> Result<(), AppError> {
    for (id, owner, product, region, amount) in SAMPLE_ORDERS {
        db.execute(
            "insert into demo_orders (id, owner, product, region, amount) values ($1, $2, $3, $4, $5)",
        )
        .bind(*id)
        .bind(*owner)
        .bind(*product)
        .bind(*region)
        .bind(*amount)
        .await?;
    }
    Ok(())
}

/// What the pages share: the app's metrics recorder and the cache history of the chart.
struct AppState {
    runtime: Runtime,
    /// A Prometheus recorder of this app's own (not installed globally: tests serve several
    /// dashboards in one process).
    prometheus: PrometheusRecorder,
    history: Mutex<History>,
}

/// Hits and misses of the two query caches, sampled on every page view (at most the last
/// [`History::LEN`] samples).
#[derive(Default)]
struct History {
    started: Option<std::time::Instant>,
    /// The last totals read (a session-scoped cache's total drops when a session ends).
    last: (u64, u64),
    /// Hits and misses counted so far: only increases of the totals are added.
    counted: (u64, u64),
    /// (seconds since the first sample, hits, misses).
    samples: std::collections::VecDeque<(f64, u64, u64)>,
}

impl History {
    const LEN: usize = 60;

    fn sample(&mut self, rt: &Runtime) {
        let (mut hits, mut misses) = (0, 0);
        for entry in rt.cache_stats() {
            let name = entry.name.rsplit("::").next().unwrap_or_default();
            if ["my_orders", "region_totals", "my_orders_pg", "region_totals_pg"].contains(&name) {
                hits += entry.stats.hits;
                misses += entry.stats.misses;
            }
        }
        self.counted.0 += hits.saturating_sub(self.last.0);
        self.counted.1 += misses.saturating_sub(self.last.1);
        self.last = (hits, misses);
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        self.samples.push_back((started.elapsed().as_secs_f64(), self.counted.0, self.counted.1));
        if self.samples.len() > Self::LEN {
            self.samples.pop_front();
        }
    }
}

fn routes<B: Backend>(runtime: &Runtime) -> Router {
    let web = WebSessions::new(runtime.clone()).title("Orders dashboard");
    let state = Arc::new(AppState {
        runtime: runtime.clone(),
        prometheus: PrometheusBuilder::new().build_recorder(),
        history: Mutex::new(History::default()),
    });
    Router::new()
        .route("/", get(dashboard::<B>))
        .route("/metrics", get(metrics))
        .merge(web.login_routes::<B>())
        .layer(Extension(state))
        .layer(web.layer())
}

/// connscope's statistics in the Prometheus text format: exported from the runtime's counters
/// right before rendering (nothing is recorded on the cache hit path).
async fn metrics(Extension(state): Extension<Arc<AppState>>) -> Response {
    ::metrics::with_local_recorder(&state.prometheus, || state.runtime.export_metrics());
    let body = state.prometheus.handle().render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

/// The dashboard: only for a logged-in user (`LoggedIn` redirects to `/login` otherwise, and
/// when the user's connection was found closed).
async fn dashboard<B: Backend>(
    web: WebSession,
    Extension(state): Extension<Arc<AppState>>,
    LoggedIn(conn): LoggedIn<B>,
) -> Response {
    let user = B::user(&conn);
    let loads = (B::my_orders_stats().loads, B::region_totals_stats().loads);
    let orders = match B::my_orders(&conn, user.clone()).await {
        Ok(orders) => orders,
        Err(e) => return query_failed::<B>(&web, e).await,
    };
    let totals = match B::region_totals(web.runtime()).await {
        Ok(totals) => totals,
        Err(e) => return query_failed::<B>(&web, e).await,
    };
    let (mine, all) = (B::my_orders_stats(), B::region_totals_stats());
    let origin = |before: u64, after: u64| {
        if after > before { "Loaded from the database just now." } else { "Served from the cache." }
    };

    let history = {
        let mut history = state.history.lock().unwrap();
        history.sample(web.runtime());
        history.samples.iter().copied().collect::<Vec<_>>()
    };
    let charts = format!(
        "<section class=\"charts\"><figure><figcaption>Total per region</figcaption>{}</figure>\
         <figure><figcaption title=\"both caches, every user, one sample per page view\">Cache hits and misses over time</figcaption>{}</figure></section>",
        region_chart(&totals),
        history_chart(&history),
    );
    let mut html = String::new();
    let _ = write!(
        html,
        "<header><h1>Orders dashboard</h1><p class=\"who\">Signed in as <strong id=\"user\">{}</strong> \
         &middot; {}</p>{}</header>",
        escape_html(&user),
        escape_html(B::DESCRIPTION),
        logout_button(&web),
    );
    html.push_str(&charts);

    let _ = write!(
        html,
        "<section><h2>Your orders</h2><p class=\"note\">Session-scoped cache <code>my_orders</code>: only \
         your session sees these rows. {}</p><table id=\"orders\"><thead><tr><th>#</th><th>Product</th>\
         <th>Region</th><th class=\"num\">Amount</th></tr></thead><tbody>",
        origin(loads.0, mine.loads),
    );
    if orders.is_empty() {
        html.push_str("<tr><td colspan=\"4\">No orders.</td></tr>");
    }
    for o in orders.iter() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.2}</td></tr>",
            o.id,
            escape_html(&o.product),
            escape_html(&o.region),
            o.amount
        );
    }
    html.push_str("</tbody></table></section>");

    let _ = write!(
        html,
        "<section><h2>All regions</h2><p class=\"note\">Global cache <code>region_totals</code>: one result \
         shared by every user. {}</p><table id=\"regions\"><thead><tr><th>Region</th><th class=\"num\">Orders\
         </th><th class=\"num\">Total</th></tr></thead><tbody>",
        origin(loads.1, all.loads),
    );
    for t in totals.iter() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td></tr>",
            escape_html(&t.region),
            t.orders,
            t.total
        );
    }
    html.push_str("</tbody></table></section>");

    html.push_str(
        "<section><h2>Cache statistics</h2><table id=\"stats\"><thead><tr><th>Cache</th><th>Scope</th>\
         <th>TTL</th><th class=\"num\">Hits</th><th class=\"num\">Misses</th><th class=\"num\">Loads</th>\
         <th class=\"num\">Evictions</th></tr></thead><tbody>",
    );
    for (name, scope, ttl, s) in
        [("my_orders", "session (yours)", "30 s", mine), ("region_totals", "global (everyone)", "60 s", all)]
    {
        let _ = write!(
            html,
            "<tr id=\"stats-{name}\"><td><code>{name}</code></td><td>{scope}</td><td>{ttl}</td>\
             <td class=\"num hits\">{}</td><td class=\"num misses\">{}</td><td class=\"num loads\">{}</td>\
             <td class=\"num evictions\">{}</td></tr>",
            s.hits,
            s.misses,
            s.loads,
            s.evictions()
        );
    }
    html.push_str(
        "</tbody></table><p class=\"note\"><a href=\"/\">Reload</a> to see the hits go up. \
         <a href=\"/metrics\">/metrics</a> has them for Prometheus.</p></section>",
    );

    Html(page("Orders dashboard", &html)).into_response()
}

/// A query failed: back to the login form if the user's connection turned out closed, else
/// an error page.
async fn query_failed<B: Backend>(web: &WebSession, e: AppError) -> Response {
    let still_logged_in = match web.session() {
        Some(session) => session.logged_in::<B>(B::NAME).await.is_ok(),
        None => false,
    };
    if !still_logged_in {
        return Redirect::to(web.login_path()).into_response();
    }
    let body = format!(
        "<h1>Something went wrong</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Try again</a></p>{}",
        escape_html(&e.to_string()),
        logout_button(web)
    );
    (StatusCode::INTERNAL_SERVER_ERROR, Html(page("Error", &body))).into_response()
}

/// Horizontal bars: the total amount per region, as inline SVG.
fn region_chart(totals: &[RegionTotal]) -> String {
    const W: f64 = 360.0;
    const LABEL: f64 = 60.0;
    const ROW: f64 = 30.0;
    let max = totals.iter().map(|t| t.total).fold(0.0_f64, f64::max).max(1.0);
    let height = ROW * totals.len().max(1) as f64 + 10.0;
    let mut svg = format!(
        "<svg id=\"chart-regions\" role=\"img\" aria-label=\"Total per region\" viewBox=\"0 0 {W} {height}\" \
         width=\"{W}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, t) in totals.iter().enumerate() {
        let y = 5.0 + ROW * i as f64;
        let width = ((W - LABEL - 70.0) * t.total / max).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" class=\"label\">{region}</text>\
             <rect class=\"bar\" x=\"{LABEL}\" y=\"{y}\" width=\"{width:.1}\" height=\"20\" rx=\"3\"><title>{region}: {total:.2}</title></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\" class=\"value\">{total:.2}</text>",
            ty = y + 15.0,
            region = escape_html(&t.region),
            total = t.total,
            vx = LABEL + width + 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Two lines, hits and misses counted so far, against seconds since the first page view.
fn history_chart(samples: &[(f64, u64, u64)]) -> String {
    const W: f64 = 360.0;
    const H: f64 = 170.0;
    const PAD: f64 = 30.0;
    let t_max = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let t_min = samples.first().map_or(0.0, |s| s.0);
    let span = (t_max - t_min).max(1.0);
    let y_max = samples.iter().map(|s| s.1.max(s.2)).max().unwrap_or(0).max(1) as f64;
    let x = |t: f64| PAD + (W - 2.0 * PAD) * (t - t_min) / span;
    let y = |v: u64| H - PAD - (H - PAD - 10.0) * v as f64 / y_max;
    let line = |pick: fn(&(f64, u64, u64)) -> u64| {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.0), y(pick(s)))).collect::<Vec<_>>().join(" ")
    };
    let (hits, misses) = samples.last().map_or((0, 0), |s| (s.1, s.2));
    format!(
        "<svg id=\"chart-cache\" role=\"img\" aria-label=\"Cache hits and misses over time\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line class=\"axis\" x1=\"{PAD}\" y1=\"{base}\" x2=\"{xr}\" y2=\"{base}\"/>\
         <line class=\"axis\" x1=\"{PAD}\" y1=\"10\" x2=\"{PAD}\" y2=\"{base}\"/>\
         <text x=\"2\" y=\"16\" class=\"value\">{y_max}</text><text x=\"2\" y=\"{base}\" class=\"value\">0</text>\
         <text x=\"{xr}\" y=\"{legend}\" class=\"value\" text-anchor=\"end\">{span:.0} s</text>\
         <polyline class=\"hits\" points=\"{hp}\"/><polyline class=\"misses\" points=\"{mp}\"/>\
         <text x=\"{PAD}\" y=\"{legend}\" class=\"hits-label\">&#9632; hits {hits}</text>\
         <text x=\"{mx}\" y=\"{legend}\" class=\"misses-label\">&#9632; misses {misses}</text></svg>",
        base = H - PAD,
        xr = W - PAD,
        hp = line(|s| s.1),
        mp = line(|s| s.2),
        legend = H - 4.0,
        mx = PAD + 90.0,
    )
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>\n",
        escape_html(title)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}\
main{max-width:52rem}header{display:flex;gap:1.5rem;align-items:baseline;flex-wrap:wrap}\
h1{margin:0}h2{margin:1.6rem 0 .3rem}.note{color:#555;margin:.2rem 0 .6rem}\
table{border-collapse:collapse;background:#fff;min-width:24rem}\
th,td{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}th{background:#eef}\
.num{text-align:right}.error{color:#a00}button{padding:.3rem .9rem}\
.charts{display:flex;gap:1.5rem;flex-wrap:wrap;margin-top:1.2rem}figure{margin:0;background:#fff;\
border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}figcaption{font-weight:600;margin-bottom:.4rem}\
svg text{font:12px system-ui,sans-serif;fill:#333}.bar{fill:#4f6bd8}.axis{stroke:#999}\
polyline{fill:none;stroke-width:2}.hits{stroke:#1e8e4e}.misses{stroke:#c0392b}\
.hits-label{fill:#1e8e4e}.misses-label{fill:#c0392b}";
