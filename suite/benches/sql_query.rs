//! A cached query hit beside the same query run against the database, in one run: on in-memory
//! SQLite always, and on PostgreSQL when `DATABASE_URL` is set (build with `--features postgres`).
//!
//! Each case fetches the same 10 typed rows: the raw sqlx baseline (first), connscope's uncached
//! path (the same work plus connscope's bookkeeping), and a cached hit (different work: the
//! database is not asked at all; that is what caching buys). Compare ratios within one run
//! (`cargo bench --bench sql_query [--features postgres]`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use connscope::sql::{Backend, SqlDb};
use connscope::{Conn, Runtime};
use criterion::{Criterion, criterion_group, criterion_main};

#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)]
struct Item {
    id: i64,
    name: String,
    price: f64,
}

const QUERY: &str = "select id, name, price from bench_items where id <= $1 order by id";

async fn setup<DB: Backend>(url: &str) -> (Runtime, Conn<SqlDb<DB>>) {
    let rt = Runtime::builder()
        .secrets_file("/nonexistent/connscope-bench.toml")
        .env_vars(Vec::<(String, String)>::new())
        .connection_setting("bench", "url", url)
        .build();
    let conn = rt.connection::<SqlDb<DB>>("bench").await.unwrap();
    conn.execute("drop table if exists bench_items").await.unwrap();
    conn.execute("create table bench_items (id bigint primary key, name text not null, price double precision not null)")
        .await
        .unwrap();
    for id in 1..=100i64 {
        conn.execute("insert into bench_items (id, name, price) values ($1, $2, $3)")
            .bind(id)
            .bind(format!("item {id}"))
            .bind(id as f64 * 1.5)
            .await
            .unwrap();
    }
    (rt, conn)
}

/// Every case of one backend, in one harness style (an async `iter_custom` loop timing `iters`
/// calls). The raw sqlx baseline comes first and is written out per backend by this macro: no
/// boxing or dynamic call that connscope's rows do not pay.
macro_rules! cases {
    ($group:expr, $tokio:expr, $label:literal, $conn:expr, $db:ty) => {{
        let conn: &Conn<SqlDb<$db>> = $conn;
        let ttl = Duration::from_secs(3600);
        let pool: sqlx::Pool<$db> = $tokio.block_on(async { conn.get().await.unwrap().pool().clone() });
        $group.bench_function(concat!($label, "/raw_sqlx_pool"), |b| {
            let pool = &pool;
            b.to_async(&$tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let rows: Vec<Item> =
                        sqlx::query_as(QUERY).bind(black_box(10i64)).fetch_all(pool).await.unwrap();
                    black_box(rows);
                }
                start.elapsed()
            })
        });
        $group.bench_function(concat!($label, "/connscope_uncached"), |b| {
            b.to_async(&$tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let rows = conn
                        .query(QUERY)
                        .bind(black_box(10i64))
                        .uncached()
                        .fetch_all::<Item>()
                        .await
                        .unwrap();
                    black_box(rows);
                }
                start.elapsed()
            })
        });
        // A different kind of work: the result comes from the cache, the database is not asked.
        $tokio.block_on(async { conn.query(QUERY).bind(10i64).ttl(ttl).fetch_all::<Item>().await.unwrap() });
        $group.bench_function(concat!($label, "/connscope_cached_hit"), |b| {
            b.to_async(&$tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let rows =
                        conn.query(QUERY).bind(black_box(10i64)).ttl(ttl).fetch_all::<Item>().await.unwrap();
                    black_box(rows);
                }
                start.elapsed()
            })
        });
    }};
}

fn sql_query(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut group = c.benchmark_group("sql_query");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    let (sqlite_rt, sqlite) = tokio.block_on(setup::<sqlx::Sqlite>("sqlite::memory:"));
    cases!(group, tokio, "sqlite_memory", &sqlite, sqlx::Sqlite);
    let report = tokio.block_on(sqlite_rt.shutdown());
    assert!(report.is_ok(), "{report:?}");

    #[cfg(feature = "postgres")]
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let (pg_rt, pg) = tokio.block_on(setup::<sqlx::Postgres>(&url));
            cases!(group, tokio, "postgres", &pg, sqlx::Postgres);
            tokio.block_on(async { pg.execute("drop table bench_items").await.unwrap() });
            let report = tokio.block_on(pg_rt.shutdown());
            assert!(report.is_ok(), "{report:?}");
        }
        Err(_) => eprintln!("*** sql_query: PostgreSQL cases SKIPPED: set DATABASE_URL to include them ***"),
    }
    #[cfg(not(feature = "postgres"))]
    eprintln!(
        "*** sql_query: PostgreSQL cases SKIPPED: build with --features postgres and set DATABASE_URL ***"
    );
    group.finish();
}

criterion_group!(benches, sql_query);
criterion_main!(benches);
