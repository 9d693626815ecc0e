//! What metrics cost a cache hit (feature `metrics`): the same global hit with no exporter, and
//! while a Prometheus recorder scrapes the runtime (`Runtime::export_metrics` + render) every
//! millisecond on another thread, in one run. The hit path records nothing for metrics (exports
//! read the counters the caches keep anyway), so the two rows should read the same.
//!
//! `cargo bench --bench metrics_hit --features metrics`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connscope::{Resource, Runtime, Scope};
use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;

type Value = Arc<String>;

static HITS: Resource<u64, Value> =
    Resource::new("bench_metrics_hit", Scope::Global, Some(Duration::from_secs(600)), Some(10_000), None);

fn hits(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut group = c.benchmark_group("metrics_hit");
    tokio.block_on(async { HITS.get_with(1, async { Arc::new("v".to_owned()) }).await.unwrap() });
    let mut run = |name: &str| {
        group.bench_function(name, |b| {
            b.to_async(&tokio).iter_custom(|iters| async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(HITS.get_with(black_box(1), async { Arc::new("v".to_owned()) }).await.unwrap());
                }
                start.elapsed()
            })
        });
    };
    run("global_hit_no_exporter");

    let recorder = PrometheusBuilder::new().build_recorder();
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                metrics::with_local_recorder(&recorder, || Runtime::global().export_metrics());
                black_box(recorder.handle().render());
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            scrapes
        })
    };
    run("global_hit_scraped_every_ms");
    stop.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    assert!(scrapes > 0);
    eprintln!("{scrapes} scrapes during the second row");
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
