//! A `scope = "global"` cached function may return any error type (`sqlx::Error`, `String`, a
//! boxed error): connscope never has to make one up. Only `Ok` is cached; a caller that waited
//! for a load that failed runs the body itself (one caller at a time per key), so every caller
//! gets an error of its own type from its own run; after shutdown the body runs uncached.
//!
//! Each test drives its own function inside sessions of its own runtime, and synchronizes on
//! counters and a `Notify`, never on a sleep.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use connscope::{Runtime, StatsSnapshot, cached_resource};
use tokio::sync::Notify;

fn runtime() -> Runtime {
    support::runtime().build()
}

// ---------------------------------------------------------------------------------------------
// sqlx::Error and String compile, and only `Ok` is cached
// ---------------------------------------------------------------------------------------------

static SQLX_RUNS: AtomicUsize = AtomicUsize::new(0);
static SQLX_FAILS: AtomicBool = AtomicBool::new(true);

/// `sqlx::Error` has no `From<connscope::Error>` (and a blanket `From<E: DatabaseError>`).
#[cached_resource(scope = "global")]
async fn customer(id: u32) -> Result<Arc<String>, sqlx::Error> {
    SQLX_RUNS.fetch_add(1, SeqCst);
    if SQLX_FAILS.load(SeqCst) {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(Arc::new(format!("customer {id}")))
}

#[tokio::test]
async fn a_sqlx_error_function_caches_only_ok() {
    let rt = runtime();
    let s = rt.session();
    let first = s.run(customer(7)).await;
    assert!(matches!(first, Err(sqlx::Error::RowNotFound)), "the body's own error: {first:?}");
    SQLX_FAILS.store(false, SeqCst);
    assert_eq!(*s.run(customer(7)).await.unwrap(), "customer 7", "the error was not cached");
    assert_eq!(*s.run(customer(7)).await.unwrap(), "customer 7");
    assert_eq!(SQLX_RUNS.load(SeqCst), 2, "the Ok was cached");
    let stats = customer::resource().stats_in(&rt);
    assert_eq!((stats.loads, stats.load_failures, stats.hits), (2, 1, 1), "{stats:?}");
}

static STRING_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The default scope is global: `String` as the error type, no attribute argument needed.
#[cached_resource]
async fn parse_port(text: String) -> Result<u16, String> {
    STRING_RUNS.fetch_add(1, SeqCst);
    text.parse().map_err(|e| format!("`{text}` is not a port: {e}"))
}

#[tokio::test]
async fn a_string_error_function_caches_only_ok() {
    let rt = runtime();
    let s = rt.session();
    for _ in 0..2 {
        let e = s.run(parse_port("http".into())).await.unwrap_err();
        assert!(e.starts_with("`http` is not a port"), "{e}");
    }
    assert_eq!(STRING_RUNS.load(SeqCst), 2, "an error is never cached: each call ran the body");
    assert_eq!(s.run(parse_port("8080".into())).await, Ok(8080));
    assert_eq!(s.run(parse_port("8080".into())).await, Ok(8080));
    assert_eq!(STRING_RUNS.load(SeqCst), 3, "the Ok was cached");
}

/// A boxed error (what `anyhow`-style code returns) compiles too.
#[cached_resource(scope = "global", ttl = "1m")]
async fn boxed(n: u8) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    if n == 0 { Err("zero".into()) } else { Ok(n) }
}

#[tokio::test]
async fn a_boxed_error_function_works() {
    let rt = runtime();
    let s = rt.session();
    assert_eq!(s.run(boxed(0)).await.unwrap_err().to_string(), "zero");
    assert_eq!(s.run(boxed(3)).await.unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// 64 concurrent callers of a failing key
// ---------------------------------------------------------------------------------------------

/// Starts 64 callers of `call` in sessions of `rt`, opens `gate` once every one of them has
/// missed (the first run of the body waits for it, so they all arrive while it loads), and
/// returns their results.
async fn sixty_four<T, F, Fut>(
    rt: &Runtime,
    gate: &'static Notify,
    stats: fn(&Runtime) -> StatsSnapshot,
    call: F,
) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (session, fut) = (rt.session(), call());
            tokio::spawn(async move { session.run(fut).await })
        })
        .collect();
    while stats(rt).misses < 64 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

static ALWAYS_RUNS: AtomicUsize = AtomicUsize::new(0);
static ALWAYS_GATE: Notify = Notify::const_new();

#[cached_resource]
async fn always_fails(key: u32) -> Result<u64, String> {
    let run = ALWAYS_RUNS.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        ALWAYS_GATE.notified().await;
    }
    Err(format!("run {run} of key {key} failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_callers_of_a_failing_key_each_get_their_own_error() {
    let rt = runtime();
    let results =
        sixty_four(&rt, &ALWAYS_GATE, |rt| always_fails::resource().stats_in(rt), || always_fails(1)).await;
    let errors: BTreeSet<String> = results.into_iter().map(|r| r.unwrap_err()).collect();
    let runs = ALWAYS_RUNS.load(SeqCst);
    assert_eq!(errors.len(), 64, "64 distinct errors: each caller got the error of its own run");
    assert_eq!(runs, 64, "the body ran once per failure, no more");
    let expected: BTreeSet<String> = (1..=64).map(|run| format!("run {run} of key 1 failed")).collect();
    assert_eq!(errors, expected);
    let stats = always_fails::resource().stats_in(&rt);
    assert_eq!((stats.loads, stats.load_failures), (64, 64), "{stats:?}");
    let cache = rt.session().run(async { always_fails::resource().cache() }).await.unwrap();
    assert!(cache.is_empty().await, "no error was cached");
}

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);
static FLAKY_GATE: Notify = Notify::const_new();
const FLAKY_FAILURES: usize = 3;

/// Fails its first three runs, then succeeds.
#[cached_resource(scope = "global")]
async fn flaky(key: u32) -> Result<Arc<String>, sqlx::Error> {
    let run = FLAKY_RUNS.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        FLAKY_GATE.notified().await;
    }
    if run <= FLAKY_FAILURES {
        return Err(sqlx::Error::Protocol(format!("run {run} failed")));
    }
    Ok(Arc::new(format!("key {key} from run {run}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_runs_at_most_once_per_failure_in_a_row_then_once_for_the_value() {
    let rt = runtime();
    let results = sixty_four(&rt, &FLAKY_GATE, |rt| flaky::resource().stats_in(rt), || flaky(9)).await;
    let mut errors = BTreeSet::new();
    let mut values = 0;
    for r in results {
        match r {
            Ok(v) => {
                assert_eq!(*v, "key 9 from run 4");
                values += 1;
            }
            Err(sqlx::Error::Protocol(message)) => {
                assert!(errors.insert(message), "an error handed out twice")
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(errors.len(), FLAKY_FAILURES, "one caller per failed run got its error: {errors:?}");
    assert_eq!(values, 64 - FLAKY_FAILURES);
    assert_eq!(FLAKY_RUNS.load(SeqCst), FLAKY_FAILURES + 1, "three failures in a row, then one load");
    assert_eq!(*rt.session().run(flaky(9)).await.unwrap(), "key 9 from run 4", "the value was cached");
    assert_eq!(FLAKY_RUNS.load(SeqCst), FLAKY_FAILURES + 1);
    let stats = flaky::resource().stats_in(&rt);
    assert_eq!((stats.loads, stats.load_failures), (4, 3), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// After shutdown: the body runs uncached
// ---------------------------------------------------------------------------------------------

static AFTER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached_resource(scope = "global")]
async fn after_shutdown(n: u32) -> Result<u32, String> {
    AFTER_RUNS.fetch_add(1, SeqCst);
    if n == 0 { Err("zero".to_owned()) } else { Ok(n * 2) }
}

#[tokio::test]
async fn after_shutdown_the_body_runs_uncached() {
    let rt = runtime();
    let s = rt.session();
    assert_eq!(s.run(after_shutdown(1)).await, Ok(2));
    assert_eq!(s.run(after_shutdown(1)).await, Ok(2));
    assert_eq!(AFTER_RUNS.load(SeqCst), 1);
    let report = rt.shutdown().await;
    assert_eq!(report.released, 1, "{report:?}");

    // The session ended with its runtime; a global function called in it still answers.
    assert_eq!(s.run(after_shutdown(1)).await, Ok(2));
    assert_eq!(s.run(after_shutdown(1)).await, Ok(2));
    assert_eq!(AFTER_RUNS.load(SeqCst), 3, "each call ran the body: nothing is cached after shutdown");
    assert_eq!(s.run(after_shutdown(0)).await, Err("zero".to_owned()), "errors are the body's own");
    let fresh = rt.session();
    assert_eq!(fresh.run(after_shutdown(5)).await, Ok(10), "a session born after shutdown too");
    assert_eq!(AFTER_RUNS.load(SeqCst), 5);
}
