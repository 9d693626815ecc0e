//! Helpers shared by the rotating-credentials suites (`credentials.rs`, `secrets_watch.rs`):
//! the captured log of the test binary, the swap clock (when each rebuild of a connection
//! started, swapped and closed the old client, read from connscope's own events), tail-latency
//! figures by phase of a swap, and the server-side setup of users whose password is checked
//! (PostgreSQL roles, MariaDB users).
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Every log line of the test binary (a global subscriber: the soaks run on many threads).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Installs the global subscriber (once): every event but sqlx's statement log (it quotes the
/// tests' own `ALTER ROLE … PASSWORD '…'` statements, sent by the tests, not by connscope)
/// goes to the captured log, and connscope's rebuild events to the swap clock.
pub fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace,sqlx::query=off"))
            .with_ansi(false)
            .finish()
            .with(SwapClock);
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

/// Everything logged so far.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

/// Asserts no `secrets` appear in the log.
pub fn no_secret_logged(secrets: &[String]) {
    let text = log_text();
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "a password was logged");
    }
}

/// What a connection's rebuild did, as connscope logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The replacement started connecting ("rebuilding the connection …").
    Started,
    /// The replacement was swapped in ("connection rebuilt …").
    Swapped,
    /// A client was closed ("closed").
    Closed,
}

fn marks() -> &'static Mutex<Vec<(Instant, String, Mark)>> {
    static MARKS: OnceLock<Mutex<Vec<(Instant, String, Mark)>>> = OnceLock::new();
    MARKS.get_or_init(Default::default)
}

/// The layer that timestamps connscope's rebuild events, by connection name.
struct SwapClock;

#[derive(Default)]
struct Fields {
    message: String,
    connection: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "connection" => self.connection = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "connection" => self.connection = value.to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SwapClock {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("connscope") {
            return;
        }
        let now = Instant::now();
        let mut f = Fields::default();
        event.record(&mut f);
        let mark = if f.message.starts_with("connscope: rebuilding the connection")
            && !f.message.contains("failed")
        {
            Mark::Started
        } else if f.message.starts_with("connscope: connection rebuilt") {
            Mark::Swapped
        } else if f.message == "connscope: closed" {
            Mark::Closed
        } else {
            return;
        };
        marks().lock().unwrap().push((now, f.connection, mark));
    }
}

/// One swap of a connection: the replacement started connecting, was swapped in, and the old
/// client was closed (the next close of that connection after the swap).
#[derive(Clone, Copy, Debug)]
pub struct Swap {
    pub started: Instant,
    pub swapped: Instant,
    pub closed: Instant,
}

/// The swaps of connection `name` seen so far (a swap whose old client is not closed yet ends now).
pub fn swaps_of(name: &str) -> Vec<Swap> {
    let marks: Vec<_> =
        marks().lock().unwrap().iter().filter(|(_, c, _)| c == name).map(|&(t, _, m)| (t, m)).collect();
    let mut swaps = Vec::new();
    let mut started = None;
    for (i, &(t, m)) in marks.iter().enumerate() {
        match m {
            Mark::Started => started = Some(t),
            Mark::Swapped => {
                let closed = marks[i..]
                    .iter()
                    .find(|&&(_, m)| m == Mark::Closed)
                    .map_or_else(Instant::now, |&(t, _)| t);
                swaps.push(Swap { started: started.take().unwrap_or(t), swapped: t, closed });
            }
            Mark::Closed => {}
        }
    }
    swaps
}

/// Tail latency of queries by phase of a swap. *During a swap* is the window from the start of
/// the replacement's connect to the old client's close; it is split in *connecting* (start to
/// swap) and *draining* (swap to the old client's close). A query counts in a phase when its own
/// run overlaps it (connecting first).
#[derive(Debug, Default)]
pub struct Phases {
    pub outside: Vec<Duration>,
    pub connecting: Vec<Duration>,
    pub draining: Vec<Duration>,
}

impl Phases {
    pub fn of(samples: &[(Instant, Duration)], swaps: &[Swap]) -> Phases {
        let mut p = Phases::default();
        let overlaps = |t0: Instant, d: Duration, from: Instant, to: Instant| t0 <= to && t0 + d >= from;
        for &(t0, d) in samples {
            if swaps.iter().any(|s| overlaps(t0, d, s.started, s.swapped)) {
                p.connecting.push(d)
            } else if swaps.iter().any(|s| overlaps(t0, d, s.swapped, s.closed)) {
                p.draining.push(d)
            } else {
                p.outside.push(d)
            }
        }
        for v in [&mut p.outside, &mut p.connecting, &mut p.draining] {
            v.sort_unstable();
        }
        p
    }

    /// All the queries during a swap, sorted.
    pub fn during(&self) -> Vec<Duration> {
        let mut v: Vec<_> = self.connecting.iter().chain(&self.draining).copied().collect();
        v.sort_unstable();
        v
    }

    /// p99 during a swap over p99 outside one.
    pub fn ratio(&self) -> f64 {
        pct(&self.during(), 99).as_secs_f64() / pct(&self.outside, 99).as_secs_f64().max(1e-9)
    }

    /// The figures, one line.
    pub fn summary(&self, swaps: &[Swap]) -> String {
        let line = |v: &[Duration]| {
            format!(
                "{} queries, p50 {:?} p90 {:?} p99 {:?} max {:?}",
                v.len(),
                pct(v, 50),
                pct(v, 90),
                pct(v, 99),
                v.last().copied().unwrap_or_default()
            )
        };
        let mean = |f: &dyn Fn(&Swap) -> Duration| {
            swaps.iter().map(f).sum::<Duration>() / (swaps.len().max(1) as u32)
        };
        // Slowed queries whatever the window's length: slower than 4x the p99 outside, per swap.
        let slow = 4 * pct(&self.outside, 99);
        let slowed = self.during().iter().filter(|&&d| d > slow).count() as f64 / swaps.len().max(1) as f64;
        format!(
            "p99 during a swap / outside = {:.2} (target <= 1.5); {slowed:.1} queries per swap slower than \
             {slow:?} (4x p99 outside); during a swap (replacement's connect start \
             to old client's close): {}; of which connecting: {}; draining and closing the old: {}; outside: {}; \
             {} swaps, connecting {:?} and draining/closing {:?} on average",
            self.ratio(),
            line(&self.during()),
            line(&self.connecting),
            line(&self.draining),
            line(&self.outside),
            swaps.len(),
            mean(&|s| s.swapped - s.started),
            mean(&|s| s.closed - s.swapped),
        )
    }
}

/// The `q`th percentile of sorted `v`.
pub fn pct(v: &[Duration], q: usize) -> Duration {
    v.get((v.len() * q / 100).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// Says loudly that `who`'s password is not checked by the server (the rotation proves
/// nothing then); under `CI=true`, fails.
fn not_enforced(test: &str, who: &str, server: &str) {
    crate::sql_support::loud(&format!(
        "WARNING {test}: {server} does not check {who}'s password: the rotation is not enforced; \
         `bash .ci/run` sets the server up"
    ));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {server} must require a password for {who}");
    }
}

/// PostgreSQL: roles whose password the server checks (`.ci/run` adds the `scram-sha-256`
/// lines of `pg_hba.conf` for `connscope_rotating` and the members of `connscope_rotators`).
#[cfg(feature = "postgres")]
pub mod pg {
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    pub async fn exec(admin: &mut PgConnection, sql: String) {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await.unwrap();
    }

    /// `url`'s server and database, as `role`, with `application_name` `app` (no password).
    pub fn url_as(url: &str, role: &str, app: &str) -> String {
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        format!(
            "postgres://{role}@{}:{}/{}?application_name={app}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("postgres")
        )
    }

    /// Creates (or resets) `role` with `password`, a member of `connscope_rotators`; says
    /// whether the server checks the password (loudly when not; fails under `CI=true`).
    pub async fn role_with_password(
        test: &str,
        admin: &mut PgConnection,
        url: &str,
        role: &str,
        password: &str,
    ) -> bool {
        exec(
            admin,
            format!(
                "do $$ begin create role connscope_rotators nologin; \
                 exception when duplicate_object then null; end $$; \
                 do $$ begin create role {role} login; exception when duplicate_object then null; end $$; \
                 grant connscope_rotators to {role}; alter role {role} password '{password}'"
            ),
        )
        .await;
        let wrong = format!("{}&password=surely-wrong", url_as(url, role, "probe"));
        let enforced = PgConnection::connect(&wrong).await.is_err();
        if !enforced {
            super::not_enforced(test, role, "PostgreSQL (pg_hba.conf trusts it)");
        }
        enforced
    }

    /// Server backends left with `application_name` `app`.
    pub async fn backends_of(admin: &mut PgConnection, app: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("select count(*) from pg_stat_activity where application_name = $1")
                .bind(app)
                .fetch_one(admin)
                .await
                .unwrap();
        n
    }
}

/// MariaDB/MySQL: users whose password the server checks (always: there is no trust rule).
#[cfg(feature = "mysql")]
pub mod my {
    use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

    pub async fn exec(admin: &mut MySqlConnection, sql: String) {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await.unwrap();
    }

    /// Creates (or replaces) `user` with `password`, allowed to read `url`'s database; returns
    /// the URL to reach that database as `user` (no password). Asserts the server checks it.
    pub async fn user_with_password(
        admin: &mut MySqlConnection,
        url: &str,
        user: &str,
        password: &str,
    ) -> String {
        let opts: sqlx::mysql::MySqlConnectOptions = url.parse().unwrap();
        let database = opts.get_database().unwrap_or("test").to_owned();
        exec(admin, format!("create or replace user '{user}'@'%' identified by '{password}'")).await;
        exec(admin, format!("grant select on `{database}`.* to '{user}'@'%'")).await;
        let wrong = format!("mysql://{user}:surely-wrong@{}:{}/", opts.get_host(), opts.get_port());
        assert!(MySqlConnection::connect(&wrong).await.is_err(), "MariaDB checks the password");
        format!("mysql://{user}@{}:{}/{database}", opts.get_host(), opts.get_port())
    }

    /// Sets `user`'s password.
    pub async fn set_password(admin: &mut MySqlConnection, user: &str, password: &str) {
        exec(admin, format!("alter user '{user}'@'%' identified by '{password}'")).await;
    }

    /// Connections the server has open for `user`.
    pub async fn connections_of(admin: &mut MySqlConnection, user: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("select count(*) from information_schema.processlist where user = ?")
                .bind(user)
                .fetch_one(admin)
                .await
                .unwrap();
        n
    }

    /// Drops `user`.
    pub async fn drop_user(admin: &mut MySqlConnection, user: &str) {
        exec(admin, format!("drop user if exists '{user}'@'%'")).await;
    }
}
