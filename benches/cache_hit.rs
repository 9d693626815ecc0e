//! Cache-hit cost of connscope beside the libraries a user would otherwise pick, in one run.
//!
//! Every case looks up the same present key (u64) and returns a clone of an `Arc<String>`.
//! Compare ratios within one run (`cargo bench --bench cache_hit`).

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
static PER_SESSION: Resource<u64, Value> =
    Resource::new("bench_session", Scope::Session, Some(Duration::from_secs(600)), Some(10_000), None);

#[cached(ttl_secs = 600)]
async fn cached_crate_fn(key: u64) -> Value {
    let _ = key;
    value()
}

fn hits(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut group = c.benchmark_group("cache_hit");

    // connscope, global scope, outside any session (the process-wide default runtime).
    tokio.block_on(async { GLOBAL.get_with(1, async { value() }).await.unwrap() });
    group.bench_function("connscope_global", |b| {
        b.to_async(&tokio).iter_custom(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(GLOBAL.get_with(black_box(1), async { value() }).await.unwrap());
            }
            start.elapsed()
        })
    });

    // connscope, session scope, inside a session.
    let session = tokio.block_on(async { Runtime::global().session() });
    tokio.block_on(session.run(async { PER_SESSION.get_with(1, async { value() }).await.unwrap() }));
    group.bench_function("connscope_session", |b| {
        let session = session.clone();
        b.to_async(&tokio).iter_custom(move |iters| {
            let session = session.clone();
            async move {
                session
                    .run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(PER_SESSION.get_with(black_box(1), async { value() }).await.unwrap());
                        }
                        start.elapsed()
                    })
                    .await
            }
        })
    });

    // Raw moka future cache, `get_with` hit (what a hand-rolled wrapper would call).
    let moka_future: moka::future::Cache<u64, Value> =
        moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build();
    tokio.block_on(moka_future.insert(1, value()));
    group.bench_function("moka_future_get_with", |b| {
        b.to_async(&tokio).iter_custom(|iters| {
            let cache = moka_future.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get_with(black_box(1), async { value() }).await);
                }
                start.elapsed()
            }
        })
    });

    // Raw moka sync cache, `get`.
    let moka_sync: moka::sync::Cache<u64, Value> =
        moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build();
    moka_sync.insert(1, value());
    group.bench_function("moka_sync_get", |b| b.iter(|| black_box(moka_sync.get(&black_box(1)))));

    // The `cached` crate's #[cached(ttl_secs = ...)] async fn.
    tokio.block_on(cached_crate_fn(1));
    group.bench_function("cached_crate_async_ttl", |b| {
        b.to_async(&tokio).iter_custom(|iters| async move {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(cached_crate_fn(black_box(1)).await);
            }
            start.elapsed()
        })
    });

    // A Mutex<HashMap> lookup of the same key and value.
    let map: Mutex<HashMap<u64, Value>> = Mutex::new(HashMap::from([(1, value())]));
    group.bench_function("mutex_hashmap_get", |b| {
        b.iter(|| black_box(map.lock().unwrap().get(&black_box(1)).cloned()))
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = hits
}
criterion_main!(benches);
