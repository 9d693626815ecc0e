//! Queries through a connscope SQL connection while its pool is rebuilt (credentials that
//! expire, rebuilt ahead of expiry: the replacement connects, is swapped in, the old pool
//! drained and closed) beside the same queries outside a swap, and the cached-query hit path,
//! in one run. A SQLite file by default; PostgreSQL when `DATABASE_URL` is set (build with
//! `--features postgres`).
//!
//! Two parts:
//!
//! * criterion: one query at a time, through a connection that is never rebuilt
//!   (`query/steady`), through one rebuilt every ~90 ms (`query/rebuilt_in_a_loop`), and a cached
//!   hit on each (`cached_hit/...`).
//! * tail latency, printed: 8 tasks query for `ROTATION_BENCH_SECS` (default 10) seconds
//!   through a connection rebuilt every ~0.9 s; a query is *during a swap* when it ran within
//!   150 ms before (the replacement connecting) or 50 ms after a swap (the soak test's rule in
//!   `suite/tests/credentials.rs`), else *outside*. p99 of each, and their ratio (target ≤ 1.5),
//!   plus the p99 of a cached hit outside and during swaps.
//!
//! `cargo bench -p connscope-suite --bench rotation [--features postgres]`

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope::Conn;
use connscope::sql::{Backend, SqlDb};
use criterion::{Criterion, criterion_group, criterion_main};

const QUERY: &str = "select 1";

fn pool<DB: Backend>(url: &str, lifetime: Option<Duration>) -> Conn<SqlDb<DB>> {
    let mut db = SqlDb::<DB>::new(url);
    db.max_connections = 8;
    db.min_connections = 8;
    if let Some(lifetime) = lifetime {
        db = db.with_credentials_lifetime(lifetime);
    }
    Conn::new("bench", db)
}

async fn query<DB: Backend>(conn: &Conn<SqlDb<DB>>)
where
    for<'r> (i32,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let row = conn.query(QUERY).uncached().fetch_one::<(i32,)>().await.unwrap();
    black_box(row);
}

async fn hit<DB: Backend>(conn: &Conn<SqlDb<DB>>)
where
    for<'r> (i32,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let row = conn.query(QUERY).ttl(Duration::from_secs(3600)).fetch_one::<(i32,)>().await.unwrap();
    black_box(row);
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// Samples of one connection rebuilt every ~0.9 s: (started, took, cached hit?) per call, and
/// when each swap was seen.
async fn tail<DB: Backend>(url: &str, secs: u64) -> (Vec<(Instant, Duration, bool)>, Vec<Instant>, u64)
where
    for<'r> (i32,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let conn = pool::<DB>(url, Some(Duration::from_secs(1)));
    query(&conn).await;
    hit(&conn).await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let swaps = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (conn, swaps) = (conn.clone(), Arc::clone(&swaps));
        tokio::spawn(async move {
            let mut seen = 0;
            while Instant::now() < deadline {
                let n = conn.counters().rebuilds;
                if n != seen {
                    seen = n;
                    swaps.lock().unwrap().push(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Every fourth call of half the tasks is a cached hit.
                let cached = i % 2 == 0 && n.is_multiple_of(4);
                let t0 = Instant::now();
                if cached {
                    hit(&conn).await
                } else {
                    query(&conn).await
                }
                samples.push((t0, t0.elapsed(), cached));
                n += 1;
                // Busy, not saturated (as in the soak test): the rebuild must get to run.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    watcher.await.unwrap();
    let rebuilds = conn.counters().rebuilds;
    conn.close().await;
    let swaps = swaps.lock().unwrap().clone();
    (samples, swaps, rebuilds)
}

fn report(label: &str, samples: &[(Instant, Duration, bool)], swaps: &[Instant], rebuilds: u64) {
    let during = |t0: Instant, d: Duration| {
        swaps.iter().any(|&s| t0 < s + Duration::from_millis(50) && t0 + d + Duration::from_millis(150) > s)
    };
    let (mut q_in, mut q_out, mut h_in, mut h_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(t0, d, cached) in samples {
        match (cached, during(t0, d)) {
            (false, true) => q_in.push(d),
            (false, false) => q_out.push(d),
            (true, true) => h_in.push(d),
            (true, false) => h_out.push(d),
        }
    }
    // Where the slowest 1% of the queries during swaps ran: before the swap (the replacement
    // connecting) or after it (the new pool's first use, the old one draining and closing).
    let mut slow: Vec<(Duration, Instant)> = samples
        .iter()
        .filter(|&&(t0, d, cached)| !cached && during(t0, d))
        .map(|&(t0, d, _)| (d, t0))
        .collect();
    slow.sort_unstable_by_key(|&(d, _)| std::cmp::Reverse(d));
    slow.truncate((q_in.len() / 100).max(1));
    let before = slow
        .iter()
        .filter(|&&(d, t0)| {
            let end = t0 + d;
            swaps
                .iter()
                .filter(|&&s| t0 < s + Duration::from_millis(50) && end + Duration::from_millis(150) > s)
                .all(|&s| end <= s)
        })
        .count();
    let (n_in, n_out) = (q_in.len(), q_out.len());
    let (q_in, q_out, h_in, h_out) = (p99(&mut q_in), p99(&mut q_out), p99(&mut h_in), p99(&mut h_out));
    println!(
        "{label}: {rebuilds} rebuilds; query p99 outside a swap {q_out:?} ({n_out} queries), during a swap \
         {q_in:?} ({n_in} queries): ratio {:.2} (target <= 1.5); cached hit p99 outside {h_out:?}, during {h_in:?}; \
         of the slowest 1% during swaps, {before} of {} ended before the swap (the replacement connecting), the \
         rest overlapped or followed it",
        q_in.as_secs_f64() / q_out.as_secs_f64().max(1e-9),
        slow.len(),
    );
}

fn cases<DB: Backend>(c: &mut Criterion, tokio: &tokio::runtime::Runtime, label: &str, url: &str)
where
    for<'r> (i32,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let steady = tokio.block_on(async {
        let conn = pool::<DB>(url, None);
        query(&conn).await;
        hit(&conn).await;
        conn
    });
    // Rebuilt about every 90 ms while the cases run.
    let rebuilt = tokio.block_on(async {
        let conn = pool::<DB>(url, Some(Duration::from_millis(100)));
        query(&conn).await;
        hit(&conn).await;
        conn
    });
    let mut group = c.benchmark_group(format!("rotation/{label}"));
    group.measurement_time(Duration::from_secs(3));
    for (name, conn) in [("steady", &steady), ("rebuilt_in_a_loop", &rebuilt)] {
        group.bench_function(format!("query/{name}"), |b| {
            b.to_async(tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    query(conn).await;
                }
                start.elapsed()
            })
        });
        group.bench_function(format!("cached_hit/{name}"), |b| {
            b.to_async(tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    hit(conn).await;
                }
                start.elapsed()
            })
        });
    }
    group.finish();
    println!("rotation/{label}: the rebuilt connection was rebuilt {} times", rebuilt.counters().rebuilds);
    tokio.block_on(async {
        steady.close().await;
        rebuilt.close().await;
    });
    let secs = std::env::var("ROTATION_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (samples, swaps, rebuilds) = tokio.block_on(tail::<DB>(url, secs));
    report(&format!("rotation/{label}, 8 tasks, {secs} s"), &samples, &swaps, rebuilds);
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("connscope-bench-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    cases::<sqlx::Sqlite>(c, &tokio, "sqlite_file", &url);
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        cases::<sqlx::Postgres>(c, &tokio, "postgres", &url);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
