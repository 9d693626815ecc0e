//! `Conn::run`: an operation on the live client, run once more on a fresh client when its own
//! was lost (`Provider::is_lost`, or `is_open` reporting it closed after the failure). In
//! memory (exact counts, cancellation, concurrency) and against a real PostgreSQL server whose
//! backend is terminated under a one-connection provider.

mod sql_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use connscope::{Conn, Error, HealthCheck, Provider, RunError};
use tokio::sync::Notify;

/// A client that works until the backend "drops" it (`Backend::drop_clients`).
struct Client {
    serial: u64,
    generation: u64,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("connection reset")]
    Reset,
    #[error("refused by the server")]
    Refused,
}

/// The backend: drops every client connected before `drop_clients`; counts what happens.
#[derive(Default)]
struct Backend {
    generation: AtomicU64,
    connects: AtomicU64,
    closes: AtomicU64,
    checks: AtomicU64,
    /// Whether `is_lost` classifies a reset as lost (else only `is_open` can tell).
    classifies: AtomicBool,
    /// `is_open` waits for `release_check` while set, after signalling `checking`.
    hold_checks: AtomicBool,
    checking: Notify,
    release_check: Notify,
}

impl Backend {
    fn drop_clients(&self) {
        self.generation.fetch_add(1, SeqCst);
    }
    fn alive(&self, c: &Client) -> bool {
        c.generation == self.generation.load(SeqCst)
    }
    /// A read: fails with `Reset` on a dropped client.
    fn read(&self, c: &Client) -> Result<u64, Failure> {
        if self.alive(c) { Ok(c.serial) } else { Err(Failure::Reset) }
    }
}

struct Flaky(Arc<Backend>);

impl Provider for Flaky {
    type Raw = Client;
    type Error = Failure;
    async fn connect(&self) -> Result<Client, Failure> {
        let b = &self.0;
        let serial = b.connects.fetch_add(1, SeqCst) + 1;
        Ok(Client { serial, generation: b.generation.load(SeqCst) })
    }
    async fn is_open(&self, c: &Client) -> bool {
        let b = &self.0;
        b.checks.fetch_add(1, SeqCst);
        if b.hold_checks.load(SeqCst) {
            let released = b.release_check.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            b.checking.notify_waiters();
            released.await;
        }
        b.alive(c)
    }
    async fn close(&self, _c: &Client) {
        self.0.closes.fetch_add(1, SeqCst);
    }
    fn is_lost(&self, err: &Failure) -> bool {
        matches!(err, Failure::Reset) && self.0.classifies.load(SeqCst)
    }
}

fn flaky(classifies: bool, health: HealthCheck) -> (Conn<Flaky>, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    backend.classifies.store(classifies, SeqCst);
    let conn = Conn::with_policy("flaky", Flaky(Arc::clone(&backend)), health, true, Duration::from_secs(10));
    (conn, backend)
}

async fn read(conn: &Conn<Flaky>, backend: &Arc<Backend>) -> Result<u64, RunError<Failure>> {
    let b = Arc::clone(backend);
    conn.run(move |c| {
        let b = Arc::clone(&b);
        async move { b.read(&c) }
    })
    .await
}

/// Waits (Tokio time) until `f` holds; every wait in these tests is for an event.
async fn until(mut f: impl FnMut() -> bool) -> bool {
    let wait = async {
        while !f() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn an_error_the_provider_calls_lost_is_retried_once_on_a_fresh_client() {
    let (conn, backend) = flaky(true, HealthCheck::OnError);
    assert_eq!(read(&conn, &backend).await.unwrap(), 1);
    backend.drop_clients();
    assert_eq!(read(&conn, &backend).await.unwrap(), 2, "ran again on the second client");
    let c = conn.counters();
    assert_eq!((c.connects, c.reconnects, c.retries), (2, 1, 1));
    assert_eq!(c.health_checks, 0, "the provider said lost: no round trip to ask `is_open`");
    assert!(until(|| backend.closes.load(SeqCst) == 1).await, "the lost client closed, once");
    assert_eq!(read(&conn, &backend).await.unwrap(), 2);
    assert_eq!(conn.counters().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_which_is_open_reports_closed_is_retried_too() {
    let (conn, backend) = flaky(false, HealthCheck::OnError);
    read(&conn, &backend).await.unwrap();
    backend.drop_clients();
    assert_eq!(read(&conn, &backend).await.unwrap(), 2);
    let c = conn.counters();
    assert_eq!((c.connects, c.reconnects, c.retries, c.health_checks), (2, 1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_error_on_a_live_client_is_returned_as_is_and_not_retried() {
    let (conn, backend) = flaky(true, HealthCheck::OnError);
    let runs = Arc::new(AtomicU64::new(0));
    let r = {
        let runs = Arc::clone(&runs);
        conn.run(move |_c| {
            runs.fetch_add(1, SeqCst);
            async { Err::<(), _>(Failure::Refused) }
        })
        .await
    };
    match r {
        Err(RunError::Operation { retried: false, source: Failure::Refused, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.load(SeqCst), 1);
    let c = conn.counters();
    assert_eq!((c.connects, c.reconnects, c.retries, c.health_checks), (1, 0, 0, 1));
    assert_eq!(backend.closes.load(SeqCst), 0, "a client `is_open` vouched for is kept");
}

#[tokio::test(start_paused = true)]
async fn lost_twice_in_a_row_is_returned_after_one_retry() {
    let (conn, backend) = flaky(true, HealthCheck::OnError);
    let b = Arc::clone(&backend);
    let runs = Arc::new(AtomicU64::new(0));
    let r = {
        let runs = Arc::clone(&runs);
        conn.run(move |c| {
            runs.fetch_add(1, SeqCst);
            // The backend drops every client just before each read.
            b.drop_clients();
            let result = b.read(&c);
            async move { result }
        })
        .await
    };
    assert!(matches!(r, Err(RunError::Operation { retried: true, source: Failure::Reset, .. })), "{r:?}");
    assert_eq!(runs.load(SeqCst), 2, "one retry, no more");
    assert_eq!(conn.counters().retries, 1);
    // The second client was marked broken: the next use checks it whatever the policy.
    let serial = conn.get().await.unwrap().serial;
    assert_eq!(serial, 3, "found closed by the check and replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_that_lose_one_client_replace_it_once() {
    let (conn, backend) = flaky(true, HealthCheck::OnError);
    read(&conn, &backend).await.unwrap();
    // Every task holds the first client before it is dropped.
    let gate = Arc::new(tokio::sync::Barrier::new(32));
    backend.drop_clients();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (conn, backend, gate) = (conn.clone(), Arc::clone(&backend), Arc::clone(&gate));
            tokio::spawn(async move {
                conn.run(move |c| {
                    let (backend, gate) = (Arc::clone(&backend), Arc::clone(&gate));
                    async move {
                        if c.serial == 1 {
                            gate.wait().await;
                        }
                        backend.read(&c)
                    }
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 2, "every run succeeded, on the one replacement");
    }
    let c = conn.counters();
    assert_eq!((c.connects, c.reconnects, c.retries), (2, 1, 32));
    assert!(until(|| backend.closes.load(SeqCst) == 1).await);
    tokio::task::yield_now().await;
    assert_eq!(backend.closes.load(SeqCst), 1, "closed exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_while_checking_leaves_the_client_to_be_checked_by_the_next_use() {
    let (conn, backend) = flaky(false, HealthCheck::Interval(Duration::from_secs(3600)));
    read(&conn, &backend).await.unwrap();
    backend.drop_clients();
    backend.hold_checks.store(true, SeqCst);
    let checking = backend.checking.notified();
    let run = tokio::spawn({
        let (conn, backend) = (conn.clone(), Arc::clone(&backend));
        async move { read(&conn, &backend).await }
    });
    checking.await;
    // The caller is dropped (a request timeout) while `is_open` runs after the failure.
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    backend.hold_checks.store(false, SeqCst);
    assert_eq!(conn.counters().reconnects, 0);
    // Not left broken forever: the next use checks it (despite the hour-long interval),
    // finds it closed and replaces it.
    assert_eq!(conn.get().await.unwrap().serial, 2);
    assert_eq!(conn.counters().reconnects, 1);
    assert!(until(|| backend.closes.load(SeqCst) == 1).await);
    assert_eq!(read(&conn, &backend).await.unwrap(), 2);
    conn.close().await;
    assert_eq!(backend.closes.load(SeqCst), 2, "each client closed once");
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_while_reconnecting_strands_nothing() {
    struct Slow(Arc<Backend>, Arc<Notify>);
    impl Provider for Slow {
        type Raw = Client;
        type Error = Failure;
        async fn connect(&self) -> Result<Client, Failure> {
            if self.0.connects.load(SeqCst) > 0 {
                // The reconnect hangs until the test lets it go.
                self.1.notified().await;
            }
            Flaky(Arc::clone(&self.0)).connect().await
        }
        async fn is_open(&self, c: &Client) -> bool {
            self.0.alive(c)
        }
        async fn close(&self, _c: &Client) {
            self.0.closes.fetch_add(1, SeqCst);
        }
        fn is_lost(&self, err: &Failure) -> bool {
            matches!(err, Failure::Reset)
        }
    }
    let backend = Arc::new(Backend::default());
    let go = Arc::new(Notify::new());
    let conn = Conn::with_policy(
        "slow",
        Slow(Arc::clone(&backend), Arc::clone(&go)),
        HealthCheck::OnError,
        true,
        Duration::from_secs(10),
    );
    let op = |b: Arc<Backend>| move |c: connscope::ConnRef<Slow>| std::future::ready(b.read(&c));
    conn.run(op(Arc::clone(&backend))).await.unwrap();
    backend.drop_clients();
    let r = tokio::time::timeout(Duration::from_secs(1), conn.run(op(Arc::clone(&backend)))).await;
    assert!(r.is_err(), "dropped while its reconnect hung");
    assert!(until(|| backend.closes.load(SeqCst) == 1).await, "the lost client closed anyway");
    assert!(!conn.is_connected(), "no dead client left in the handle");
    go.notify_one();
    assert_eq!(conn.run(op(Arc::clone(&backend))).await.unwrap(), 2, "the next use connects");
    conn.close().await;
    assert_eq!(backend.closes.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_login_connection_that_lost_its_client_asks_to_log_in_again() {
    let backend = Arc::new(Backend::default());
    backend.classifies.store(true, SeqCst);
    let conn = Conn::with_policy(
        "login",
        Flaky(Arc::clone(&backend)),
        HealthCheck::OnError,
        false,
        Duration::from_secs(1),
    );
    read(&conn, &backend).await.unwrap();
    backend.drop_clients();
    let r = read(&conn, &backend).await;
    assert!(matches!(r, Err(RunError::Connection(Error::LoginRequired { .. }))), "{r:?}");
    assert_eq!(backend.connects.load(SeqCst), 1, "never reconnected with wiped credentials");
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_run_needs_the_postgres_feature() {
    sql_support::loud("SKIPPED conn_run (PostgreSQL): build with `--features postgres` (or --all-features)");
}

#[cfg(feature = "postgres")]
mod pg {
    use std::time::{Duration, Instant};

    use connscope::{Conn, HealthCheck, Provider};
    use sqlx::{Connection, PgConnection};
    use tokio::sync::Mutex;

    use super::sql_support::{server_url, unique};

    /// A provider written as a user would: one PostgreSQL connection, no pool.
    struct OnePg {
        url: String,
    }

    impl Provider for OnePg {
        type Raw = Mutex<PgConnection>;
        type Error = sqlx::Error;
        async fn connect(&self) -> Result<Self::Raw, sqlx::Error> {
            Ok(Mutex::new(PgConnection::connect(&self.url).await?))
        }
        async fn is_open(&self, raw: &Self::Raw) -> bool {
            raw.lock().await.ping().await.is_ok()
        }
        async fn close(&self, raw: &Self::Raw) {
            let _ = raw.lock().await.ping().await;
        }
        /// The socket broke, or the server said it is terminating this connection (57P01
        /// admin_shutdown, class 08 connection exception): the request did not run.
        fn is_lost(&self, err: &sqlx::Error) -> bool {
            match err {
                sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(db) => {
                    db.code().is_some_and(|c| c == "57P01" || c == "57P02" || c.starts_with("08"))
                }
                _ => false,
            }
        }
    }

    async fn select_one(conn: &Conn<OnePg>) -> Result<i32, connscope::RunError<sqlx::Error>> {
        conn.run(|raw| async move {
            let mut c = raw.lock().await;
            sqlx::query_scalar::<_, i32>("select 1").fetch_one(&mut *c).await
        })
        .await
    }

    /// The same read without `run`: a handle, then the query; a failure is the caller's.
    async fn select_one_plain(conn: &Conn<OnePg>) -> Result<i32, String> {
        let raw = conn.get().await.map_err(|e| e.to_string())?;
        let mut c = raw.lock().await;
        sqlx::query_scalar::<_, i32>("select 1").fetch_one(&mut *c).await.map_err(|e| e.to_string())
    }

    /// Terminates the backends of `app` and waits (server-side, up to 5 s) until they are gone.
    async fn terminate(admin: &mut PgConnection, app: &str) -> usize {
        let killed: Vec<(bool,)> = sqlx::query_as(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity \
             where application_name = $1 and pid <> pg_backend_pid()",
        )
        .bind(app)
        .fetch_all(admin)
        .await
        .unwrap();
        killed.len()
    }

    fn tagged(url: &str, app: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={app}")
    }

    #[tokio::test]
    async fn a_one_connection_provider_survives_terminated_backends_through_run() {
        let Some(url) = server_url("DATABASE_URL", "conn_run::postgres") else { return };
        let app = unique("connscope_run");
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let conn = Conn::new("one_pg", OnePg { url: tagged(&url, &app) });
        assert_eq!(select_one(&conn).await.unwrap(), 1);

        let (mut failed, mut uses) = (0, 0);
        for round in 1..=5u64 {
            assert_eq!(terminate(&mut admin, &app).await, 1, "round {round}: its one backend terminated");
            for _ in 0..20 {
                uses += 1;
                if select_one(&conn).await.is_err() {
                    failed += 1;
                }
            }
            let c = conn.counters();
            assert_eq!(
                (c.retries, c.reconnects),
                (round, round),
                "one retry and one reconnect per termination"
            );
        }
        assert_eq!(failed, 0, "zero failed operations through `run` out of {uses}");
        assert_eq!(conn.counters().connects, 6);
        eprintln!(
            "conn_run: {uses} uses through `run` after 5 terminated backends: {failed} failed, 5 retries"
        );
        conn.close().await;
    }

    #[tokio::test]
    async fn retries_show_in_the_connection_cache_statistics() {
        use std::hash::Hash;
        let Some(url) = server_url("DATABASE_URL", "conn_run::postgres_stats") else { return };

        /// The same provider, cached by the runtime from settings given at run time.
        #[derive(connscope::Connection, Hash)]
        #[connection(name = "one_pg")]
        struct CachedPg {
            url: String,
        }
        impl Provider for CachedPg {
            type Raw = Mutex<PgConnection>;
            type Error = sqlx::Error;
            async fn connect(&self) -> Result<Self::Raw, sqlx::Error> {
                OnePg { url: self.url.clone() }.connect().await
            }
            async fn is_open(&self, raw: &Self::Raw) -> bool {
                raw.lock().await.ping().await.is_ok()
            }
            fn is_lost(&self, err: &sqlx::Error) -> bool {
                OnePg { url: String::new() }.is_lost(err)
            }
        }

        let app = unique("connscope_run_stats");
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let rt = super::sql_support::runtime(&[]);
        let conn = rt.connect(CachedPg { url: tagged(&url, &app) }).await.unwrap();
        let read = || {
            conn.run(|raw| async move {
                sqlx::query_scalar::<_, i32>("select 1").fetch_one(&mut *raw.lock().await).await
            })
        };
        assert_eq!(read().await.unwrap(), 1);
        terminate(&mut admin, &app).await;
        assert_eq!(read().await.unwrap(), 1);
        let stats = rt.connection_stats::<CachedPg>();
        assert_eq!((stats.retries, stats.reconnects), (1, 1), "{stats:?}");
        assert_eq!(rt.shutdown().await.released, 1);
    }

    /// The figure `run` improves on: the same one-connection provider used without `run`
    /// (the default health check: at most every 5 s) after its backend was terminated. Every
    /// use fails until the next health check replaces the client. Printed, and asserted
    /// against what `run` gives (zero).
    #[tokio::test]
    async fn without_run_uses_fail_until_the_next_health_check() {
        let Some(url) = server_url("DATABASE_URL", "conn_run::postgres_without_run") else { return };
        let app = unique("connscope_norun");
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let conn = Conn::with_policy(
            "one_pg",
            OnePg { url: tagged(&url, &app) },
            HealthCheck::DEFAULT,
            true,
            Duration::from_secs(10),
        );
        assert_eq!(select_one_plain(&conn).await.unwrap(), 1);
        assert_eq!(terminate(&mut admin, &app).await, 1);
        // Traffic of 10 uses a second (back to back, a failing use costs microseconds: the
        // count then only says how fast the loop spins).
        let started = Instant::now();
        let mut traffic = tokio::time::interval(Duration::from_millis(100));
        let mut failed_in_a_row = 0u64;
        loop {
            traffic.tick().await;
            if select_one_plain(&conn).await.is_ok() {
                break;
            }
            failed_in_a_row += 1;
            assert!(started.elapsed() < Duration::from_secs(15), "never recovered");
        }
        let took = started.elapsed();
        eprintln!(
            "conn_run: without `run`, {failed_in_a_row} uses (10 a second) failed in a row over {took:?} after \
             the backend was terminated (health check at most every 5 s); with `run`: 0"
        );
        assert!(failed_in_a_row > 0, "the dead client was handed out");
        assert_eq!(conn.counters().reconnects, 1, "replaced by the health check, in the end");
    }
}
