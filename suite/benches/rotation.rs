//! Queries through a connscope SQL connection whose credentials expire, beside the same
//! queries through one whose credentials never expire, and the cached-query hit path, in one
//! run. A SQLite file by default; PostgreSQL too when `DATABASE_URL` is set (build with
//! `--features postgres`).
//!
//! Ahead of each expiry, fresh credentials for the same user renew the pool in place (no
//! connect, no close); credentials for another user (Vault's dynamic secrets) rebuild it (the
//! replacement connects, is swapped in, the old pool is drained and closed). Both are measured.
//!
//! * criterion: one query at a time, and a cached hit, through a connection whose credentials
//!   never expire (`steady`), one renewed in place every ~90 ms (`renewed_in_a_loop`) and one
//!   rebuilt every ~90 ms (`rebuilt_in_a_loop`).
//! * tail latency, printed: 8 tasks query for `ROTATION_BENCH_SECS` (default 10) seconds
//!   through each of three connections in turn: credentials that never expire (the baseline),
//!   renewed every ~0.9 s, and rebuilt every ~0.9 s. For the renewed one, its p99 over the
//!   baseline's. For the rebuilt one, a query is *during a swap* when it overlaps the window
//!   from the replacement's connect start to the old pool's close, timed from connscope's own
//!   events (the soak tests' rule, `suite/tests/rotation_support/phases.rs`), else *outside*:
//!   p99 of each, and their ratio. Target for both ratios: ≤ 1.5. Plus the p99 of a cached hit.
//! * side by side, printed: the same load through the swap users write by hand today (a plain
//!   sqlx pool behind a lock, replaced for the other user every ~0.9 s, the old one closed with
//!   `Pool::close`), timed by the same rule, and connscope's p99 during a swap over its own.
//!
//! PostgreSQL is reached as roles whose password the server checks (`connscope_rot_bench1`
//! and `2`, members of `connscope_rotators`: `bash .ci/run` adds their `scram-sha-256` line to
//! `pg_hba.conf`), so each connect pays for the SCRAM handshake as in production.
//!
//! MariaDB/MySQL too when `MYSQL_URL` is set (build with `--features mysql`), as two users with
//! passwords (`connscope_rot_bench1` and `2`).
//!
//! `cargo bench -p connscope-suite --bench rotation [--features postgres,mysql]`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use connscope::sql::{Backend, SqlDb};
use connscope::{Conn, CredentialSource, Fetched};
use criterion::{Criterion, criterion_group, criterion_main};
use tracing_subscriber::layer::SubscriberExt;

#[path = "../tests/rotation_support/phases.rs"]
mod phases;
use phases::{Phases, Swap, SwapClock, pct, swaps_of};

/// `select 1`, as a 64-bit integer on every backend.
fn statement<DB: Backend>() -> &'static str {
    if DB::KIND == "postgres" { "select 1::int8" } else { "select 1" }
}

/// Where the bench connects: a URL, and two users with their passwords.
struct Target {
    url: String,
    users: [(String, String); 2],
}

/// What happens to a connection's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotation {
    /// They never expire.
    Never,
    /// They expire; the fresh ones are for the same user: renewed in place.
    SameUser,
    /// They expire; the fresh ones are for the other user: rebuilt.
    NewUser,
}

fn pool<DB: Backend>(name: &str, target: &Target, lifetime: Duration, rotation: Rotation) -> Conn<SqlDb<DB>> {
    let users = target.users.clone();
    let issued = Arc::new(AtomicU64::new(0));
    let source = CredentialSource::from_fn(move || {
        let n = issued.fetch_add(1, Ordering::Relaxed) as usize;
        let (user, password) = users[if rotation == Rotation::NewUser { n % 2 } else { 0 }].clone();
        let fetched = Fetched::new(password).with_user(user);
        async move { Ok(if rotation == Rotation::Never { fetched } else { fetched.expires_in(lifetime) }) }
    });
    let mut db = SqlDb::<DB>::new(&target.url).with_credentials(source);
    db.max_connections = 8;
    Conn::new(name, db)
}

async fn query<DB: Backend>(conn: &Conn<SqlDb<DB>>)
where
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let row = conn.query(statement::<DB>()).uncached().fetch_one::<(i64,)>().await.unwrap();
    black_box(row);
}

async fn hit<DB: Backend>(conn: &Conn<SqlDb<DB>>)
where
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let row =
        conn.query(statement::<DB>()).ttl(Duration::from_secs(3600)).fetch_one::<(i64,)>().await.unwrap();
    black_box(row);
}

/// One call: when it started, how long it took, whether it was a cached hit.
type Sample = (Instant, Duration, bool);

/// 8 tasks calling through `conn` for `secs` seconds; every fourth call of half the tasks is a
/// cached hit.
async fn tail<DB: Backend>(conn: &Conn<SqlDb<DB>>, secs: u64) -> Vec<Sample>
where
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    query(conn).await;
    hit(conn).await;
    let conn = conn.clone();
    load(secs, true, move |cached| {
        let conn = conn.clone();
        async move { if cached { hit(&conn).await } else { query(&conn).await } }
    })
    .await
}

/// 8 tasks making `call`s for `secs` seconds, a millisecond apart; with `hits`, every fourth
/// call of half the tasks is `call(true)` (a cached hit), the others `call(false)`.
async fn load<F, Fut>(secs: u64, hits: bool, call: F) -> Vec<Sample>
where
    F: Fn(bool) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let cached = hits && i % 2 == 0 && n.is_multiple_of(4);
                let t0 = Instant::now();
                call(cached).await;
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
    samples
}

/// The swap users write by hand today, for comparison: a plain sqlx pool behind a lock, which a
/// background task replaces every ~0.9 s with a pool for the other user (opened to as many
/// connections as the old one has, one at a time, as connscope does), then closes the old one.
/// The same 8 tasks query through whichever pool is current. Returns the queries and the swaps.
async fn by_hand<DB: Backend>(target: &Target, secs: u64) -> (Vec<Sample>, Vec<Swap>)
where
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let (url, users) = (target.url.clone(), target.users.clone());
    let open = move |n: usize| {
        let (user, password) = &users[n % 2];
        let options = DB::options(&url, Some(user), Some(password)).unwrap();
        sqlx::pool::PoolOptions::<DB>::new().max_connections(8).connect_lazy_with(options)
    };
    let current = Arc::new(RwLock::new(open(0)));
    let query = {
        let current = Arc::clone(&current);
        move |_| {
            let pool = current.read().unwrap().clone();
            async move {
                let row = sqlx::query_as::<DB, (i64,)>(statement::<DB>()).fetch_one(&pool).await.unwrap();
                black_box(row);
            }
        }
    };
    query(false).await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let swapper = tokio::spawn(async move {
        let mut swaps = Vec::new();
        for n in 1.. {
            tokio::time::sleep(Duration::from_millis(900)).await;
            if Instant::now() >= deadline {
                break;
            }
            let started = Instant::now();
            let new = open(n);
            let size = current.read().unwrap().size().max(1);
            let mut held = Vec::new();
            for _ in 0..size {
                held.push(new.acquire().await.unwrap());
            }
            drop(held);
            let old = std::mem::replace(&mut *current.write().unwrap(), new);
            let swapped = Instant::now();
            old.close().await;
            swaps.push(Swap { started, swapped, closed: Instant::now() });
        }
        swaps
    });
    let samples = load(secs, false, query).await;
    (samples, swapper.await.unwrap())
}

/// The sorted durations of the queries (or of the cached hits) among `samples`.
fn durations(samples: &[Sample], cached: bool) -> Vec<Duration> {
    let mut v: Vec<_> = samples.iter().filter(|s| s.2 == cached).map(|s| s.1).collect();
    v.sort_unstable();
    v
}

fn tails<DB: Backend>(tokio: &tokio::runtime::Runtime, label: &str, target: &Target)
where
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let secs = std::env::var("ROTATION_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let run = |name: &str, rotation| {
        let conn = pool::<DB>(name, target, Duration::from_secs(1), rotation);
        let samples = tokio.block_on(tail(&conn, secs));
        tokio.block_on(conn.close());
        (samples, conn.counters())
    };
    let (baseline, _) = run(&format!("tail-steady-{label}"), Rotation::Never);
    let (renewed, r) = run(&format!("tail-renewed-{label}"), Rotation::SameUser);
    let rebuilt_name = format!("tail-rebuilt-{label}");
    let (rebuilt, b) = run(&rebuilt_name, Rotation::NewUser);

    let (base_q, renew_q) = (durations(&baseline, false), durations(&renewed, false));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "rotation/{label}, 8 tasks, {secs} s each: credentials that never expire: query p99 {:?} ({} queries), \
         cached hit p99 {:?}; renewed in place every ~0.9 s ({} renewals, {} connects): query p99 {:?} ({} \
         queries), ratio to the baseline {:.2} (target <= 1.5), cached hit p99 {:?}",
        pct(&base_q, 99),
        base_q.len(),
        pct(&durations(&baseline, true), 99),
        r.renewals,
        r.connects,
        pct(&renew_q, 99),
        renew_q.len(),
        ratio(pct(&renew_q, 99), pct(&base_q, 99)),
        pct(&durations(&renewed, true), 99),
    );
    let swaps = swaps_of(&rebuilt_name);
    let split = |cached: bool| {
        let of: Vec<_> = rebuilt.iter().filter(|s| s.2 == cached).map(|&(t0, d, _)| (t0, d)).collect();
        Phases::of(&of, &swaps)
    };
    let (queries, hits) = (split(false), split(true));
    println!(
        "rotation/{label}, 8 tasks, {secs} s: rebuilt for a new user every ~0.9 s ({} rebuilds): queries: {}; \
         cached hit p99 outside {:?}, during a swap {:?}",
        b.rebuilds,
        queries.summary(&swaps),
        pct(&hits.outside, 99),
        pct(&hits.during(), 99),
    );
    let (samples, swaps) = tokio.block_on(by_hand::<DB>(target, secs));
    let plain: Vec<_> = samples.iter().map(|&(t0, d, _)| (t0, d)).collect();
    let plain = Phases::of(&plain, &swaps);
    println!(
        "rotation/{label}, 8 tasks, {secs} s: by hand (a plain sqlx pool swapped for the other user every \
         ~0.9 s, the old one closed at once): queries: {}",
        plain.summary(&swaps),
    );
    println!(
        "rotation/{label}: p99 during a swap, connscope / by hand = {:.2}; outside a swap {:.2}",
        ratio(pct(&queries.during(), 99), pct(&plain.during(), 99)),
        ratio(pct(&queries.outside, 99), pct(&plain.outside, 99)),
    );
}

fn cases<DB: Backend>(c: &mut Criterion, tokio: &tokio::runtime::Runtime, label: &str, target: &Target)
where
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let conns = [
        ("steady", Rotation::Never),
        ("renewed_in_a_loop", Rotation::SameUser),
        ("rebuilt_in_a_loop", Rotation::NewUser),
    ]
    .map(|(name, rotation)| {
        // Renewed or rebuilt about every 90 ms while the cases run.
        let conn = pool::<DB>(&format!("{name}-{label}"), target, Duration::from_millis(100), rotation);
        tokio.block_on(async {
            query(&conn).await;
            hit(&conn).await;
        });
        (name, conn)
    });
    let mut group = c.benchmark_group(format!("rotation/{label}"));
    group.measurement_time(Duration::from_secs(3));
    for (name, conn) in &conns {
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
    for (name, conn) in &conns {
        let c = conn.counters();
        println!("rotation/{label}/{name}: {} renewals, {} rebuilds", c.renewals, c.rebuilds);
        tokio.block_on(conn.close());
    }
    tails::<DB>(tokio, label, target);
}

fn bench(c: &mut Criterion) {
    // The swap clock reads connscope's rebuild and close events.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("connscope_runtime::conn=debug"))
        .with(SwapClock);
    let _ = tracing::subscriber::set_global_default(subscriber);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("connscope-bench-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // SQLite ignores users and passwords: a new user still means a new pool.
    let sqlite = Target {
        url: format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
        users: [("one".into(), "-".into()), ("two".into(), "-".into())],
    };
    cases::<sqlx::Sqlite>(c, &tokio, "sqlite_file", &sqlite);
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let target = tokio.block_on(pg::roles_with_passwords(&url));
        cases::<sqlx::Postgres>(c, &tokio, "postgres", &target);
    }
    #[cfg(feature = "mysql")]
    if let Ok(url) = std::env::var("MYSQL_URL") {
        let target = tokio.block_on(my::users_with_passwords(&url));
        cases::<sqlx::MySql>(c, &tokio, "mysql", &target);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL: the roles the bench connects as, with passwords the server checks.
#[cfg(feature = "postgres")]
mod pg {
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    use super::Target;

    /// Creates `connscope_rot_bench1` and `2` with fresh passwords (members of
    /// `connscope_rotators`). Says loudly when the server does not check the passwords (the
    /// figures then leave out the SCRAM handshake).
    pub async fn roles_with_passwords(url: &str) -> Target {
        let mut admin = PgConnection::connect(url).await.expect("DATABASE_URL answers");
        let mut users = Vec::new();
        for n in 1..=2 {
            let (role, password) =
                (format!("connscope_rot_bench{n}"), format!("bench-{n}-{}", std::process::id()));
            let sql = format!(
                "do $$ begin create role connscope_rotators nologin; \
                 exception when duplicate_object then null; end $$; \
                 do $$ begin create role {role} login; exception when duplicate_object then null; end $$; \
                 grant connscope_rotators to {role}; alter role {role} password '{password}'"
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            users.push((role, password));
        }
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let url = format!(
            "postgres://{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("postgres")
        );
        let wrong =
            format!("postgres://{}:surely-wrong@{}", users[0].0, url.trim_start_matches("postgres://"));
        if PgConnection::connect(&wrong).await.is_ok() {
            println!(
                "*** WARNING rotation bench: PostgreSQL does not check the bench roles' passwords \
                 (pg_hba.conf trusts them): connects skip the SCRAM handshake; `bash .ci/run` sets the \
                 server up ***"
            );
        }
        let [one, two]: [(String, String); 2] = users.try_into().unwrap();
        Target { url, users: [one, two] }
    }
}

/// MariaDB/MySQL: the users the bench connects as (the server always checks passwords).
#[cfg(feature = "mysql")]
mod my {
    use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

    use super::Target;

    /// Creates (or replaces) `connscope_rot_bench1` and `2` with fresh passwords, allowed to
    /// read `url`'s database.
    pub async fn users_with_passwords(url: &str) -> Target {
        let mut admin = MySqlConnection::connect(url).await.expect("MYSQL_URL answers");
        let opts: sqlx::mysql::MySqlConnectOptions = url.parse().unwrap();
        let database = opts.get_database().unwrap_or("test").to_owned();
        let mut users = Vec::new();
        for n in 1..=2 {
            let (user, password) =
                (format!("connscope_rot_bench{n}"), format!("bench-{n}-{}", std::process::id()));
            for sql in [
                format!("create or replace user '{user}'@'%' identified by '{password}'"),
                format!("grant select on `{database}`.* to '{user}'@'%'"),
            ] {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            }
            users.push((user, password));
        }
        let url = format!("mysql://{}:{}/{database}", opts.get_host(), opts.get_port());
        let [one, two]: [(String, String); 2] = users.try_into().unwrap();
        Target { url, users: [one, two] }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
