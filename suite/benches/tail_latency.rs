//! Tail latency of hits on a live key while 10,000 other entries of the same cache expire, each
//! with a release hook that costs 20 µs (closing a connection is I/O). connscope beside raw moka
//! (TTL + eviction listener) in one run. Prints the slowest hit and percentiles.
//!
//! `cargo bench --bench tail_latency`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connscope::{Resource, Runtime, Scope};

const EXPIRING: u64 = 10_000;
const LIVE: u64 = u64::MAX;
const TTL: Duration = Duration::from_secs(1);
const HOOK_COST: Duration = Duration::from_micros(20);

static RELEASED: AtomicU64 = AtomicU64::new(0);

/// A hook that costs `HOOK_COST` of work.
fn costly_release() {
    let start = Instant::now();
    while start.elapsed() < HOOK_COST {
        std::hint::spin_loop();
    }
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

static TAIL: Resource<u64, u64> = Resource::new(
    "tail",
    Scope::Global,
    Some(TTL),
    None,
    Some(|_| {
        Box::pin(async {
            costly_release();
            Ok(())
        })
    }),
);

struct Report {
    name: &'static str,
    hits: usize,
    p50: Duration,
    p999: Duration,
    max: Duration,
    released: u64,
}

/// Hits the live key from `from` until `until`, timing each hit.
async fn hammer<F, Fut>(until: Instant, mut hit: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let mut samples = Vec::with_capacity(4_000_000);
    while Instant::now() < until {
        let t = Instant::now();
        black_box(hit().await);
        samples.push(t.elapsed());
    }
    samples
}

fn summarize(name: &'static str, mut samples: Vec<Duration>, released: u64) -> Report {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Report { name, hits: samples.len(), p50: at(0.5), p999: at(0.999), max: at(1.0), released }
}

async fn run_connscope(expiring: u64, name: &'static str) -> Report {
    RELEASED.store(0, Ordering::Relaxed);
    let rt = Runtime::builder().build();
    let session = rt.session();
    let start = Instant::now();
    session
        .run(async {
            for k in 0..expiring {
                TAIL.get_with(k, async move { k }).await.unwrap();
            }
        })
        .await;
    // The live key is loaded later, so it outlives the window below.
    tokio::time::sleep_until((start + TTL * 9 / 10).into()).await;
    session.run(async { TAIL.get_with(LIVE, async { 7 }).await.unwrap() }).await;
    let until = start + TTL * 18 / 10;
    let samples = tokio::spawn(async move {
        session.run(hammer(until, || async { TAIL.get_with(LIVE, async { 0 }).await.unwrap() })).await
    })
    .await
    .unwrap();
    let released = RELEASED.load(Ordering::Relaxed);
    let report = rt.shutdown().await;
    assert!(report.is_ok(), "{report:?}");
    summarize(name, samples, released)
}

async fn run_moka() -> Report {
    RELEASED.store(0, Ordering::Relaxed);
    let cache: moka::future::Cache<u64, u64> = moka::future::Cache::builder()
        .time_to_live(TTL)
        .eviction_listener(|_k, _v, _cause| costly_release())
        .build();
    let start = Instant::now();
    for k in 0..EXPIRING {
        cache.get_with(k, async move { k }).await;
    }
    tokio::time::sleep_until((start + TTL * 9 / 10).into()).await;
    cache.get_with(LIVE, async { 7 }).await;
    let until = start + TTL * 18 / 10;
    let c = cache.clone();
    let samples =
        tokio::spawn(async move { hammer(until, || c.get_with(LIVE, async { 0 })).await }).await.unwrap();
    summarize("moka_future", samples, RELEASED.load(Ordering::Relaxed))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / nextest probing: nothing to list.
    }
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("hits on a live key while {EXPIRING} entries expire, release hook {HOOK_COST:?} each:");
    let control = tokio.block_on(run_connscope(0, "control"));
    let reports = [tokio.block_on(run_connscope(EXPIRING, "connscope")), tokio.block_on(run_moka()), control];
    println!("(control: connscope with nothing expiring, the machine's own noise floor)");
    for report in reports {
        println!(
            "{:>12}: {:>9} hits  p50 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  released during window: {}",
            report.name, report.hits, report.p50, report.p999, report.max, report.released
        );
    }
}
