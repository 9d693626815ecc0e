//! Cost of a `#[cached_resource]` hit beside the runtime's own `Resource` hit (what the macro
//! expands to) and the `cached` crate's `#[cached]` on the same function, in one run.
//! Target: the macro within 1.1x of the runtime hit, and faster than `cached`.
//!
//! `cargo bench --bench macro_hit`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use connscope::{Resource, Scope, cached_resource};
use criterion::{Criterion, criterion_group, criterion_main};

type Value = Arc<String>;

fn value(key: u64) -> Value {
    Arc::new(format!("value {key}"))
}

/// The macro, plain return (`get_or_run`).
#[cached_resource(ttl = "10m", max_entries = 10_000)]
async fn with_macro(key: u64) -> Value {
    value(key)
}

/// The macro, `Result` return (`try_get`).
#[cached_resource(ttl = "10m", max_entries = 10_000)]
async fn with_macro_result(key: u64) -> Result<Value, connscope::Error> {
    Ok(value(key))
}

/// The macro with background refresh (`try_get_refreshing`): its hit must cost what a plain
/// hit costs.
#[cached_resource(ttl = "10m", max_entries = 10_000, refresh = "background")]
async fn with_macro_refresh(key: u64) -> Result<Value, connscope::Error> {
    Ok(value(key))
}

/// The runtime by hand: what the macro expands to.
static BY_HAND: Resource<u64, Value> =
    Resource::new("by_hand", Scope::Global, Some(Duration::from_secs(600)), Some(10_000), None);
static BY_HAND_RESULT: Resource<u64, Value> =
    Resource::new("by_hand_result", Scope::Global, Some(Duration::from_secs(600)), Some(10_000), None);

async fn by_hand(key: u64) -> Value {
    BY_HAND.get_or_run(key, async move { value(key) }).await
}

async fn by_hand_result(key: u64) -> Result<Value, connscope::Error> {
    BY_HAND_RESULT.try_get(key, async move { Ok(value(key)) }).await
}

/// The `cached` crate on the same function.
#[cached(ttl_secs = 600, max_size = 10_000)]
async fn with_cached_crate(key: u64) -> Value {
    value(key)
}

macro_rules! bench_async {
    ($group:expr, $tokio:expr, $name:literal, $call:expr) => {
        $tokio.block_on(async { black_box($call) });
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
    let mut group = c.benchmark_group("macro_hit");
    bench_async!(group, tokio, "cached_resource_plain", with_macro(black_box(1)).await);
    bench_async!(group, tokio, "runtime_get_or_run", by_hand(black_box(1)).await);
    bench_async!(group, tokio, "cached_resource_result", with_macro_result(black_box(1)).await.unwrap());
    bench_async!(group, tokio, "runtime_try_get", by_hand_result(black_box(1)).await.unwrap());
    bench_async!(group, tokio, "cached_resource_refresh", with_macro_refresh(black_box(1)).await.unwrap());
    bench_async!(group, tokio, "cached_crate", with_cached_crate(black_box(1)).await);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = hits
}
criterion_main!(benches);
