//! Helpers shared by the rotating-credentials suites (`credentials.rs`, `secrets_watch.rs`):
//! the captured log of the test binary, the swap clock and tail-latency figures by phase of a
//! swap (`phases.rs`, shared with the `rotation` bench), and the server-side setup of users
//! whose password is checked (PostgreSQL roles, MariaDB users).
#![allow(dead_code)]

mod phases;
pub use phases::*;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

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
