//! Hits from two threads at once: does a second thread add throughput (distinct keys), or at
//! least not take it away (one hot key)? connscope's global resource beside raw moka and the
//! `cached` crate, in one run.
//!
//! Each row times the same total of hits done by 1 or 2 tasks on a multi-thread Tokio runtime with
//! 1 or 2 workers (one task a worker); the printed scaling is
//! (time for one thread) / (time for two threads): 2.0 is perfect, 1.0 is no gain, below 1.0 is
//! negative scaling.
//!
//! `cargo bench --bench contention`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use connscope::{Resource, Runtime, Scope};

type Value = Arc<String>;

fn value() -> Value {
    Arc::new("a cached value".to_owned())
}

static GLOBAL: Resource<u64, Value> =
    Resource::new("contention", Scope::Global, Some(Duration::from_secs(600)), Some(10_000), None);

/// Without `max_entries` a global cache splits its store by key (no exact LRU order to keep).
static UNBOUNDED: Resource<u64, Value> =
    Resource::new("contention_unbounded", Scope::Global, Some(Duration::from_secs(600)), None, None);

#[cached(ttl_secs = 600, max_size = 10_000)]
async fn cached_crate_fn(key: u64) -> Value {
    let _ = key;
    value()
}

const HITS: u64 = 2_000_000;

/// Times `HITS` calls of `hit(key)` spread over `threads` tasks on a multi-thread Tokio runtime
/// with as many workers (each task held on its own worker until all have started, so they run
/// side by side); task `t` uses `key_of(t)`. The time is from the first task's start to the
/// last task's end.
fn time_hits<F, Fut>(threads: u64, key_of: fn(u64) -> u64, hit: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Value> + Send,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(threads as usize));
    let spans: Vec<(Instant, Instant)> = tokio.block_on(async {
        let tasks: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let key = key_of(t);
                    black_box(hit(key).await);
                    // Blocks this worker until every task has one: they run side by side.
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..HITS / threads {
                        black_box(hit(key).await);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        let mut spans = Vec::new();
        for task in tasks {
            spans.push(task.await.unwrap());
        }
        spans
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

fn row<F, Fut>(name: &str, hit: F)
where
    F: Fn(u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Value> + Send,
{
    let best = |threads, key_of| (0..5).map(|_| time_hits(threads, key_of, hit)).min().unwrap();
    let one = best(1, |_| 0);
    let distinct = best(2, |t| t);
    let same = best(2, |_| 0);
    let ns = |d: Duration| d.as_nanos() as f64 / HITS as f64;
    println!(
        "{name:<24} | {:>7.1} ns | {:>7.1} ns ({:.2}x) | {:>7.1} ns ({:.2}x)",
        ns(one),
        ns(distinct),
        one.as_secs_f64() / distinct.as_secs_f64(),
        ns(same),
        one.as_secs_f64() / same.as_secs_f64(),
    );
}

fn main() {
    let rt = Runtime::global().clone();
    println!("wall time per hit (total hits / elapsed); scaling = one thread / two threads");
    println!("{:<24} | {:>10} | {:>20} | {:>20}", "", "one thread", "two, distinct keys", "two, same key");

    // The machine's ceiling in the same run: each thread hits a map of its own (nothing shared,
    // so two threads should do twice the work unless the machine is busy elsewhere).
    row("per-thread HashMap", |k| async move {
        thread_local! {
            static OWN: std::cell::RefCell<std::collections::HashMap<u64, Value>> = Default::default();
        }
        OWN.with(|own| Arc::clone(own.borrow_mut().entry(k).or_insert_with(value)))
    });
    row("connscope global, bound", |k| async move { GLOBAL.get_with(k, async { value() }).await.unwrap() });
    row("connscope global", |k| async move { UNBOUNDED.get_with(k, async { value() }).await.unwrap() });

    let moka: Arc<moka::sync::Cache<u64, Value>> = Arc::new(
        moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build(),
    );
    let moka: &'static moka::sync::Cache<u64, Value> = Box::leak(Box::new(Arc::unwrap_or_clone(moka)));
    row("moka sync get_with", move |k| async move { moka.get_with(k, value) });

    let moka_future: &'static moka::future::Cache<u64, Value> = Box::leak(Box::new(
        moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build(),
    ));
    row("moka future get_with", move |k| async move { moka_future.get_with(k, async { value() }).await });

    row("cached #[cached] async", |k| async move { cached_crate_fn(k).await });

    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = tokio.block_on(rt.shutdown());
    assert!(report.is_ok());
}
