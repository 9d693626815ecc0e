//! SQLite provider, against real SQLite databases (in memory and on disk): one shared
//! in-memory database per connection, cached queries that provably do not reach the
//! database again, tags, errors with their cause, session isolation, configuration.
#![cfg(feature = "sqlite")]

mod sql_support;

use std::sync::Arc;
use std::time::Duration;

use connscope::sql::{ConnectCause, SqlError, SqlLogin, SqliteDb};
use connscope::{Conn, Error};
use sql_support::{runtime, shut_down, unique};

#[derive(Debug, sqlx::FromRow)]
struct Hit {
    k: i64,
}

/// A probe whose every execution leaves a row behind: the database's own count of how often
/// the statement reached it.
const PROBE: &str = "insert into hits (k) values (?) returning k";

async fn probes(conn: &Conn<SqliteDb>, k: i64) -> i64 {
    conn.query("select count(*) from hits where k = ?")
        .bind(k)
        .uncached()
        .fetch_one::<(i64,)>()
        .await
        .unwrap()
        .0
}

async fn memory_db() -> (connscope::Runtime, Conn<SqliteDb>) {
    let rt = runtime(&[
        ("mem", "url", "sqlite::memory:".into()),
        ("mem", "max_connections", toml::Value::Integer(4)),
    ]);
    let conn = rt.connection::<SqliteDb>("mem").await.unwrap();
    conn.execute("create table hits (id integer primary key, k integer not null)").await.unwrap();
    (rt, conn)
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.db", unique(name)))
}

#[tokio::test]
async fn an_in_memory_url_is_one_database_for_the_whole_pool() {
    let (rt, conn) = memory_db().await;
    conn.execute("insert into hits (k) values (1), (2)").await.unwrap();
    // Hold three pooled connections at once: each sees the same table and rows.
    let client = conn.get().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client.pool().acquire().await.unwrap());
    }
    for c in &mut held {
        let (n,): (i64,) = sqlx::query_as("select count(*) from hits").fetch_one(&mut **c).await.unwrap();
        assert_eq!(n, 2, "every pooled connection sees the one in-memory database");
    }
    assert!(client.pool().size() >= 3);
    drop(held);
    drop(client);
    // Another connection (other settings instance) is another database.
    let rt2 = runtime(&[("mem", "url", "sqlite::memory:".into())]);
    let other = rt2.connection::<SqliteDb>("mem").await.unwrap();
    let err = other.query("select count(*) from hits").fetch_one::<(i64,)>().await.unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    shut_down(&rt, 1).await;
    shut_down(&rt2, 1).await;
}

/// Real database I/O cannot run on a paused clock, so no assertion depends on how fast this
/// machine is: a long ttl for "a hit within the ttl", and a short one that the test sleeps past
/// (a sleep lasts at least its duration) for "after the ttl it runs again".
#[tokio::test]
async fn a_cached_query_does_not_reach_the_database_again_within_its_ttl() {
    let (rt, conn) = memory_db().await;
    let long = Duration::from_secs(600);
    let probe = |k: i64, ttl: Duration| conn.query(PROBE).bind(k).ttl(ttl).fetch_all::<Hit>();

    let first = probe(1, long).await.unwrap();
    let second = probe(1, long).await.unwrap();
    assert_eq!(first[0].k, 1);
    assert!(Arc::ptr_eq(&first, &second), "the second call is the cached result");
    assert_eq!(probes(&conn, 1).await, 1, "the second identical query did not reach the database");
    assert_eq!(conn.sql_stats().cache_hits, 1);

    probe(2, long).await.unwrap();
    assert_eq!(probes(&conn, 2).await, 1, "other binds are another entry: it ran");
    assert_eq!(probes(&conn, 1).await, 1);

    let short = Duration::from_millis(50);
    probe(3, short).await.unwrap();
    tokio::time::sleep(short * 2).await;
    probe(3, short).await.unwrap();
    assert_eq!(probes(&conn, 3).await, 2, "after the ttl the query reaches the database again");
    assert_eq!(probes(&conn, 1).await, 1, "the long-lived entry is still cached");

    conn.query(PROBE).bind(1).uncached().fetch_all::<Hit>().await.unwrap();
    conn.query(PROBE).bind(1).uncached().fetch_all::<Hit>().await.unwrap();
    assert_eq!(probes(&conn, 1).await, 3, "uncached runs every time");
    conn.query(PROBE).bind(1).ttl(Duration::ZERO).fetch_all::<Hit>().await.unwrap();
    assert_eq!(probes(&conn, 1).await, 4, "a zero ttl is uncached");
    shut_down(&rt, 1).await;
}

#[tokio::test]
async fn execute_invalidates_the_tags_it_names_and_is_never_cached() {
    let (rt, conn) = memory_db().await;
    let count = || conn.query("select count(*) from hits").tag("hits").fetch_one::<(i64,)>();
    assert_eq!(count().await.unwrap().0, 0);
    conn.execute("insert into hits (k) values (?)").bind(7).await.unwrap();
    assert_eq!(count().await.unwrap().0, 0, "no tag named: the cached count stays");
    let n = conn.execute("insert into hits (k) values (?)").bind(8).invalidates("hits").await.unwrap();
    assert_eq!(n, 1, "rows affected");
    assert_eq!(count().await.unwrap().0, 2, "the write named the tag: the count ran again");
    conn.execute("insert into hits (k) values (?)").bind(9).await.unwrap();
    conn.clear_query_cache();
    assert_eq!(count().await.unwrap().0, 3, "clear_query_cache makes everything stale");
    let untagged = conn.query("select count(*) from hits").fetch_one::<(i64,)>().await.unwrap();
    conn.execute("delete from hits").invalidates("hits").await.unwrap();
    assert_eq!(conn.query("select count(*) from hits").fetch_one::<(i64,)>().await.unwrap(), untagged);
    assert_eq!(count().await.unwrap().0, 0);
    shut_down(&rt, 1).await;
}

#[tokio::test]
async fn a_rejected_statement_returns_the_database_message_at_once_and_caches_nothing() {
    let (rt, conn) = memory_db().await;
    let before = conn.sql_stats();
    for _ in 0..2 {
        let err = conn.query("selec 1").fetch_all::<(i64,)>().await.unwrap_err();
        assert!(matches!(err, SqlError::Database { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("`mem`") && text.contains("syntax error"), "{text}");
    }
    let after = conn.sql_stats();
    assert_eq!(after.statements - before.statements, 2, "both calls reached the database: nothing cached");
    assert_eq!((after.retries, after.errors - before.errors), (0, 2), "not retried");

    conn.execute("create table once (id integer primary key)").await.unwrap();
    conn.execute("insert into once values (1)").await.unwrap();
    let dup = conn.execute("insert into once values (1)").await.unwrap_err();
    assert!(dup.to_string().contains("UNIQUE"), "{dup}");
    assert!(dup.code().is_some(), "the database's error code is kept");
    let none = conn.query("select id from once where id = 2").fetch_one::<(i64,)>().await.unwrap_err();
    assert!(matches!(none, SqlError::Database { source: sqlx::Error::RowNotFound, .. }), "{none:?}");
    assert!(
        conn.query("select id from once where id = 2").fetch_optional::<(i64,)>().await.unwrap().is_none()
    );
    shut_down(&rt, 1).await;
}

#[tokio::test]
async fn a_missing_database_file_names_the_connection_and_cause_and_works_once_created() {
    let path = temp_path("missing");
    let url = format!("sqlite://{}", path.display());
    let rt = runtime(&[("files", "url", url.into())]);
    let conn = rt.connection::<SqliteDb>("files").await.unwrap();
    let err = conn.query("select 1").fetch_one::<(i64,)>().await.unwrap_err();
    assert_eq!(err.connect_cause(), Some(ConnectCause::UnknownDatabase), "{err}");
    let text = err.to_string();
    assert!(text.contains("`files`") && text.contains("unknown database"), "{text}");
    assert!(!conn.is_connected(), "nothing kept from the failed connect");
    let failed = conn.sql_stats();
    assert_eq!((failed.statements, failed.cache_hits), (0, 0));

    std::fs::File::create(&path).unwrap(); // the cause is fixed: the file exists
    assert_eq!(conn.query("select 1").fetch_one::<(i64,)>().await.unwrap().0, 1, "the next call works");
    shut_down(&rt, 1).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_malformed_url_is_a_configuration_cause() {
    let rt = runtime(&[("bad", "url", "sqlite://?mode=sideways".into())]);
    let conn = rt.connection::<SqliteDb>("bad").await.unwrap();
    let err = conn.query("select 1").fetch_one::<(i64,)>().await.unwrap_err();
    assert_eq!(err.connect_cause(), Some(ConnectCause::Config), "{err}");
    assert!(err.to_string().contains("`bad`"), "{err}");
    shut_down(&rt, 1).await;
}

#[tokio::test]
async fn session_results_are_invisible_to_other_sessions_and_global_ones_are_shared() {
    let path = temp_path("sessions");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let rt = runtime(&[
        ("mine", "url", url.clone().into()),
        ("mine", "user", "ada".into()),
        ("mine", "password", "pw".into()),
        ("shared", "url", url.into()),
    ]);
    let setup = rt.connection::<SqliteDb>("shared").await.unwrap();
    setup.execute("create table hits (id integer primary key, k integer not null)").await.unwrap();

    let (a, b) = (rt.session(), rt.session());
    let session_probe = || async {
        let conn = rt.connection::<SqlLogin<sqlx::Sqlite>>("mine").await?;
        conn.query(PROBE).bind(1).fetch_all::<Hit>().await
    };
    let global_probe = || async {
        let conn = rt.connection::<SqliteDb>("shared").await?;
        conn.query(PROBE).bind(2).fetch_all::<Hit>().await
    };
    a.run(session_probe()).await.unwrap();
    a.run(session_probe()).await.unwrap();
    assert_eq!(probes(&setup, 1).await, 1, "session a: the second call was a hit");
    b.run(session_probe()).await.unwrap();
    assert_eq!(probes(&setup, 1).await, 2, "session b does not see session a's result: it ran");
    a.run(session_probe()).await.unwrap();
    assert_eq!(probes(&setup, 1).await, 2, "session a still has its own");

    a.run(global_probe()).await.unwrap();
    b.run(global_probe()).await.unwrap();
    assert_eq!(probes(&setup, 2).await, 1, "a global connection's results are shared by every session");

    let err = session_probe().await.unwrap_err();
    assert!(matches!(err, SqlError::Connection(Error::NoActiveSession { .. })), "{err:?}");
    let ended = a.end().await;
    assert!(ended.is_ok() && ended.released >= 1, "a's login connection was released: {ended:?}");
    let ended = a.run(session_probe()).await.unwrap_err();
    assert!(matches!(ended, SqlError::Connection(Error::SessionEnded { .. })), "{ended:?}");
    b.run(session_probe()).await.unwrap();
    shut_down(&rt, 2).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn settings_come_from_the_secrets_file_and_never_show_the_password() {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("secrets")));
    std::fs::write(
        &path,
        "[connections.app]\nurl = \"sqlite::memory:\"\nquery_ttl = \"250ms\"\nmax_connections = 3\n\
         connect_timeout = 2\nidle_timeout = \"0s\"\npassword = \"hunter2\"\n\
         [connections.typo]\nurl = \"sqlite::memory:\"\nmax_conections = 3\n",
    )
    .unwrap();
    let rt =
        connscope::Runtime::builder().secrets_file(&path).env_vars(Vec::<(String, String)>::new()).build();
    let conn = rt.connection::<SqliteDb>("app").await.unwrap();
    let p = conn.provider();
    assert_eq!(
        (p.query_ttl, p.max_connections, p.connect_timeout),
        (Duration::from_millis(250), 3, Duration::from_secs(2))
    );
    use connscope::sql::SqlProvider;
    assert_eq!(p.pool_settings().idle_timeout, None, "0s means never");
    let debug = format!("{p:?}");
    assert!(!debug.contains("hunter2") && debug.contains("***"), "{debug}");
    let err = rt.connection::<SqliteDb>("typo").await.unwrap_err();
    assert!(err.to_string().contains("max_conections"), "an unknown field is named: {err}");
    shut_down(&rt, 1).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn the_connection_closes_its_pool_when_released() {
    let (rt, conn) = memory_db().await;
    let client = conn.get().await.unwrap();
    let pool = client.pool().clone();
    drop(client);
    let report = rt.shutdown().await;
    assert!(report.is_ok());
    assert!(pool.is_closed(), "shutdown closed the pool");
    assert_eq!(conn.counters().closes, 1);
}

#[tokio::test]
async fn two_connections_with_different_settings_never_share_results() {
    let (pa, pb) = (temp_path("ident_a"), temp_path("ident_b"));
    let url = |p: &std::path::Path| format!("sqlite://{}?mode=rwc", p.display());
    let rt = runtime(&[
        ("a", "url", url(&pa).into()),
        ("b", "url", url(&pb).into()),
        ("a2", "url", url(&pa).into()),
    ]);
    for (name, rows) in [("a", 1), ("b", 2)] {
        let conn = rt.connection::<SqliteDb>(name).await.unwrap();
        conn.execute("create table hits (id integer primary key, k integer not null)").await.unwrap();
        for k in 0..rows {
            conn.execute("insert into hits (k) values (?)").bind(k).await.unwrap();
        }
    }
    let count = |name: &'static str| {
        let rt = rt.clone();
        async move {
            let conn = rt.connection::<SqliteDb>(name).await.unwrap();
            let n = conn.query("select count(*) from hits").fetch_one::<(i64,)>().await.unwrap().0;
            (n, conn.sql_stats().cache_hits)
        }
    };
    assert_eq!(count("a").await, (1, 0));
    assert_eq!(count("b").await, (2, 0), "same SQL, other settings: its own result");
    assert_eq!(count("a").await, (1, 1));
    // A row the cached count has not seen (no tag invalidated): a result served from the cache
    // says 1, one that reached the database says 2.
    let a = rt.connection::<SqliteDb>("a").await.unwrap();
    a.execute("insert into hits (k) values (?)").bind(9).await.unwrap();
    assert_eq!(count("a").await, (1, 2), "a's own cached result");
    // Another name with the same settings is the same database: results are keyed by the
    // settings, so it shares a's cached result.
    assert_eq!(count("a2").await, (1, 1), "same settings under another name: a's cached result");
    assert_eq!(count("b").await, (2, 1), "b still has its own");
    shut_down(&rt, 3).await;
    let _ = (std::fs::remove_file(&pa), std::fs::remove_file(&pb));
}

#[tokio::test]
async fn a_statement_past_its_timeout_fails_and_the_next_one_works() {
    let rt =
        runtime(&[("slow", "url", "sqlite::memory:".into()), ("slow", "statement_timeout", "50ms".into())]);
    let conn = rt.connection::<SqliteDb>("slow").await.unwrap();
    // Finite, but far longer than 50 ms: it finishes in the background after the timeout.
    let slow = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000000) \
                select count(*) from c";
    let started = std::time::Instant::now();
    let err = conn.query(slow).fetch_one::<(i64,)>().await.expect_err("must time out");
    eprintln!("sqlite statement_timeout returned after {:?}", started.elapsed());
    assert!(
        matches!(&err, SqlError::StatementTimeout { connection, after }
            if connection == "slow" && *after == Duration::from_millis(50)),
        "{err:?}"
    );
    let (n,) = *conn.query("select 6 * 7").uncached().fetch_one::<(i64,)>().await.unwrap();
    assert_eq!(n, 42, "the next statement works on another connection");
    assert_eq!(conn.sql_stats().cache_hits, 0, "nothing was cached");
    shut_down(&rt, 1).await;
}

#[tokio::test]
async fn the_tag_generation_table_keeps_only_what_is_cached() {
    use connscope::sql::{invalidate, live_tag_counters};
    let (rt, conn) = memory_db().await;
    let prefix = unique("live-tags");
    for i in 0..300i64 {
        let tag = format!("{prefix}-{i}");
        let read = || conn.query("select ? + 0").bind(i).tag(&tag).fetch_one::<(i64,)>();
        assert_eq!(read().await.unwrap().0, i);
        invalidate(&tag);
        assert_eq!(read().await.unwrap().0, i);
    }
    assert_eq!(conn.sql_stats().cache_misses, 600, "every invalidation made the next read run");
    assert_eq!(live_tag_counters(&prefix), 300, "a cached read keeps its tag's counter");

    // Invalidating tags that no cached read uses keeps nothing.
    for i in 0..1000 {
        invalidate(&format!("{prefix}-unused-{i}"));
    }
    assert_eq!(live_tag_counters(&format!("{prefix}-unused")), 0);

    // Once the reads leave the cache, so do their counters.
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1 + 600, true), "the connection and every read");
    assert_eq!(live_tag_counters(&prefix), 0, "nothing cached uses these tags any more");
}

#[tokio::test]
async fn distinct_ttls_share_a_bounded_set_of_caches() {
    use connscope::sql::query_cache_kinds;
    let (rt, conn) = memory_db().await;
    for n in 1..=500i64 {
        // 500 distinct ttls, from 1001 s to 1500 s.
        let ttl = Duration::from_secs(1000 + n as u64);
        let (v,) = *conn.query("select ? + 0").bind(n).ttl(ttl).fetch_one::<(i64,)>().await.unwrap();
        assert_eq!(v, n);
    }
    let kinds = query_cache_kinds();
    // Across this whole test binary: a few ttl buckets (1 ms to 2^42 ms) per `query_cache_entries`.
    assert!(kinds <= 64, "{kinds} kinds of query cache");
    assert_eq!(conn.sql_stats().cache_misses, 500);
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1 + 500, true), "the connection and every result");
}

#[tokio::test]
async fn per_session_results_over_a_shared_connection_are_each_users_own() {
    let (rt, shared) = memory_db().await;
    let (a, b) = (rt.session(), rt.session());
    let probe = || async {
        let conn = rt.connection::<SqliteDb>("mem").await?;
        conn.query(PROBE).bind(7).per_session().fetch_all::<Hit>().await
    };
    a.run(probe()).await.unwrap();
    a.run(probe()).await.unwrap();
    assert_eq!(probes(&shared, 7).await, 1, "session a: the second call was a hit");
    b.run(probe()).await.unwrap();
    assert_eq!(probes(&shared, 7).await, 2, "session b has results of its own over the same connection");
    a.run(probe()).await.unwrap();
    b.run(probe()).await.unwrap();
    assert_eq!(probes(&shared, 7).await, 2, "each keeps its own");

    // The same statement without `per_session` is shared, in the global cache.
    let global = || async { shared.query(PROBE).bind(8).fetch_all::<Hit>().await };
    a.run(global()).await.unwrap();
    b.run(global()).await.unwrap();
    assert_eq!(probes(&shared, 8).await, 1);

    let err = probe().await.unwrap_err();
    assert!(matches!(err, SqlError::Connection(Error::NoActiveSession { .. })), "{err:?}");
    let ended = a.end().await;
    assert_eq!((ended.is_ok(), ended.released), (true, 1), "a's own result was released with it: {ended:?}");
    b.run(probe()).await.unwrap();
    assert_eq!(probes(&shared, 7).await, 2, "b's result outlives a's session");
    drop(shared);
    rt.shutdown().await;
}
