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
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
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
/// with as many workers, one task on each; task `t` uses `key_of(t)`. The time is from the first
/// task's start to the last task's end.
fn time_hits<F, Fut>(threads: u64, key_of: fn(u64) -> u64, hit: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Value> + Send,
{
    loop {
        if let Some(took) = try_time_hits(threads, key_of, hit) {
            return took;
        }
    }
}

/// One try of [`time_hits`]; `None` if two tasks ended up on the same worker.
fn try_time_hits<F, Fut>(threads: u64, key_of: fn(u64) -> u64, hit: F) -> Option<Duration>
where
    F: Fn(u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Value> + Send,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .unwrap();
    let started = Arc::new(AtomicU64::new(0));
    let spans: Vec<_> = tokio.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..threads {
            let mine = Arc::clone(&started);
            tasks.push(tokio::spawn(async move {
                let started = mine;
                let key = key_of(t);
                black_box(hit(key).await);
                // Holds this worker (without yielding) until every task runs: the next task is
                // spawned only now, so an idle worker takes it.
                started.fetch_add(1, SeqCst);
                let wait = Instant::now();
                while started.load(SeqCst) < threads {
                    if wait.elapsed() > Duration::from_secs(1) {
                        tokio::task::yield_now().await;
                    }
                    std::hint::spin_loop();
                }
                let worker = std::thread::current().id();
                let start = Instant::now();
                for _ in 0..HITS / threads {
                    black_box(hit(key).await);
                }
                (worker, start, Instant::now())
            }));
            while started.load(SeqCst) <= t {
                std::thread::yield_now();
            }
        }
        let mut spans = Vec::new();
        for task in tasks {
            spans.push(task.await.unwrap());
        }
        spans
    });
    let mut workers: Vec<_> = spans.iter().map(|s| s.0).collect();
    workers.sort_unstable_by_key(|w| format!("{w:?}"));
    workers.dedup();
    if workers.len() != spans.len() {
        return None;
    }
    let start = spans.iter().map(|s| s.1).min()?;
    let end = spans.iter().map(|s| s.2).max()?;
    Some(end - start)
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
