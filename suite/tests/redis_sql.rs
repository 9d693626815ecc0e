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
mod own_redis;

#[cfg(all(feature = "redis", feature = "axum", feature = "sqlite"))]
mod shared_sql {
    use std::time::{Duration, Instant};

    use connscope::Runtime;
    use connscope::sql::SqliteDb;

    use super::instances_support::{Cluster, OwnRedis, redis_url};

    /// A runtime builder that reads no file and no environment, with connection `name` at `db`.
    fn builder(name: &str, db: &str) -> connscope::RuntimeBuilder {
        Runtime::builder()
            .secrets_file("/nonexistent/connscope-redis-sql.toml")
            .env_vars(Vec::<(String, String)>::new())
            .connection_setting(name, "url", db)
    }

    /// `n` runtimes sharing a fresh Redis prefix: `n` instances in this process, each with
    /// connection `name` at `db`.
    fn instances(n: usize, redis: &str, test: &str, name: &str, db: &str) -> Vec<Runtime> {
        use connscope::redis::RedisSettings;
        let prefix = format!("connscope-test:{test}-{}-{:?}", std::process::id(), Instant::now());
        (0..n)
            .map(|_| builder(name, db).redis(RedisSettings::new(redis).prefix(prefix.as_str())).build())
            .collect()
    }

    /// `DATABASE_URL`, or `None` after a loud skip naming `test`.
    #[cfg(feature = "postgres")]
    fn postgres_url(test: &str) -> Option<String> {
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("\n*** SKIPPED {test}: set DATABASE_URL to run it ***");
        }
        url
    }

    /// Creates `items` (k = 1..=3, v = "a") in the cluster's SQLite file, from this process.
    async fn create_items(c: &Cluster) {
        let url = format!("sqlite://{}?mode=rwc", c.dir.join("items.db").display());
        let rt = builder("setup", &url).build();
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
        let (before, failed) = (statements(&c).await, c.sum("failures").await);
        // The three miss the same slow read at once (a recursive count of 300 000 rows first).
        let (a, b, d) =
            tokio::join!(item(&c, 0, 1, 300_000), item(&c, 1, 1, 300_000), item(&c, 2, 1, 300_000));
        assert_eq!([a, b, d], ["a", "a", "a"]);
        // One statement across the three; or one more per Redis command that failed meanwhile
        // (a 200 ms command timeout on a loaded machine: that caller runs its own, by design).
        let ran = statements(&c).await - before;
        let failed = c.sum("failures").await - failed;
        assert!(
            ran >= 1 && ran <= 1 + failed,
            "{ran} statements across the instances, {failed} failed commands"
        );
        let (stored, remote) = (c.sum("stored").await, c.sum("remote_hits").await);
        if failed == 0 {
            assert_eq!((stored, remote), (1, 2), "stored once, the two others read it from Redis");
        }
        // Then each answers from its local copy: no statement, no Redis.
        for i in 0..3 {
            assert_eq!(item(&c, i, 1, 300_000).await, "a");
        }
        assert_eq!(statements(&c).await - before, ran);
        assert_eq!(c.sum("remote_hits").await, remote);
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
        // Commands that timed out on a loaded machine are retried within a heartbeat (and the
        // bound above held); reported, not asserted.
        eprintln!("{route}: Redis commands that failed meanwhile: {}", c.sum("failures").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tagged_write_on_one_instance_is_seen_by_every_instance_within_the_bound() {
        writes_are_seen_everywhere("sql-tag", "set").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sql_invalidate_on_one_instance_reaches_every_instance_within_the_bound() {
        writes_are_seen_everywhere("sql-invalidate", "set-then-invalidate").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_query_cache_on_one_instance_reaches_every_instance_within_the_bound() {
        writes_are_seen_everywhere("sql-clear", "set-and-clear").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis_stopped_no_read_fails_and_a_write_elsewhere_is_seen_within_the_bound() {
        if redis_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Some(mut redis) = OwnRedis::start(port) else {
            eprintln!("\n*** SKIPPED redis_sql outage: no `redis-server` on PATH to stop and restart ***");
            return;
        };
        let bound = Duration::from_secs(1);
        let url = format!("redis://127.0.0.1:{port}");
        let c =
            Cluster::start("sql-down", 3, &url, "invalidation_bound = \"1s\"\ncommand_timeout = \"200ms\"");
        create_items(&c).await;
        for i in 0..3 {
            assert_eq!(item(&c, i, 3, 0).await, "a");
        }
        redis.stop();
        // A write on instance 0 while Redis is away: its message cannot reach the others, which
        // must stop serving their shared copies within the bound all the same.
        c.post(0, "/sql/set/3/b").await;
        let from = Instant::now();
        let mut reads = 0;
        for i in 1..3 {
            while item(&c, i, 3, 0).await != "b" {
                reads += 1;
                // The bus is checked four times per bound: at most a quarter more (and some slack).
                assert!(from.elapsed() < bound * 3 / 2, "instance {i} served its old copy past the bound");
            }
        }
        let stale_for = from.elapsed();
        assert_eq!(item(&c, 0, 3, 0).await, "b", "the writer never serves the old value");
        let redis = OwnRedis::start(port).expect("restart redis-server");
        for i in 0..3 {
            c.until(i, "Redis back", Duration::from_secs(10), |s| s["state"] == "Some(Up)").await;
        }
        // Shared again: a new read missed by all three runs once (or once more per Redis command
        // that timed out meanwhile on a loaded machine: that caller reads the database itself).
        let (before, failed) = (statements(&c).await, c.sum("failures").await);
        let (a, b, d) =
            tokio::join!(item(&c, 0, 1, 100_000), item(&c, 1, 1, 100_000), item(&c, 2, 1, 100_000));
        assert_eq!([a, b, d], ["a", "a", "a"]);
        let (runs, failed) = (statements(&c).await - before, c.sum("failures").await - failed);
        assert!(runs >= 1 && runs <= 1 + failed, "{runs} statements, {failed} failed commands");
        eprintln!(
            "Redis stopped: the others served the write made meanwhile after {stale_for:?} ({reads} old reads; bound {bound:?})"
        );
        drop(redis);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_a_shared_read_is_an_ordinary_cached_read() {
        let dir = std::env::temp_dir().join(format!("connscope-sql-noredis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let rt = builder("t", &url).no_redis().build();
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

    /// Two runtimes as two instances (one process) on a real PostgreSQL: rows of the server's
    /// types cross through Redis, and the second instance runs no statement.
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rows_cross_instances() {
        use connscope::sql::PostgresDb;
        let Some(url) = redis_url() else { return };
        let Some(db) = postgres_url("postgres_rows_cross_instances") else { return };
        let [one, two] = <[Runtime; 2]>::try_from(instances(2, &url, "sql-pg", "pg", &db)).unwrap();
        let table = format!("shared_rows_{}", std::process::id());
        let a = one.connection::<PostgresDb>("pg").await.unwrap();
        a.execute(sqlx::AssertSqlSafe(format!("create table {table} (id bigint, name text, score float8)")))
            .await
            .unwrap();
        a.execute(sqlx::AssertSqlSafe(format!("insert into {table} values (1, 'ada', 9.5), (2, null, -1)")))
            .await
            .unwrap();
        #[derive(Debug, PartialEq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
        struct Row {
            id: i64,
            name: Option<String>,
            score: f64,
        }
        let sql = format!("select id, name, score from {table} order by id");
        let first = a.query(sqlx::AssertSqlSafe(sql.clone())).shared().fetch_all::<Row>().await.unwrap();
        let b = two.connection::<PostgresDb>("pg").await.unwrap();
        let before = b.sql_stats().statements;
        let second = b.query(sqlx::AssertSqlSafe(sql)).shared().fetch_all::<Row>().await.unwrap();
        assert_eq!(first, second);
        assert_eq!(second[1], Row { id: 2, name: None, score: -1.0 });
        assert_eq!(b.sql_stats().statements, before, "read from Redis, not from the database");
        assert_eq!(two.redis_stats().unwrap().remote_hits, 1);
        a.execute(sqlx::AssertSqlSafe(format!("drop table {table}"))).await.unwrap();
        one.shutdown().await;
        two.shutdown().await;
    }

    /// A read that started before a tagged write elsewhere stores its result under the old
    /// generation: no instance reads it after the write.
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_racing_a_tagged_write_is_never_served_after_it() {
        use connscope::sql::PostgresDb;
        let Some(url) = redis_url() else { return };
        let Some(db) = postgres_url("a_read_racing_a_tagged_write") else { return };
        let [one, two, three] = <[Runtime; 3]>::try_from(instances(3, &url, "sql-race", "pg", &db)).unwrap();
        let table = format!("shared_race_{}", std::process::id());
        let a = one.connection::<PostgresDb>("pg").await.unwrap();
        a.execute(sqlx::AssertSqlSafe(format!("create table {table} (v text)"))).await.unwrap();
        a.execute(sqlx::AssertSqlSafe(format!("insert into {table} values ('old')"))).await.unwrap();
        // A slow read: it reads the row, then sleeps half a second before returning it.
        let sql = format!("select v from {table}, pg_sleep(0.5)");
        const TAG: &str = "race-table";
        let read = |conn: connscope::Conn<PostgresDb>, sql: String| async move {
            conn.query(sqlx::AssertSqlSafe(sql)).tag(TAG).shared().fetch_one::<(String,)>().await
        };
        let slow = tokio::spawn(read(a.clone(), sql.clone()));
        // The write comes while instance one holds the read's lock.
        let start = Instant::now();
        while one.redis_stats().unwrap_or_default().computed == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "the read never started");
            tokio::task::yield_now().await;
        }
        let b = two.connection::<PostgresDb>("pg").await.unwrap();
        b.execute(sqlx::AssertSqlSafe(format!("update {table} set v = 'new'")))
            .invalidates(TAG)
            .await
            .unwrap();
        assert_eq!(slow.await.unwrap().unwrap().0, "old", "it started before the write");
        // Instance three has never read it: it must not find the old result in Redis.
        let c = three.connection::<PostgresDb>("pg").await.unwrap();
        assert_eq!(read(c, sql.clone()).await.unwrap().0, "new");
        assert_eq!(three.redis_stats().unwrap().remote_hits, 0);
        assert_eq!(read(a.clone(), sql).await.unwrap().0, "new");
        a.execute(sqlx::AssertSqlSafe(format!("drop table {table}"))).await.unwrap();
        for rt in [one, two, three] {
            rt.shutdown().await;
        }
    }

    /// A result read from Redis near the end of its ttl is kept locally only as long as Redis
    /// keeps it: never served past its ttl counted from when it was computed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_read_from_redis_is_kept_only_as_long_as_redis_keeps_it() {
        let Some(url) = redis_url() else { return };
        let dir = std::env::temp_dir().join(format!("connscope-sql-age-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.join("age.db").display());
        let [one, two] = <[Runtime; 2]>::try_from(instances(2, &url, "sql-age", "db", &db)).unwrap();
        let (a, b) = (
            one.connection::<SqliteDb>("db").await.unwrap(),
            two.connection::<SqliteDb>("db").await.unwrap(),
        );
        a.execute("create table if not exists t (n integer)").await.unwrap();
        async fn read(conn: &connscope::Conn<SqliteDb>) {
            let q = conn.query("select count(*) from t").ttl(Duration::from_secs(2));
            q.shared().fetch_one::<(i64,)>().await.unwrap();
        }
        read(&a).await;
        let computed = Instant::now();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = b.sql_stats().statements;
        read(&b).await;
        assert_eq!(b.sql_stats().statements, before, "read from Redis, 0.8 s of its ttl left");
        read(&b).await;
        assert_eq!(b.sql_stats().statements, before, "then from b's own copy");
        // Past 2 s since it was computed: b's copy is gone with Redis's (it was not kept 2 s
        // from when b read it).
        tokio::time::sleep(Duration::from_millis(2100).saturating_sub(computed.elapsed())).await;
        read(&b).await;
        assert_eq!(b.sql_stats().statements, before + 1, "computed again");
        one.shutdown().await;
        two.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_sqlite_is_never_shared() {
        let Some(url) = redis_url() else { return };
        let rt = builder("mem", "sqlite::memory:").env_vars([("REDIS_URL", url.as_str())]).build();
        let conn = rt.connection::<SqliteDb>("mem").await.unwrap();
        let n = conn.query("select 41 + 1").shared().fetch_one::<(i64,)>().await.unwrap();
        assert_eq!(n.0, 42);
        let stats = rt.redis_stats().unwrap_or_default();
        assert_eq!((stats.computed, stats.remote_hits, stats.stored), (0, 0, 0), "{stats:?}");
        rt.shutdown().await;
    }
}
