//! The SQL query cache's shared tier (`Query::shared`): three app instances as separate
//! processes (`suite/instance/results.rs`) reading one SQLite file through a real Redis (enabled
//! by `REDIS_URL`). A read missed by all three runs once; a tagged write or `clear_query_cache`
//! on one instance is seen by every other within the invalidation bound (worst case over 100
//! tries, printed); without Redis a shared read is an ordinary cached read.

#[cfg(not(all(feature = "redis", feature = "axum", feature = "sqlite")))]
#[test]
fn redis_sql_needs_the_redis_axum_and_sqlite_features() {
    eprintln!("\n*** SKIPPED redis_sql: build with `--features redis,axum,sqlite` (or --all-features) ***");
}

#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod instances_support;

#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod shared_sql {
    use std::time::{Duration, Instant};

    use connscope::Runtime;
    use connscope::sql::SqliteDb;

    use super::instances_support::{Cluster, redis_url};

    /// Creates `items` (k = 1..=3, v = "a") in the cluster's SQLite file, from this process.
    async fn create_items(c: &Cluster) {
        let url = format!("sqlite://{}?mode=rwc", c.dir.join("items.db").display());
        let rt = Runtime::builder()
            .secrets_file("/nonexistent/connscope-redis-sql.toml")
            .env_vars(Vec::<(String, String)>::new())
            .connection_setting("setup", "url", url.as_str())
            .build();
        let conn = rt.connection::<SqliteDb>("setup").await.unwrap();
        conn.execute("create table items (k integer primary key, v text not null)").await.unwrap();
        conn.execute("insert into items values (1, 'a'), (2, 'a'), (3, 'a')").await.unwrap();
        rt.shutdown().await;
    }

    async fn item(c: &Cluster, i: usize, k: i64, spin: u64) -> String {
        let got = c.get(i, &format!("/sql/item/{k}?spin={spin}")).await.unwrap();
        got["v"].as_str().unwrap().to_owned()
    }

    async fn statements(c: &Cluster) -> u64 {
        let mut total = 0;
        for i in 0..c.instances.len() {
            total += c.get(i, "/sql/stats").await.unwrap()["statements"].as_u64().unwrap();
        }
        total
    }

    /// Polls instance `i` until item `k` reads `want`; how long that took after `from`.
    async fn seen(c: &Cluster, i: usize, k: i64, want: &str, from: Instant, bound: Duration) -> Duration {
        loop {
            if item(c, i, k, 0).await == want {
                return from.elapsed();
            }
            assert!(
                from.elapsed() < bound * 2,
                "instance {i} still serves an old value of item {k} after {bound:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_read_missed_by_three_instances_runs_once() {
        let Some(url) = redis_url() else { return };
        let c = Cluster::start("sql-once", 3, &url, "");
        create_items(&c).await;
        let before = statements(&c).await;
        // The three miss the same slow read at once (a recursive count of 300 000 rows first).
        let (a, b, d) =
            tokio::join!(item(&c, 0, 1, 300_000), item(&c, 1, 1, 300_000), item(&c, 2, 1, 300_000));
        assert_eq!([a, b, d], ["a", "a", "a"]);
        assert_eq!(statements(&c).await - before, 1, "one statement across the three instances");
        assert_eq!(c.sum("stored").await, 1);
        assert_eq!(c.sum("remote_hits").await, 2, "the two others read it from Redis");
        // Then each answers from its local copy: no statement, no Redis.
        for i in 0..3 {
            assert_eq!(item(&c, i, 1, 300_000).await, "a");
        }
        assert_eq!(statements(&c).await - before, 1);
        assert_eq!(c.sum("remote_hits").await, 2);
    }

    /// Writes on one instance (round robin), then measures how long each other instance keeps
    /// serving the old value; 100 tries.
    async fn writes_are_seen_everywhere(name: &str, route: &str) {
        let Some(url) = redis_url() else { return };
        let bound = Duration::from_secs(1);
        let c = Cluster::start(name, 3, &url, "invalidation_bound = \"1s\"");
        create_items(&c).await;
        for i in 0..3 {
            assert_eq!(item(&c, i, 2, 0).await, "a");
        }
        let mut delays = Vec::new();
        for n in 1..=100usize {
            let (writer, value) = (n % 3, format!("v{n}"));
            c.post(writer, &format!("/sql/{route}/2/{value}")).await;
            let from = Instant::now();
            for reader in (0..3).filter(|r| *r != writer) {
                delays.push(seen(&c, reader, 2, &value, from, bound).await);
            }
            // The writer itself never serves the old value after its write returned.
            assert_eq!(item(&c, writer, 2, 0).await, value);
        }
        delays.sort();
        let worst = *delays.last().unwrap();
        eprintln!(
            "{route}: {} observations: median {:?}, p99 {:?}, worst {worst:?} (bound {bound:?})",
            delays.len(),
            delays[delays.len() / 2],
            delays[delays.len() * 99 / 100],
        );
        assert!(worst < bound, "worst {worst:?} past the bound");
        assert_eq!(c.sum("failures").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tagged_write_on_one_instance_is_seen_by_every_instance_within_the_bound() {
        writes_are_seen_everywhere("sql-tag", "set").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_query_cache_on_one_instance_reaches_every_instance_within_the_bound() {
        writes_are_seen_everywhere("sql-clear", "set-and-clear").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_a_shared_read_is_an_ordinary_cached_read() {
        let dir = std::env::temp_dir().join(format!("connscope-sql-noredis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let rt = Runtime::builder()
            .secrets_file("/nonexistent/connscope-redis-sql.toml")
            .env_vars(Vec::<(String, String)>::new())
            .no_redis()
            .connection_setting("t", "url", url.as_str())
            .build();
        let conn = rt.connection::<SqliteDb>("t").await.unwrap();
        conn.execute("create table if not exists t (n integer)").await.unwrap();
        let read = || conn.query("select count(*) as n from t").tag("t").shared().fetch_one::<(i64,)>();
        assert_eq!(read().await.unwrap().0, 0);
        conn.execute("insert into t values (1)").invalidates("t").await.unwrap();
        assert_eq!(read().await.unwrap().0, 1, "the tag still invalidates");
        let before = conn.sql_stats().statements;
        assert_eq!(read().await.unwrap().0, 1);
        assert_eq!(conn.sql_stats().statements, before, "a hit");
        assert!(rt.redis_stats().is_none(), "no tier started");
        rt.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_sqlite_is_never_shared() {
        let Some(url) = redis_url() else { return };
        let rt = Runtime::builder()
            .secrets_file("/nonexistent/connscope-redis-sql.toml")
            .env_vars([("REDIS_URL", url.as_str())])
            .connection_setting("mem", "url", "sqlite::memory:")
            .build();
        let conn = rt.connection::<SqliteDb>("mem").await.unwrap();
        let n = conn.query("select 41 + 1").shared().fetch_one::<(i64,)>().await.unwrap();
        assert_eq!(n.0, 42);
        let stats = rt.redis_stats().unwrap_or_default();
        assert_eq!((stats.computed, stats.remote_hits, stats.stored), (0, 0, 0), "{stats:?}");
        rt.shutdown().await;
    }
}
