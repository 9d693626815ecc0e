//! Helpers shared by the SQL test suites: runtimes configured in code, unique names, skipping
//! loudly when a server's variable is not set.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use connscope::Runtime;

/// A runtime that reads no file and no environment, with connection `name` set in code.
pub fn runtime(settings: &[(&str, &str, toml::Value)]) -> Runtime {
    let mut b = Runtime::builder()
        .secrets_file("/nonexistent/connscope-sql-test-secrets.toml")
        .env_vars(Vec::<(String, String)>::new());
    for (name, field, value) in settings {
        b = b.connection_setting(name, field, value.clone());
    }
    b.build()
}

/// Shuts `rt` down and checks its report: every release succeeded, and at least the
/// `connections` it opened were released (cached results, released too, add to the count).
pub async fn shut_down(rt: &connscope::Runtime, connections: usize) -> connscope::ReleaseReport {
    let report = rt.shutdown().await;
    assert!(report.is_ok(), "{report:?}");
    assert!(report.released >= connections, "{connections} connection(s) to release: {report:?}");
    report
}

/// A name unique in this machine's test runs (process id + counter).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The URL in `var`, or `None` after saying loudly on stderr that the test is skipped.
pub fn server_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            loud(&format!(
                "SKIPPED {test}: needs a real server; set {var} to enable it (bash .ci/run sets it)"
            ));
            None
        }
    }
}

/// Writes straight to the process's stderr, past the test harness's output capture, so a
/// skipped suite is visible in a plain `cargo test` run.
pub fn loud(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***");
}

/// A TCP port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A TCP forwarder to a real server that can be frozen: connections stay open but no byte
/// moves (a half-open connection, as after a network partition).
pub struct Forwarder {
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(port: u16, target: &str) -> Forwarder {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, rx) = tokio::sync::watch::channel(false);
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, rx.clone()));
                tokio::spawn(pump(ro, wi, rx.clone()));
            }
        });
        Forwarder { port, frozen, task }
    }

    pub fn freeze(&self) {
        let _ = self.frozen.send(true);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            r = frozen.wait_for(|f| *f) => {
                let _ = r.is_ok();
                0
            }
        };
        if *frozen.borrow() {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Load under faults: `tasks` tasks run uncached reads of `sql` (one bind: the task-local
/// counter; the row is that value plus one) while `kill` terminates the connection's backends
/// `rounds` times. The kills follow the load's progress, not the wall clock: each round starts
/// once every task has completed `per_task / (rounds + 1)` more queries since the previous round
/// ended (so each statement a round cut has finished, retried, before the next round: a round
/// never kills a retry's fresh connection, which the promise does not cover), and the tasks
/// keep querying (at least `per_task` each) until every round is done, so every round meets a
/// loaded pool on a fast machine and a slow one alike. Returns the figures; panics on any
/// failed query.
pub async fn load_under_kills<P, K, F>(
    conn: &connscope::Conn<P>,
    sql: &'static str,
    tasks: usize,
    per_task: i64,
    rounds: usize,
    kill: K,
) -> LoadFigures
where
    P: connscope::sql::SqlProvider,
    (i64,): for<'r> sqlx::FromRow<'r, <P::Db as sqlx::Database>::Row>,
    K: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = usize> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let before = conn.sql_stats();
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
    let gap = (per_task as u64 / (rounds as u64 + 1)).max(1);
    let progress = Arc::new(tokio::sync::Notify::new());
    let kills_done = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let (done, progress, kills_done) = (done.clone(), progress.clone(), kills_done.clone());
        async move {
            let mut killed = Vec::new();
            let mut base = vec![0u64; done.len()];
            for _ in 0..rounds {
                loop {
                    let notified = progress.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if done.iter().zip(&base).all(|(d, b)| d.load(Ordering::Acquire) >= b + gap) {
                        break;
                    }
                    notified.await;
                }
                killed.push(kill().await);
                base = done.iter().map(|d| d.load(Ordering::Acquire)).collect();
            }
            kills_done.store(true, Ordering::Release);
            killed
        }
    });
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (conn, done, progress, kills_done) =
            (conn.clone(), done.clone(), progress.clone(), kills_done.clone());
        workers.spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while i < per_task || !kills_done.load(Ordering::Acquire) {
                let x = t as i64 * 1_000_000 + i;
                match conn.query(sql).bind(x).uncached().fetch_one::<(i64,)>().await {
                    Ok(row) => assert_eq!(row.0, x + 1, "a wrong answer"),
                    Err(e) => failures.push(e.to_string()),
                }
                i += 1;
                done[t].fetch_add(1, Ordering::AcqRel);
                progress.notify_waiters();
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = workers.join_next().await {
        failures.extend(r.unwrap());
    }
    let elapsed = started.elapsed();
    let killed = killer.await.unwrap();
    let after = conn.sql_stats();
    let figures = LoadFigures {
        queries: done.iter().map(|d| d.load(Ordering::Acquire)).sum(),
        failed: failures.len(),
        kill_rounds: killed.len(),
        backends_killed: killed.iter().sum(),
        rounds_that_killed: killed.iter().filter(|n| **n > 0).count(),
        connections_lost: after.connections_lost - before.connections_lost,
        retries: after.retries - before.retries,
        reconnects: after.reconnects - before.reconnects,
        elapsed,
    };
    loud(&format!("load under faults ({}): {figures:?}", <P::Db as connscope::sql::Backend>::KIND));
    assert!(
        failures.is_empty(),
        "{} failed queries, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    figures
}

/// What [`load_under_kills`] saw.
#[derive(Debug)]
pub struct LoadFigures {
    pub queries: u64,
    pub failed: usize,
    pub kill_rounds: usize,
    pub backends_killed: usize,
    /// Rounds that found at least one backend to kill.
    pub rounds_that_killed: usize,
    pub connections_lost: u64,
    pub retries: u64,
    pub reconnects: u64,
    pub elapsed: std::time::Duration,
}

/// Polls (bounded, every 20 ms) until `f` holds; the condition is asserted by the caller.
pub async fn eventually<F: AsyncFnMut() -> bool>(limit: std::time::Duration, mut f: F) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f().await
}

/// A statement past the connection's `statement_timeout` (`slow`: one `i64` column, sleeps far
/// longer than `limit`): a typed error naming the connection, nothing cached, its connection
/// never reused, and the next statement (`fast`, returning 1) works on another connection.
pub async fn statement_timeout_holds<P>(
    conn: &connscope::Conn<P>,
    slow: &'static str,
    fast: &'static str,
    limit: std::time::Duration,
) where
    P: connscope::sql::SqlProvider,
    (i64,): for<'r> sqlx::FromRow<'r, <P::Db as sqlx::Database>::Row>,
{
    use connscope::sql::SqlError;
    let fast_one = async || conn.query(fast).uncached().fetch_one::<(i64,)>().await.map(|r| r.0);
    assert_eq!(fast_one().await.unwrap(), 1, "a statement under the limit runs");
    let before = conn.sql_stats();
    for attempt in 0..2 {
        let started = std::time::Instant::now();
        let err = conn.query(slow).fetch_one::<(i64,)>().await.expect_err("the slow statement must time out");
        // The statement sleeps 30 s; the generous bound only says it was not waited out.
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
        match &err {
            SqlError::StatementTimeout { connection, after } => {
                assert_eq!((connection.as_str(), *after), (conn.name(), limit), "attempt {attempt}");
            }
            other => panic!("expected StatementTimeout, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(conn.name()) && text.contains("statement_timeout"), "{text}");
    }
    let s = conn.sql_stats();
    assert_eq!(s.cache_hits - before.cache_hits, 0, "a timed-out statement is never cached: {s:?}");
    assert_eq!(s.cache_misses - before.cache_misses, 2, "{s:?}");
    assert_eq!(s.retries - before.retries, 0, "a timeout is not retried: {s:?}");
    assert_eq!(fast_one().await.unwrap(), 1, "the next statement works");
    let client = conn.get().await.unwrap();
    let pool = client.pool();
    assert!(
        eventually(std::time::Duration::from_secs(5), async || pool.size() as usize == pool.num_idle()).await,
        "the timed-out connections left the pool: size {}, idle {}",
        pool.size(),
        pool.num_idle()
    );
    assert_eq!(pool.size(), 1, "only the healthy connection is pooled");
}
