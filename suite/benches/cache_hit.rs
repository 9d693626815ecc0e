//! Cache-hit cost of connscope beside the libraries a user would otherwise pick, in one run.
//!
//! Every case looks up the same present key (u64) and returns a clone of an `Arc<String>`; every
//! cache is bounded alike (600 s ttl, 10,000 entries) except the `Mutex<HashMap>` floor; every
//! row is timed by the same async loop. Compare ratios within one run
//! (`cargo bench --bench cache_hit`).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use connscope::{Resource, Runtime, Scope};
use criterion::{Criterion, criterion_group, criterion_main};

type Value = Arc<String>;

fn value() -> Value {
    Arc::new("a cached value".to_owned())
}

static GLOBAL: Resource<u64, Value> =
    Resource::new("bench_global", Scope::Global, Some(Duration::from_secs(600)), Some(10_000), None);
/// The same ttl, no bound: what `max_entries` costs on a hit.
static GLOBAL_TTL: Resource<u64, Value> =
    Resource::new("bench_global_ttl", Scope::Global, Some(Duration::from_secs(600)), None, None);
/// No ttl, no bound: what the ttl + `max_entries` rows cost beyond a plain hit.
static GLOBAL_PLAIN: Resource<u64, Value> =
    Resource::new("bench_global_plain", Scope::Global, None, None, None);
static PER_SESSION: Resource<u64, Value> =
    Resource::new("bench_session", Scope::Session, Some(Duration::from_secs(600)), Some(10_000), None);

/// Bounded as the connscope resources are: 600 s ttl, 10,000 entries.
#[cached(ttl_secs = 600, max_size = 10_000)]
async fn cached_crate_fn(key: u64) -> Value {
    let _ = key;
    value()
}

/// One harness style for every row: an async `iter_custom` loop timing `iters` lookups on the
/// same Tokio runtime, sync lookups included (they pay the same loop, not a cheaper harness).
macro_rules! bench_async {
    ($group:expr, $tokio:expr, $name:literal, $call:expr) => {
        $group.bench_function($name, |b| {
            b.to_async(&$tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box($call);
                }
                start.elapsed()
            })
        });
    };
}

fn hits(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut group = c.benchmark_group("cache_hit");

    // Raw moka future cache, `get_with` hit (what a hand-rolled wrapper would call), bounded as
    // the connscope resources are.
    let moka_future: moka::future::Cache<u64, Value> =
        moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build();
    tokio.block_on(moka_future.insert(1, value()));
    let moka_future = &moka_future;
    bench_async!(
        group,
        tokio,
        "moka_future_get_with",
        moka_future.get_with(black_box(1), async { value() }).await
    );

    // connscope, global scope, outside any session (the process-wide default runtime).
    tokio.block_on(async { GLOBAL.get_with(1, async { value() }).await.unwrap() });
    bench_async!(
        group,
        tokio,
        "connscope_global",
        GLOBAL.get_with(black_box(1), async { value() }).await.unwrap()
    );

    // The same ttl, without a bound.
    tokio.block_on(async { GLOBAL_TTL.get_with(1, async { value() }).await.unwrap() });
    bench_async!(
        group,
        tokio,
        "connscope_global_ttl_only",
        GLOBAL_TTL.get_with(black_box(1), async { value() }).await.unwrap()
    );

    // The same, without ttl or bound.
    tokio.block_on(async { GLOBAL_PLAIN.get_with(1, async { value() }).await.unwrap() });
    bench_async!(
        group,
        tokio,
        "connscope_global_plain",
        GLOBAL_PLAIN.get_with(black_box(1), async { value() }).await.unwrap()
    );

    // connscope, session scope, inside a session (the loop runs inside `Session::run`).
    let session = tokio.block_on(async { Runtime::global().session() });
    tokio.block_on(session.run(async { PER_SESSION.get_with(1, async { value() }).await.unwrap() }));
    group.bench_function("connscope_session", |b| {
        let session = &session;
        b.to_async(&tokio).iter_custom(|iters| async move {
            session
                .run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(PER_SESSION.get_with(black_box(1), async { value() }).await.unwrap());
                    }
                    start.elapsed()
                })
                .await
        })
    });

    // The `cached` crate's #[cached(ttl_secs, max_size)] async fn.
    tokio.block_on(cached_crate_fn(1));
    bench_async!(group, tokio, "cached_crate_async_ttl_size", cached_crate_fn(black_box(1)).await);

    // Raw moka sync cache, `get`.
    let moka_sync: moka::sync::Cache<u64, Value> =
        moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build();
    moka_sync.insert(1, value());
    let moka_sync = &moka_sync;
    bench_async!(group, tokio, "moka_sync_get", moka_sync.get(&black_box(1)));

    // A Mutex<HashMap> lookup of the same key and value (no ttl, no bound: the floor).
    let map: Mutex<HashMap<u64, Value>> = Mutex::new(HashMap::from([(1, value())]));
    let map = &map;
    bench_async!(group, tokio, "mutex_hashmap_get", map.lock().unwrap().get(&black_box(1)).cloned());

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = hits
}
criterion_main!(benches);
