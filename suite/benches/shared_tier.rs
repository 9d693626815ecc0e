//! The shared tier (feature `redis`, needs `REDIS_URL`), in one run:
//! - a local-tier hit of a `shared` resource beside the same hit of an unshared one (the hit
//!   must not touch the network: target within 1.1x);
//! - a cross-instance hit (a local miss whose value another instance stored in Redis: GET,
//!   decode, store locally) beside a direct redis-rs `GET` of the same bytes;
//! - a local hit of a shared SQL read (`Query::shared`) beside the same read unshared.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p connscope-suite --features redis --bench shared_tier`

use std::hint::black_box;
use std::time::{Duration, Instant};

use connscope::redis::RedisSettings;
use connscope::sql::SqliteDb;
use connscope::{Resource, Runtime, Scope, SharedSpec};
use criterion::{Criterion, criterion_group, criterion_main};

type Value = Vec<u64>;

const TTL: Option<Duration> = Some(Duration::from_secs(600));

static UNSHARED: Resource<u64, Value> = Resource::new("bench_unshared", Scope::Global, TTL, None, None);
static SHARED: Resource<u64, Value> =
    Resource::new("bench_shared", Scope::Global, TTL, None, None).shared(SharedSpec::new("1"));

fn value() -> Value {
    (0..16).collect()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("\n*** SKIPPED shared_tier: set REDIS_URL=redis://127.0.0.1:6379 ***");
        return;
    };
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let prefix = format!("connscope-bench:{}", std::process::id());
    let file = std::env::temp_dir().join(format!("connscope-bench-shared-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let rt = Runtime::builder()
        .no_idle_timeout()
        .redis(RedisSettings::new(url.clone()).prefix(prefix))
        .connection_setting("bench", "url", format!("sqlite://{}?mode=rwc", file.display()))
        .build();
    let session = rt.session();
    tokio.block_on(session.run(async {
        UNSHARED.get_or_run(1, async { value() }).await;
        SHARED.get_or_run(1, async { value() }).await;
    }));

    let mut group = c.benchmark_group("shared_tier_hit");
    for (name, resource) in [("unshared local hit", &UNSHARED), ("shared local hit", &SHARED)] {
        group.bench_function(name, |b| {
            b.to_async(&tokio).iter_custom(|iters| {
                let session = session.clone();
                async move {
                    session
                        .run(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                black_box(resource.get_or_run(1, async { unreachable!() }).await);
                            }
                            start.elapsed()
                        })
                        .await
                }
            })
        });
    }
    group.finish();

    // The bytes the tier stored for key 2, read back by a plain client.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut direct = tokio.block_on(client.get_multiplexed_async_connection()).unwrap();
    tokio.block_on(session.run(SHARED.get_or_run(2, async { value() })));
    let local = tokio.block_on(session.run(async { SHARED.cache().unwrap() }));
    let key: Vec<u8> = tokio.block_on(async {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("connscope-bench:{}:bench_shared:1:v:*", std::process::id()))
            .query_async(&mut direct)
            .await
            .unwrap();
        keys.into_iter().find(|k| k.ends_with(&[2])).expect("the stored value")
    });

    let mut group = c.benchmark_group("shared_tier_remote");
    group.bench_function("cross-instance hit (local miss, value from Redis)", |b| {
        b.to_async(&tokio).iter_custom(|iters| {
            let (session, local) = (session.clone(), local.clone());
            async move {
                session
                    .run(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Dropped here only (not in Redis, not broadcast): the next call is a
                            // local miss that finds the value in Redis.
                            local.invalidate(&2).await;
                            let start = Instant::now();
                            black_box(SHARED.get_or_run(2, async { unreachable!() }).await);
                            total += start.elapsed();
                        }
                        total
                    })
                    .await
            }
        })
    });
    group.bench_function("direct redis-rs GET of the same bytes", |b| {
        b.to_async(&tokio).iter_custom(|iters| {
            let (mut conn, key) = (direct.clone(), key.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
                    black_box(bytes);
                }
                start.elapsed()
            }
        })
    });
    group.finish();
    sql_hits(c, &tokio, &rt);
    tokio.block_on(rt.shutdown());
    let _ = std::fs::remove_file(file);
}

/// A local hit of a shared SQL read beside the same read unshared (a SQLite file: an in-memory
/// database is never shared).
fn sql_hits(c: &mut Criterion, tokio: &tokio::runtime::Runtime, rt: &Runtime) {
    let conn = tokio.block_on(async {
        let conn = rt.connection::<SqliteDb>("bench").await.unwrap();
        conn.execute("create table t (id integer, name text)").await.unwrap();
        conn.execute("insert into t values (1, 'a'), (2, 'b')").await.unwrap();
        conn
    });
    let sql = "select id, name from t where id > ?";
    let mut group = c.benchmark_group("shared_sql_hit");
    for shared in [false, true] {
        let name = if shared { "shared SQL read, local hit" } else { "unshared SQL read, hit" };
        group.bench_function(name, |b| {
            b.to_async(tokio).iter_custom(|iters| {
                let conn = conn.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let q = conn.query(sql).bind(0i64).tag("t");
                        let rows = if shared {
                            q.shared().fetch_all::<(i64, String)>().await
                        } else {
                            q.fetch_all::<(i64, String)>().await
                        };
                        black_box(rows.unwrap());
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
