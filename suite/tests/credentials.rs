//! Rotating credentials (issue 13): a client whose credentials expire is renewed in place
//! ahead of the expiry when its provider can (a SQL pool whose user stays: no reconnect), else
//! rebuilt (replacement first, atomic swap, in-flight users finish on the old one, the old one
//! closed exactly once after its last user); a failed rebuild keeps the old client and retries;
//! credential sources are asked on every connect and every renewal, and never printed; a pooled
//! connect refused for authentication fetches fresh credentials once. Unit-level timing runs on
//! paused Tokio time; the PostgreSQL and MariaDB soaks (enabled by `DATABASE_URL`, `MYSQL_URL`)
//! run in real time while the password (or the user too) is rotated every second.

mod rotation_support;
mod sql_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use connscope::{Conn, Provider};
use rotation_support::{log_text, logs, no_secret_logged};
use tokio::time::Instant;

/// A provider whose clients expire `lifetime` after they connect; records every close.
struct Expiring {
    lifetime: Duration,
    connects: Arc<AtomicU64>,
    fail: AtomicBool,
    /// How long a connect takes.
    connect_delay: Mutex<Duration>,
    closed: Mutex<Vec<u64>>,
}

struct Client {
    id: u64,
    expires: Instant,
}

impl Expiring {
    fn new(lifetime: Duration) -> Self {
        Expiring {
            lifetime,
            connects: Arc::default(),
            fail: AtomicBool::new(false),
            connect_delay: Mutex::new(Duration::ZERO),
            closed: Mutex::new(Vec::new()),
        }
    }
    fn closed(&self) -> Vec<u64> {
        self.closed.lock().unwrap().clone()
    }
}

impl Provider for Expiring {
    type Raw = Client;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<Client, std::io::Error> {
        let delay = *self.connect_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("token service down"));
        }
        let id = self.connects.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Client { id, expires: Instant::now() + self.lifetime })
    }
    async fn is_open(&self, _: &Client) -> bool {
        true
    }
    async fn close(&self, raw: &Client) {
        self.closed.lock().unwrap().push(raw.id);
    }
    fn expires_at(&self, raw: &Client) -> Option<Instant> {
        Some(raw.expires)
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_is_rebuilt_ahead_of_expiry_and_the_old_one_closed_once_after_its_last_user() {
    let conn = Conn::new("token", Expiring::new(Duration::from_secs(10)));
    let held = conn.get().await.unwrap();
    assert_eq!(held.id, 1);

    tokio::time::sleep(Duration::from_millis(8_900)).await;
    assert_eq!(conn.counters().rebuilds, 0, "not before expiry minus 10%");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(conn.counters().rebuilds, 1, "rebuilt at 9 s for an expiry at 10 s");
    assert_eq!(conn.get().await.unwrap().id, 2, "new users get the replacement");
    assert_eq!(held.id, 1, "an in-flight user keeps the old client");
    assert!(conn.provider().closed().is_empty(), "never closed under its user");

    drop(held);
    settle().await;
    assert_eq!(conn.provider().closed(), vec![1], "closed after its last user let go");

    // The replacement is rebuilt in turn; nobody holds it, so it is closed at once.
    tokio::time::sleep(Duration::from_secs(9)).await;
    settle().await;
    assert_eq!(conn.counters().rebuilds, 2);
    assert_eq!(conn.provider().closed(), vec![1, 2]);

    conn.close().await;
    assert_eq!(conn.provider().closed(), vec![1, 2, 3], "each client closed exactly once");
    let c = conn.counters();
    assert_eq!((c.connects, c.closes, c.rebuild_failures), (3, 3, 0));
}

/// `#[connection(refresh = "14m")]`: clients rebuilt every 14 minutes; records connects and closes.
#[derive(connscope::Connection, Hash)]
#[connection(name = "refreshed", refresh = "14m")]
struct Refreshed {
    tag: String,
}

fn refreshed_log() -> &'static Mutex<(u64, Vec<u64>)> {
    static LOG: OnceLock<Mutex<(u64, Vec<u64>)>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

impl Provider for Refreshed {
    type Raw = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        let mut log = refreshed_log().lock().unwrap();
        log.0 += 1;
        Ok(log.0)
    }
    async fn is_open(&self, _: &u64) -> bool {
        true
    }
    async fn close(&self, raw: &u64) {
        refreshed_log().lock().unwrap().1.push(*raw);
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_rebuilds_every_period_and_closes_each_old_client_once_after_its_last_user() {
    let rt = connscope::Runtime::builder().build();
    let conn = rt.connect(Refreshed { tag: "a".into() }).await.unwrap();
    let held = conn.get().await.unwrap();
    assert_eq!(*held, 1);
    tokio::time::sleep(Duration::from_secs(14 * 60 - 1)).await;
    assert_eq!(conn.counters().rebuilds, 0, "not before 14 minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(conn.counters().rebuilds, 1, "rebuilt at 14 minutes");
    assert_eq!(*conn.get().await.unwrap(), 2, "new users get the replacement");
    assert!(refreshed_log().lock().unwrap().1.is_empty(), "never closed under its user");
    drop(held);
    settle().await;
    assert_eq!(refreshed_log().lock().unwrap().1, vec![1], "closed after its last user let go");

    // Every 14 minutes from each client's connect: 4 more periods, 4 more rebuilds.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(14 * 60)).await;
        settle().await;
    }
    let c = conn.counters();
    assert_eq!((c.rebuilds, c.connects, c.rebuild_failures), (5, 6, 0), "{c:?}");
    assert_eq!(refreshed_log().lock().unwrap().1, vec![1, 2, 3, 4, 5], "each old client closed once");
    rt.shutdown().await;
    assert_eq!(refreshed_log().lock().unwrap().1, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(conn.counters().closes, 6);
}

#[tokio::test(start_paused = true)]
async fn a_failed_rebuild_keeps_the_old_client_and_retries_with_backoff() {
    let _ = logs();
    let conn = Conn::new("token", Expiring::new(Duration::from_secs(10)));
    assert_eq!(conn.get().await.unwrap().id, 1);
    conn.provider().fail.store(true, Ordering::SeqCst);

    // Due at 9 s; retries after 250 ms, 500 ms, 1 s, 2 s…
    tokio::time::sleep(Duration::from_millis(9_100)).await;
    assert_eq!(conn.counters().rebuild_failures, 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(conn.counters().rebuild_failures, 3, "retried at 9.25 s and 9.75 s");
    assert_eq!(conn.get().await.unwrap().id, 1, "the old client is kept");
    assert!(conn.provider().closed().is_empty(), "nothing closed under a user");

    conn.provider().fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let c = conn.counters();
    assert_eq!((c.rebuilds, c.rebuild_failures), (1, 3), "the next retry (10.75 s) rebuilt it");
    assert_eq!(conn.get().await.unwrap().id, 2);
    assert_eq!(conn.provider().closed(), vec![1]);
    assert!(log_text().contains("rebuilding the connection ahead of its credentials' expiry failed"));
}

#[tokio::test(start_paused = true)]
async fn a_close_during_a_rebuild_closes_both_clients_once() {
    let conn = Conn::new("token", Expiring::new(Duration::from_secs(10)));
    assert_eq!(conn.get().await.unwrap().id, 1);
    *conn.provider().connect_delay.lock().unwrap() = Duration::from_secs(1);

    // The rebuild starts at 9 s and connects until 10 s; the handle is closed at 9.5 s.
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    conn.close().await;
    assert_eq!(conn.provider().closed(), vec![1]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(conn.provider().closed(), vec![1, 2], "the unwanted replacement is closed, once");
    assert!(!conn.is_connected());
    assert_eq!(conn.counters().rebuilds, 0);

    // The handle still works: the next use connects.
    *conn.provider().connect_delay.lock().unwrap() = Duration::ZERO;
    assert_eq!(conn.get().await.unwrap().id, 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_handle_stops_rebuilding() {
    let provider = Expiring::new(Duration::from_secs(10));
    let connects = Arc::clone(&provider.connects);
    let conn = Conn::new("token", provider);
    conn.get().await.unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(connects.load(Ordering::SeqCst), 1, "no timer keeps a dropped handle alive or connecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_across_many_swaps_never_fail_and_each_client_closes_once() {
    let conn = Conn::new("token", Expiring::new(Duration::from_millis(200)));
    let deadline = std::time::Instant::now() + Duration::from_millis(1_500);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while std::time::Instant::now() < deadline {
                let client = conn.get().await.expect("never fails");
                tokio::time::sleep(Duration::from_millis(3)).await;
                drop(client);
                n += 1;
            }
            n
        }));
    }
    let mut uses = 0;
    for t in tasks {
        uses += t.await.unwrap();
    }
    conn.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = conn.counters();
    let mut closed = conn.provider().closed();
    closed.sort_unstable();
    closed.dedup();
    assert!(c.rebuilds >= 5, "{c:?}");
    assert_eq!(c.connects, c.rebuilds + 1, "{c:?}");
    assert_eq!(closed.len() as u64, c.connects, "every client closed: {c:?}");
    assert_eq!(conn.provider().closed().len() as u64, c.closes, "and each exactly once");
    eprintln!("{uses} uses across {} rebuilds", c.rebuilds);
}

/// A provider whose renewals hand out credentials that have already expired.
struct Stale {
    renewals: AtomicU64,
}

impl Provider for Stale {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    async fn is_open(&self, _: &()) -> bool {
        true
    }
    fn expires_at(&self, _: &()) -> Option<Instant> {
        let renewed = self.renewals.load(Ordering::SeqCst) > 0;
        Some(if renewed {
            Instant::now() - Duration::from_secs(1)
        } else {
            Instant::now() + Duration::from_millis(100)
        })
    }
    async fn renew(&self, _: &()) -> Result<connscope::Renewal, std::io::Error> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        Ok(connscope::Renewal::InPlace(Some(Instant::now() - Duration::from_secs(1))))
    }
}

/// Renewed credentials that expire at once are asked for again after a growing backoff (50,
/// 100, 200 ms…), not in a loop that would hammer the credential source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_renewed_already_expired_are_asked_again_after_a_backoff_not_in_a_loop() {
    let conn = Conn::new("stale", Stale { renewals: AtomicU64::new(0) });
    drop(conn.get().await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let renewals = conn.provider().renewals.load(Ordering::SeqCst);
    assert!((2..=6).contains(&renewals), "{renewals} renewals in 600 ms");
    assert_eq!(conn.counters().renewals, renewals);
    conn.close().await;
}

/// A provider whose clients' credentials have expired by the time they connect.
struct ExpiredAtBirth {
    connects: AtomicU64,
}

impl Provider for ExpiredAtBirth {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn is_open(&self, _: &()) -> bool {
        true
    }
    fn expires_at(&self, _: &()) -> Option<Instant> {
        Some(Instant::now() - Duration::from_secs(1))
    }
}

/// A client whose credentials expired as it connected is rebuilt after the backoff (50 ms),
/// not at once in a loop of connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expired_at_birth_is_rebuilt_after_a_backoff_not_in_a_loop() {
    let conn = Conn::new("expired", ExpiredAtBirth { connects: AtomicU64::new(0) });
    drop(conn.get().await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let connects = conn.provider().connects.load(Ordering::SeqCst);
    assert!((2..=14).contains(&connects), "{connects} connects in 600 ms");
    conn.close().await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use connscope::sql::{ConnectCause, SqlError, SqliteDb};
    use connscope::{CredentialSource, CredentialsError, Fetched};

    fn db_file(tag: &str) -> String {
        let path = std::env::temp_dir().join(format!("{}.db", sql_support::unique(tag)));
        format!("sqlite://{}?mode=rwc", path.display())
    }

    #[tokio::test]
    async fn the_source_is_asked_ahead_of_each_expiry_and_the_pool_renewed_in_place() {
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&fetches);
        let db = SqliteDb::new(db_file("rotate"))
            .with_credentials(CredentialSource::from_fn(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Fetched::new(format!("tok-sqlite-{n}"))) }
            }))
            .with_credentials_lifetime(Duration::from_millis(300));
        let conn = Conn::new("rotating", db);
        let until = std::time::Instant::now() + Duration::from_millis(1_000);
        while std::time::Instant::now() < until {
            let row = conn.query("select 1").uncached().fetch_one::<(i64,)>().await.unwrap();
            assert_eq!(row.0, 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = conn.counters();
        assert!(c.renewals >= 2, "{c:?}");
        assert_eq!((c.connects, c.rebuilds), (1, 0), "the pool kept: {c:?}");
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            c.connects + c.renewals,
            "one fetch per connect and renewal: {c:?}"
        );
        conn.close().await;
        assert_eq!(conn.counters().closes, conn.counters().connects);
    }

    /// Fresh credentials for another user (Vault's dynamic secrets) need a new pool: the
    /// renewal turns into a rebuild, and each drained pool is closed once.
    #[tokio::test]
    async fn credentials_for_another_user_rebuild_the_pool() {
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&fetches);
        let db = SqliteDb::new(db_file("users")).with_credentials(CredentialSource::from_fn(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(Fetched::new(format!("tok-user-{n}"))
                    .with_user(format!("v-user-{n}"))
                    .expires_in(Duration::from_millis(300)))
            }
        }));
        let conn = Conn::new("users", db);
        let until = std::time::Instant::now() + Duration::from_millis(1_000);
        while std::time::Instant::now() < until {
            conn.query("select 1").uncached().fetch_one::<(i64,)>().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = conn.counters();
        assert!(c.rebuilds >= 2 && c.renewals == 0, "{c:?}");
        // Each renewal fetched once and found another user; each rebuild fetched once more.
        // (A renewal may be between its fetch and its rebuild as the counters are read.)
        let fetched = fetches.load(Ordering::SeqCst);
        assert!((1 + 2 * c.rebuilds..=3 + 2 * c.rebuilds).contains(&fetched), "{fetched} fetches: {c:?}");
        conn.close().await;
        let closed = sql_support::eventually(Duration::from_secs(5), async || {
            let c = conn.counters();
            c.closes == c.connects
        })
        .await;
        assert!(closed, "{:?}", conn.counters());
    }

    /// A rebuilt pool's replacement opens as many connections as the old pool had open, not
    /// `max_connections`: the server opens and closes no more connections per rebuild than the
    /// app uses.
    #[tokio::test]
    async fn a_rebuilt_pool_opens_as_many_connections_as_the_old_one_had() {
        let issued = Arc::new(AtomicU64::new(0));
        let db = SqliteDb::new(db_file("sized")).with_credentials(CredentialSource::from_fn(move || {
            let n = issued.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(Fetched::new("tok-sized")
                    .with_user(format!("v-{n}"))
                    .expires_in(Duration::from_millis(400)))
            }
        }));
        let mut db = db;
        db.max_connections = 8;
        let conn = Conn::new("sized", db);
        {
            // Three connections in use at once: the pool opens three.
            let client = conn.get().await.unwrap();
            let held =
                [client.pool().acquire().await, client.pool().acquire().await, client.pool().acquire().await];
            assert!(held.iter().all(Result::is_ok));
            assert_eq!(client.pool().size(), 3);
        }
        let rebuilt =
            sql_support::eventually(Duration::from_secs(5), async || conn.counters().rebuilds >= 1).await;
        assert!(rebuilt, "{:?}", conn.counters());
        let size = conn.get().await.unwrap().pool().size();
        assert_eq!(size, 3, "the replacement opened what the old pool had open, not 8");
        conn.close().await;
    }

    #[tokio::test]
    async fn a_failing_source_is_a_connect_error_that_quotes_no_output() {
        let db = SqliteDb::new(db_file("failing")).with_credentials(CredentialSource::command(
            "echo tok-leak-4242; echo tok-leak-4242 >&2; exit 7",
        ));
        let debug = format!("{db:?}");
        assert!(debug.contains("Command(\"echo\""), "{debug}");
        assert!(!debug.contains("tok-leak"), "{debug}");
        let conn = Conn::new("failing", db);
        let err = conn.query("select 1").fetch_one::<(i64,)>().await.unwrap_err();
        assert_eq!(err.connect_cause(), Some(ConnectCause::Credentials), "{err}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("`echo`") && !text.contains("tok-leak-4242"), "{text}");

        let closure =
            SqliteDb::new(db_file("closure")).with_credentials(CredentialSource::from_fn(|| async {
                Err(CredentialsError::new("the vault agent", "sealed"))
            }));
        let err = Conn::new("c", closure).get().await.unwrap_err();
        assert!(format!("{err:#}").contains("credential source failed"), "{err:#}");
        let _: Option<SqlError> = None;
    }

    #[tokio::test]
    async fn a_configured_command_source_rotates_a_named_connection_of_the_runtime() {
        let rt = sql_support::runtime(&[
            ("ledger", "url", db_file("named").into()),
            ("ledger", "password_command", "printf 'tok-cmd-31\\n'".into()),
            ("ledger", "credentials_lifetime", "300ms".into()),
        ]);
        let conn = rt.connection::<SqliteDb>("ledger").await.unwrap();
        let until = std::time::Instant::now() + Duration::from_millis(800);
        while std::time::Instant::now() < until {
            conn.query("select 1").uncached().fetch_one::<(i64,)>().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = conn.counters();
        assert!(c.renewals >= 1 && c.connects == 1 && c.rebuilds == 0, "{c:?}");
        sql_support::shut_down(&rt, 1).await;
        let c = conn.counters();
        assert_eq!(
            c.closes, c.connects,
            "shutdown closed the current pool, the drained ones were closed once: {c:?}"
        );
        assert!(!log_text().contains("tok-cmd-31"));
    }

    #[tokio::test]
    async fn an_in_memory_database_is_never_rebuilt() {
        let db = SqliteDb::new("sqlite::memory:").with_credentials_lifetime(Duration::from_millis(100));
        let conn = Conn::new("memory", db);
        conn.execute("create table t (x integer)").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.execute("insert into t values (1)").await.unwrap();
        assert_eq!(conn.counters().rebuilds, 0, "rebuilding would empty it");
    }

    #[test]
    fn sources_are_configured_from_the_connection_section_and_never_printed() {
        let section: toml::Table = toml::from_str(
            "url = 'sqlite::memory:'\npassword = 'tok-field-77'\npassword_command = 'vault read -field=password x'\n\
             credentials_lifetime = '14m'",
        )
        .unwrap();
        let db: SqliteDb = section.try_into().unwrap();
        use connscope::sql::SqlProvider;
        assert_eq!(db.credentials_lifetime(), Some(Duration::from_secs(14 * 60)));
        assert_eq!(db.credentials(), Some(CredentialSource::command("vault read -field=password x")));
        let debug = format!("{db:?}");
        assert!(!debug.contains("tok-field-77") && !debug.contains("-field=password"), "{debug}");
        for (key, value, expected) in [
            ("password_file", "/run/secrets/db", CredentialSource::file("/run/secrets/db")),
            ("password_env", "DB_TOKEN", CredentialSource::env("DB_TOKEN")),
        ] {
            let mut s: toml::Table = toml::from_str("url = 'sqlite::memory:'").unwrap();
            s.insert(key.into(), value.into());
            let db: SqliteDb = s.try_into().unwrap();
            assert_eq!(db.credentials(), Some(expected));
        }
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_rotation_needs_the_postgres_feature() {
    sql_support::loud(
        "SKIPPED credentials (PostgreSQL): build with `--features postgres` (or --all-features)",
    );
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use connscope::sql::{ConnectCause, PostgresDb};
    use connscope::{CredentialSource, Fetched};
    use sqlx::{Connection, PgConnection};

    use rotation_support::pg::{exec, url_as as as_role};

    /// The role `.ci/run` makes PostgreSQL check the password of.
    const ROLE: &str = "connscope_rotating";

    async fn role_with_password(admin: &mut PgConnection, url: &str, role: &str, password: &str) -> bool {
        rotation_support::pg::role_with_password("credentials", admin, url, role, password).await
    }

    #[tokio::test]
    async fn an_auth_failure_fetches_fresh_credentials_once_before_reporting_auth() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials auth retry") else { return };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let role = "connscope_rot_auth";
        if !role_with_password(&mut admin, &url, role, "tok-right-5150").await {
            return;
        }
        // First fetch: a stale password; the retry's fetch: the right one.
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&fetches);
        let db = PostgresDb::new(as_role(&url, role, "auth_retry")).with_credentials(
            CredentialSource::from_fn(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Fetched::new(if n == 0 { "tok-stale-5150" } else { "tok-right-5150" })) }
            }),
        );
        let conn = Conn::new("auth_retry", db);
        let row = conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
        assert_eq!((row.0, fetches.load(Ordering::SeqCst)), (1, 2));
        conn.close().await;

        // Always wrong: fetched twice, then `Auth`, with no password anywhere.
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&fetches);
        let db = PostgresDb::new(as_role(&url, role, "auth_fail")).with_credentials(
            CredentialSource::from_fn(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Fetched::new("tok-wrong-6160")) }
            }),
        );
        let conn = Conn::new("auth_fail", db);
        let err = conn.query("select 1").fetch_one::<(i32,)>().await.unwrap_err();
        assert_eq!(err.connect_cause(), Some(ConnectCause::Auth), "{err}");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tracing::error!(error = %err, details = ?err, settings = ?conn.provider(), "connect failed");
        let text = format!("{err} {err:?} {:?} {}", conn.provider(), log_text());
        for secret in ["tok-right-5150", "tok-stale-5150", "tok-wrong-6160"] {
            assert!(!text.contains(secret), "{secret} printed: {text}");
        }
        exec(&mut admin, format!("drop role if exists {role}")).await;
    }

    /// A connection as `role` (created with `password`, checked by the server) whose credential
    /// source hands out the password the test last set, declared to last `lifetime`; its
    /// fetches counted, its backends named `app`. Connected once. `None` when the server does
    /// not check the role's password.
    struct Rotating {
        conn: Conn<PostgresDb>,
        role: &'static str,
        current: Arc<Mutex<String>>,
        fetches: Arc<AtomicU64>,
        app: String,
    }

    impl Rotating {
        async fn new(
            admin: &mut PgConnection,
            url: &str,
            role: &'static str,
            password: &str,
            lifetime: Duration,
            max_connections: u32,
        ) -> Option<Rotating> {
            if !role_with_password(admin, url, role, password).await {
                return None;
            }
            let (current, fetches) = (Arc::new(Mutex::new(password.to_owned())), Arc::new(AtomicU64::new(0)));
            let source = {
                let (current, fetches) = (Arc::clone(&current), Arc::clone(&fetches));
                CredentialSource::from_fn(move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let password = current.lock().unwrap().clone();
                    async move { Ok(Fetched::new(password).expires_in(lifetime)) }
                })
            };
            let app = sql_support::unique(role);
            let mut db = PostgresDb::new(as_role(url, role, &app)).with_credentials(source);
            db.max_connections = max_connections;
            let conn = Conn::new(role, db);
            conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
            Some(Rotating { conn, role, current, fetches, app })
        }

        /// Sets the role's password on the server, then in the source.
        async fn rotate(&self, admin: &mut PgConnection, password: &str) {
            exec(admin, format!("alter role {} password '{password}'", self.role)).await;
            *self.current.lock().unwrap() = password.to_owned();
        }

        fn fetches(&self) -> u64 {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    async fn end_backends(admin: &mut PgConnection, app: &str) {
        exec(
            admin,
            format!(
                "select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{app}'"
            ),
        )
        .await;
        let gone = sql_support::eventually(Duration::from_secs(5), async || {
            rotation_support::pg::backends_of(admin, app).await == 0
        })
        .await;
        assert!(gone, "the pool's backends ended");
    }

    /// Ends every backend of the pool named `app`, then queries through `conn`: the queries
    /// reconnect, so they log in with the credentials the pool holds now.
    async fn reconnect_after_every_backend_ended(
        admin: &mut PgConnection,
        conn: &Conn<PostgresDb>,
        app: &str,
    ) {
        end_backends(admin, app).await;
        for _ in 0..4 {
            conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
        }
        let sql = conn.sql_stats();
        assert!(sql.reconnects >= 1, "the queries reconnected: {sql:?}");
    }

    /// Renewed in place, the pool keeps its connections and opens later ones with the fresh
    /// password: after a rotation and a renewal, every backend is ended, and the queries that
    /// follow reconnect with the new password, without a rebuild.
    #[tokio::test]
    async fn a_renewed_pool_reconnects_with_the_fresh_password() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials renewal") else { return };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let lifetime = Duration::from_millis(600);
        let Some(r) =
            Rotating::new(&mut admin, &url, "connscope_rot_renew", "tok-renew-1", lifetime, 2).await
        else {
            return;
        };
        let conn = &r.conn;
        r.rotate(&mut admin, "tok-renew-2").await;
        let renewed = conn.counters().renewals;
        let again =
            sql_support::eventually(Duration::from_secs(5), async || conn.counters().renewals > renewed)
                .await;
        assert!(again, "renewed after the rotation: {:?}", conn.counters());
        reconnect_after_every_backend_ended(&mut admin, conn, &r.app).await;
        let c = conn.counters();
        assert_eq!((c.connects, c.rebuilds, c.rebuild_failures), (1, 0, 0), "{c:?}");
        conn.close().await;
        exec(&mut admin, format!("drop role if exists {}", r.role)).await;
        no_secret_logged(&["tok-renew-1".into(), "tok-renew-2".into()]);
    }

    /// A Kubernetes-mounted secret rotated: the password file changes, and the pool's
    /// credentials are renewed in place from it (no rebuild: no session opened or closed for
    /// it); connections opened later log in with the new password.
    #[tokio::test]
    async fn a_changed_password_file_renews_the_pool_in_place() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "password file renewal") else { return };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let role = "connscope_rot_file";
        if !role_with_password(&mut admin, &url, role, "file-pw-7101").await {
            return;
        }
        let file = std::env::temp_dir().join(format!("connscope-pwfile-{}", std::process::id()));
        std::fs::write(&file, "file-pw-7101\n").unwrap();
        let app = sql_support::unique(role);
        let mut db =
            PostgresDb::new(as_role(&url, role, &app)).with_credentials(CredentialSource::file(&file));
        db.max_connections = 2;
        let conn = Conn::new(role, db);
        conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();

        exec(&mut admin, format!("alter role {role} password 'file-pw-7102'")).await;
        let next = file.with_extension("next");
        std::fs::write(&next, "file-pw-7102\n").unwrap();
        std::fs::rename(&next, &file).unwrap();
        // Polled every second (the default): renewed within a few.
        let renewed =
            sql_support::eventually(Duration::from_secs(10), async || conn.counters().renewals == 1).await;
        assert!(renewed, "renewed after the file changed: {:?}", conn.counters());
        reconnect_after_every_backend_ended(&mut admin, &conn, &app).await;
        let c = conn.counters();
        assert_eq!((c.connects, c.rebuilds, c.closes, c.rebuild_failures), (1, 0, 0, 0), "{c:?}");
        conn.close().await;
        exec(&mut admin, format!("drop role if exists {role}")).await;
        let _ = std::fs::remove_file(&file);
        assert!(log_text().contains("credentials renewed in place because its credentials file changed"));
        no_secret_logged(&["file-pw-7101".into(), "file-pw-7102".into()]);
    }

    /// Credentials rotated away before their declared expiry: a connect the pool makes later is
    /// refused, and connscope fetches fresh credentials once and tries again, for the pool's
    /// own connects and for a query's retry on a fresh connection alike.
    #[tokio::test]
    async fn a_refused_pooled_connect_fetches_fresh_credentials_once_more() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials refusal") else { return };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        // Declared to last an hour: no renewal comes in this test.
        let lifetime = Duration::from_secs(3600);
        let Some(r) =
            Rotating::new(&mut admin, &url, "connscope_rot_refused", "tok-refused-1", lifetime, 1).await
        else {
            return;
        };
        let conn = &r.conn;
        assert_eq!(r.fetches(), 1);

        // The pool's own connect: its one connection taken out and closed, the password
        // rotated; the next query makes the pool connect with the stale one.
        conn.get().await.unwrap().pool().acquire().await.unwrap().close().await.unwrap();
        r.rotate(&mut admin, "tok-refused-2").await;
        conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
        assert_eq!(r.fetches(), 2, "fetched once more");

        // A query's retry: its connection ended, the password rotated again; the retry's
        // direct connect is refused, and tried once more with fresh credentials.
        r.rotate(&mut admin, "tok-refused-3").await;
        end_backends(&mut admin, &r.app).await;
        conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
        assert_eq!(r.fetches(), 3, "fetched once more");
        let (c, sql) = (conn.counters(), conn.sql_stats());
        assert_eq!((c.connects, c.rebuilds), (1, 0), "{c:?}");
        assert_eq!((sql.retries, sql.errors), (1, 0), "{sql:?}");

        // Always refused: fetched once more, then the query reports `Auth`.
        exec(&mut admin, format!("alter role {} password 'tok-refused-4'", r.role)).await;
        end_backends(&mut admin, &r.app).await;
        let err = conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap_err();
        assert_eq!(err.connect_cause(), Some(ConnectCause::Auth), "{err}");
        assert_eq!(r.fetches(), 4);
        conn.close().await;
        exec(&mut admin, format!("drop role if exists {}", r.role)).await;
        no_secret_logged(&[
            "tok-refused-1".into(),
            "tok-refused-2".into(),
            "tok-refused-3".into(),
            "tok-refused-4".into(),
        ]);
    }

    /// Many connects refused at once (every backend ended after a rotation, 8 queries in
    /// flight): one fetch serves them all, and no query fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_refused_connects_fetch_fresh_credentials_once() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials refusals at once") else {
            return;
        };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let lifetime = Duration::from_secs(3600);
        let Some(r) = Rotating::new(&mut admin, &url, "connscope_rot_herd", "tok-herd-1", lifetime, 8).await
        else {
            return;
        };
        r.rotate(&mut admin, "tok-herd-2").await;
        end_backends(&mut admin, &r.app).await;
        let queries: Vec<_> = (0..8)
            .map(|_| {
                let conn = r.conn.clone();
                tokio::spawn(async move {
                    conn.query("select 1").uncached().fetch_one::<(i32,)>().await.map(drop)
                })
            })
            .collect();
        for q in queries {
            q.await.unwrap().unwrap();
        }
        assert_eq!(r.fetches(), 2, "the first connect, then one fetch for all");
        let c = r.conn.counters();
        assert_eq!((c.connects, c.rebuilds), (1, 0), "{c:?}");
        r.conn.close().await;
        exec(&mut admin, format!("drop role if exists {}", r.role)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queries_never_fail_while_the_password_rotates_every_second() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials rotation soak") else { return };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let first = sql_support::unique("tok-rot");
        let enforced = role_with_password(&mut admin, &url, ROLE, &first).await;

        let current = Arc::new(Mutex::new(first.clone()));
        let source = {
            let current = Arc::clone(&current);
            CredentialSource::from_fn(move || {
                let password = current.lock().unwrap().clone();
                async move { Ok(Fetched::new(password).expires_in(Duration::from_secs(2))) }
            })
        };
        let app = sql_support::unique("rotation");
        let mut db = PostgresDb::new(as_role(&url, ROLE, &app)).with_credentials(source);
        db.max_connections = 8;
        let passwords = Arc::new(Mutex::new(vec![first]));
        let rotate = {
            let (current, passwords, url) = (Arc::clone(&current), Arc::clone(&passwords), url.clone());
            move || {
                let (current, passwords, url) = (Arc::clone(&current), Arc::clone(&passwords), url.clone());
                async move {
                    let mut admin = PgConnection::connect(&url).await.unwrap();
                    let next = sql_support::unique("tok-rot");
                    exec(&mut admin, format!("alter role {ROLE} password '{next}'")).await;
                    *current.lock().unwrap() = next.clone();
                    passwords.lock().unwrap().push(next);
                    let _ = admin.close().await;
                }
            }
        };
        let query = |conn: Conn<PostgresDb>| async move {
            conn.query("select 1").uncached().fetch_one::<(i32,)>().await.map(drop).map_err(|e| e.to_string())
        };
        let label = format!("PostgreSQL password rotation (password enforced: {enforced})");
        soak(&label, Conn::new("rotating", db), query, rotate, Expect::Renewals).await;
        // A server ends a connection shortly after its client closed it.
        let none_left = sql_support::eventually(Duration::from_secs(5), async || {
            rotation_support::pg::backends_of(&mut admin, &app).await == 0
        })
        .await;
        assert!(none_left, "no backend left open");
        no_secret_logged(&passwords.lock().unwrap());
    }

    /// Vault-like: every rotation creates a new role with its own password; the old role is
    /// dropped once no backend uses it any more (its pool was drained and closed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queries_never_fail_while_the_user_name_rotates_too() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "credentials user rotation soak") else {
            return;
        };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let new_role = || (sql_support::unique("connscope_rot_v"), sql_support::unique("tok-vault"));
        let (role, password) = new_role();
        let enforced = role_with_password(&mut admin, &url, &role, &password).await;
        let current = Arc::new(Mutex::new((role.clone(), password.clone())));
        let source = {
            let current = Arc::clone(&current);
            CredentialSource::from_fn(move || {
                let (user, password) = current.lock().unwrap().clone();
                async move { Ok(Fetched::new(password).with_user(user).expires_in(Duration::from_secs(2))) }
            })
        };
        let app = sql_support::unique("vault");
        let mut db = PostgresDb::new(as_role(&url, "nobody_in_particular", &app)).with_credentials(source);
        db.max_connections = 8;
        let retired = Arc::new(Mutex::new(Vec::<String>::new()));
        let (dropped, passwords) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(vec![password])));
        let rotate = {
            let (current, retired, dropped, passwords, url) = (
                Arc::clone(&current),
                Arc::clone(&retired),
                Arc::clone(&dropped),
                Arc::clone(&passwords),
                url.clone(),
            );
            move || {
                let (current, retired, dropped, passwords, url) = (
                    Arc::clone(&current),
                    Arc::clone(&retired),
                    Arc::clone(&dropped),
                    Arc::clone(&passwords),
                    url.clone(),
                );
                async move {
                    let mut admin = PgConnection::connect(&url).await.unwrap();
                    let (role, password) =
                        (sql_support::unique("connscope_rot_v"), sql_support::unique("tok-vault"));
                    role_with_password(&mut admin, &url, &role, &password).await;
                    let old = std::mem::replace(&mut *current.lock().unwrap(), (role, password.clone())).0;
                    passwords.lock().unwrap().push(password);
                    retired.lock().unwrap().push(old);
                    drop_drained(&mut admin, &retired, &dropped).await;
                    let _ = admin.close().await;
                }
            }
        };
        let query = |conn: Conn<PostgresDb>| async move {
            conn.query("select 1").uncached().fetch_one::<(i32,)>().await.map(drop).map_err(|e| e.to_string())
        };
        let label =
            format!("PostgreSQL user and password rotation, Vault-like (password enforced: {enforced})");
        soak(&label, Conn::new("vault", db), query, rotate, Expect::Rebuilds).await;
        drop_drained(&mut admin, &retired, &dropped).await;
        let (role, _) = current.lock().unwrap().clone();
        exec(&mut admin, format!("drop role if exists {role}")).await;
        let dropped = dropped.load(Ordering::SeqCst);
        sql_support::loud(&format!("Vault-like: {dropped} retired roles dropped after their drain"));
        assert!(retired.lock().unwrap().is_empty(), "every retired role drained and dropped");
        no_secret_logged(&passwords.lock().unwrap());
    }

    /// Drops the retired roles no backend uses any more.
    async fn drop_drained(admin: &mut PgConnection, retired: &Mutex<Vec<String>>, dropped: &AtomicU64) {
        let roles = retired.lock().unwrap().clone();
        for role in roles {
            let (n,): (i64,) = sqlx::query_as("select count(*) from pg_stat_activity where usename = $1")
                .bind(&role)
                .fetch_one(&mut *admin)
                .await
                .unwrap();
            if n == 0 {
                exec(admin, format!("drop role if exists {role}")).await;
                retired.lock().unwrap().retain(|r| r != &role);
                dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// What a soak's connection does ahead of each expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The same user, a new password: the pool is renewed in place (no connect, no close).
    Renewals,
    /// A new user each time: the pool is rebuilt, the old one drained and closed.
    Rebuilds,
}

/// Runs 8 tasks issuing `query` through `conn` (credentials declared to expire after 2 s) for
/// `ROTATION_SOAK_SECS` (default 20) seconds while `rotate` runs every second; asserts zero
/// failed queries, a renewal or rebuild (`expect`) ahead of each expiry, and every pool closed
/// exactly once; prints the figures.
async fn soak<P, Q, QF, R, RF>(label: &str, conn: Conn<P>, query: Q, mut rotate: R, expect: Expect)
where
    P: Provider,
    Q: Fn(Conn<P>) -> QF + Clone + Send + 'static,
    QF: std::future::Future<Output = Result<(), String>> + Send,
    R: FnMut() -> RF + Send + 'static,
    RF: std::future::Future<Output = ()> + Send,
{
    let secs = std::env::var("ROTATION_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20u64);
    // Connected before the clock starts: the figures are about swaps, not the first connect.
    query(conn.clone()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let rotator = tokio::spawn(async move {
        let mut rotations = 0u64;
        while std::time::Instant::now() + Duration::from_secs(1) < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rotate().await;
            rotations += 1;
        }
        rotations
    });
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (conn, query) = (conn.clone(), query.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut samples) = (0u64, Vec::new(), Vec::new());
            while std::time::Instant::now() < deadline {
                let t0 = std::time::Instant::now();
                match query(conn.clone()).await {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                samples.push((t0, t0.elapsed()));
                // Busy, not saturated: a 2-core CI machine must still run the rebuild.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (ok, failed, samples)
        }));
    }
    let (mut ok, mut failed, mut samples) = (0, Vec::new(), Vec::new());
    for w in workers {
        let (o, f, s) = w.await.unwrap();
        ok += o;
        failed.extend(f);
        samples.extend(s);
    }
    let rotations = rotator.await.unwrap();
    conn.close().await;
    // The last old pool finishes closing in its own task.
    let all_closed = sql_support::eventually(Duration::from_secs(10), async || {
        let c = conn.counters();
        c.closes == c.connects
    })
    .await;
    let c = conn.counters();

    let swaps = rotation_support::swaps_of(conn.name());
    let phases = rotation_support::Phases::of(&samples, &swaps);
    let note = format!(
        "{label}, {secs} s: {ok} queries ok, {} failed; {rotations} rotations; {} renewals in place, {} rebuilds, \
         {} failures; connects {}, closes {} (old pools drained and closed: {}); {}; {c:?}",
        failed.len(),
        c.renewals,
        c.rebuilds,
        c.rebuild_failures,
        c.connects,
        c.closes,
        c.closes.saturating_sub(1),
        phases.summary(&swaps),
    );
    sql_support::loud(&note);
    assert!(failed.is_empty(), "{} failed queries, first: {:?}", failed.len(), failed.first());
    match expect {
        Expect::Renewals => {
            assert!(c.renewals >= secs * 4 / 10, "a renewal about every 1.8 s: {note}");
            assert_eq!((c.connects, c.rebuilds), (1, 0), "renewed in place, never reconnected: {note}");
        }
        Expect::Rebuilds => {
            assert!(c.rebuilds >= secs * 4 / 10, "a rebuild about every 1.8 s: {note}");
            // The first connect and one per rebuild; plus, at most, one replacement that was
            // still connecting when the handle was closed at the end (closed at once, unused).
            assert!((1..=2).contains(&(c.connects - c.rebuilds)), "{note}");
        }
    }
    assert!(all_closed, "every pool closed: {note}");
    assert_eq!(c.closes, c.connects, "each exactly once: {note}");
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use connscope::sql::MySqlDb;
    use connscope::{CredentialSource, Fetched};
    use rotation_support::my;
    use sqlx::{Connection, MySqlConnection};

    const USER: &str = "connscope_rotating";

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mariadb_queries_never_fail_while_the_password_rotates_every_second() {
        let Some(url) = sql_support::server_url("MYSQL_URL", "credentials MariaDB rotation soak") else {
            return;
        };
        let _ = logs();
        let mut admin = MySqlConnection::connect(&url).await.unwrap();
        let first = sql_support::unique("tok-my");
        let db_url = my::user_with_password(&mut admin, &url, USER, &first).await;

        let current = Arc::new(Mutex::new(first.clone()));
        let source = {
            let current = Arc::clone(&current);
            CredentialSource::from_fn(move || {
                let password = current.lock().unwrap().clone();
                async move { Ok(Fetched::new(password).expires_in(Duration::from_secs(2))) }
            })
        };
        let mut db = MySqlDb::new(db_url).with_credentials(source);
        db.max_connections = 8;
        let passwords = Arc::new(Mutex::new(vec![first]));
        let rotate = {
            let (current, passwords, url) = (Arc::clone(&current), Arc::clone(&passwords), url.clone());
            move || {
                let (current, passwords, url) = (Arc::clone(&current), Arc::clone(&passwords), url.clone());
                async move {
                    let mut admin = MySqlConnection::connect(&url).await.unwrap();
                    let next = sql_support::unique("tok-my");
                    my::set_password(&mut admin, USER, &next).await;
                    *current.lock().unwrap() = next.clone();
                    passwords.lock().unwrap().push(next);
                    let _ = admin.close().await;
                }
            }
        };
        let query = |conn: Conn<MySqlDb>| async move {
            conn.query("select 1").uncached().fetch_one::<(i64,)>().await.map(drop).map_err(|e| e.to_string())
        };
        soak("MariaDB password rotation", Conn::new("rotating_mariadb", db), query, rotate, Expect::Renewals)
            .await;
        // A server ends a connection shortly after its client closed it.
        let none_left = sql_support::eventually(Duration::from_secs(5), async || {
            my::connections_of(&mut admin, USER).await == 0
        })
        .await;
        assert!(none_left, "no connection left open");
        my::drop_user(&mut admin, USER).await;
        no_secret_logged(&passwords.lock().unwrap());
    }
}
