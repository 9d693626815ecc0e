//! The cost of a user: memory per session, session churn, load latency as sessions grow, one
//! maintenance pass, and shutdown, at 1k, 10k and 100k live sessions (set `SCALE_MAX=1000000` for
//! the million). Each session loads three small session-scoped resources: two with a ttl, one
//! with `max_entries`. Memory is counted exactly by a counting allocator (bytes live on the heap).
//! Then the cost of a miss as a bounded cache fills and starts evicting.
//!
//! Run: `cargo bench --bench scale` (prints a table; not a criterion bench: it measures a curve).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use connscope::{BoxFuture, HookError, Resource, Runtime, Scope};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn noop(_: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async { Ok(()) })
}

const TEN_MIN: Option<Duration> = Some(Duration::from_secs(600));
static PROFILE: Resource<u64, u64> = Resource::new("profile", Scope::Session, TEN_MIN, None, Some(noop));
static PREFS: Resource<u64, u64> = Resource::new("prefs", Scope::Session, TEN_MIN, None, Some(noop));
static RECENT: Resource<u64, u64> = Resource::new("recent", Scope::Session, None, Some(10), Some(noop));

async fn three_loads(i: u64) {
    PROFILE.get_with(i, async move { i }).await.unwrap();
    PREFS.get_with(i, async move { i + 1 }).await.unwrap();
    RECENT.get_with(i, async move { i + 2 }).await.unwrap();
}

fn runtime() -> Runtime {
    Runtime::builder()
        .env_vars(Vec::<(String, String)>::new())
        .secrets_file("/nonexistent/secrets.toml")
        .no_idle_timeout()
        .no_session_lifetime()
        .maintenance_interval(Duration::from_secs(3600))
        .build()
}

fn per(d: Duration, n: usize) -> String {
    let ns = d.as_nanos() as f64 / n as f64;
    if ns >= 1000.0 { format!("{:.1} us", ns / 1000.0) } else { format!("{ns:.0} ns") }
}

async fn curve_point(n: usize) {
    let rt = runtime();
    // Idle sessions: created, never touched a resource.
    let before = LIVE.load(Relaxed);
    let idle: Vec<_> = (0..n).map(|_| rt.session()).collect();
    let idle_bytes = (LIVE.load(Relaxed) - before) as f64 / n as f64;
    for s in &idle {
        s.end().await;
    }
    drop(idle);

    // Live sessions with three resources each; time the last 1,000 (create + 3 loads).
    let before = LIVE.load(Relaxed);
    let mut sessions = Vec::with_capacity(n);
    let mut last = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let s = rt.session();
        s.run(three_loads(i as u64)).await;
        if i + 1000 >= n {
            last += t.elapsed();
        }
        sessions.push(s);
    }
    let live_bytes = (LIVE.load(Relaxed) - before) as f64 / n as f64;

    let t = Instant::now();
    rt.run_maintenance().await;
    let pass = t.elapsed();

    let before_shutdown = LIVE.load(Relaxed);
    PEAK.store(before_shutdown, Relaxed);
    let t = Instant::now();
    let report = rt.shutdown().await;
    let shutdown = t.elapsed();
    let growth = (PEAK.load(Relaxed) - before_shutdown) as f64 / before_shutdown as f64 * 100.0;
    assert_eq!(report.released, 3 * n);
    drop(sessions);

    println!(
        "{n:>9} | {idle_bytes:>8.0} B | {live_bytes:>8.0} B | {:>12} | {:>10.2} ms | {:>10.1} ms | {growth:>6.1} %",
        per(last, 1000.min(n)),
        pass.as_secs_f64() * 1e3,
        shutdown.as_secs_f64() * 1e3,
    );
}

/// A release hook that works for 20 µs (busy, as a hook closing a client would be).
fn spin_20us(_: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(20) {
            std::hint::spin_loop();
        }
        Ok(())
    })
}

static SLOW_A: Resource<u64, u64> = Resource::new("slow_a", Scope::Session, TEN_MIN, None, Some(spin_20us));
static SLOW_B: Resource<u64, u64> = Resource::new("slow_b", Scope::Session, TEN_MIN, None, Some(spin_20us));
static SLOW_C: Resource<u64, u64> = Resource::new("slow_c", Scope::Session, None, Some(10), Some(spin_20us));

/// `shutdown()` of `n` sessions with three values each whose hooks take 20 µs, on a Tokio
/// runtime with `workers` worker threads, beside the bound the hooks' own time sets.
fn slow_hooks_shutdown(n: usize, workers: usize) {
    let tokio =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    tokio.block_on(async {
        let rt = runtime();
        let mut sessions = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let s = rt.session();
            s.run(async {
                SLOW_A.get_with(i, async move { i }).await.unwrap();
                SLOW_B.get_with(i, async move { i }).await.unwrap();
                SLOW_C.get_with(i, async move { i }).await.unwrap();
            })
            .await;
            sessions.push(s);
        }
        let t = Instant::now();
        let report = rt.shutdown().await;
        let took = t.elapsed();
        assert_eq!(report.released, 3 * n);
        let hooks = Duration::from_micros(20) * (3 * n) as u32;
        println!(
            "shutdown of {n} sessions, {} values, 20 us hooks, {workers} workers: {:.0} ms (the hooks' own time: \
             {:.0} ms, over {workers} workers: {:.0} ms)",
            3 * n,
            took.as_secs_f64() * 1e3,
            hooks.as_secs_f64() * 1e3,
            hooks.as_secs_f64() * 1e3 / workers as f64,
        );
    });
}

static BOUNDED: Resource<u64, u64> =
    Resource::new("bounded", Scope::Global, TEN_MIN, Some(10_000), Some(noop));

/// 100k distinct-key loads into a `max_entries = 10_000` cache: time per load in each block of
/// 10k (past 10k every load also evicts the least recently used value).
async fn misses_curve() {
    let rt = runtime();
    let s = rt.session();
    print!("loads into max_entries = 10,000, ns per load by block of 10k:");
    s.run(async {
        for block in 0..10u64 {
            let t = Instant::now();
            for k in block * 10_000..(block + 1) * 10_000 {
                BOUNDED.get_with(k, async move { k }).await.unwrap();
            }
            print!(" {:.0}", t.elapsed().as_nanos() as f64 / 10_000.0);
        }
    })
    .await;
    println!();
    assert!(rt.shutdown().await.is_ok());
}

async fn churn(n: usize) -> f64 {
    let rt = runtime();
    let t = Instant::now();
    for i in 0..n {
        let s = rt.session();
        s.run(three_loads(i as u64)).await;
        s.end().await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    rt.shutdown().await;
    rate
}

fn main() {
    let max: usize = std::env::var("SCALE_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        println!("connscope scale: three small session resources per session (two ttl, one max_entries)");
        println!(
            "{:>9} | {:>10} | {:>10} | {:>12} | {:>13} | {:>13} | {:>8}",
            "sessions", "idle/sess", "live/sess", "create+3 ld", "maint. pass", "shutdown", "mem +"
        );
        let mut n = 1000;
        while n <= max {
            curve_point(n).await;
            n *= 10;
        }
        let rate = churn(20_000).await;
        println!("session create + 3 loads + end, one thread: {rate:.0} per second");
        misses_curve().await;
    });
    slow_hooks_shutdown(10_000, 2);
}
