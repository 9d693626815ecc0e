//! Background refresh (stale-while-revalidate), on paused Tokio time: a stale value is served at
//! once, one refresh per key runs, the old value is released exactly once after the new one is
//! stored (never when the refresh returned the same instance), a failed refresh keeps the old
//! value until the window ends, and invalidate/clear during a refresh win.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use connscope::{Error, Resource, Scope};
use tokio::sync::Semaphore;

const TTL: Duration = Duration::from_secs(10);

/// A refreshing resource of `Arc<u32>` values whose release hook records each value, with a
/// loader gate (a semaphore the test fills) and a count of loader runs.
macro_rules! refreshing {
    ($res:ident, $log:ident, $scope:expr, $max_stale:expr) => {
        static $log: support::ReleaseLog = support::ReleaseLog::new();
        static $res: Resource<u32, Arc<u32>> = Resource::new(
            stringify!($res),
            $scope,
            Some(TTL),
            None,
            Some(|v: Arc<u32>| {
                Box::pin(async move {
                    $log.record(*v);
                    Ok(())
                })
            }),
        )
        .refresh_in_background($max_stale)
        .same_instance(Arc::ptr_eq);
    };
}

/// A loader's controls: how often it ran, and a gate it waits at.
struct Loader {
    runs: AtomicUsize,
    gate: Semaphore,
}

impl Loader {
    fn new() -> Arc<Loader> {
        Arc::new(Loader { runs: AtomicUsize::new(0), gate: Semaphore::new(0) })
    }

    /// A loader future that counts its run, waits for the gate, then returns `result`.
    fn load(
        self: &Arc<Self>,
        result: Result<Arc<u32>, String>,
    ) -> impl Future<Output = Result<Arc<u32>, LoadFailed>> + Send + 'static {
        let me = Arc::clone(self);
        async move {
            me.runs.fetch_add(1, SeqCst);
            me.gate.acquire().await.unwrap().forget();
            result.map_err(LoadFailed)
        }
    }
}

#[derive(Debug)]
struct LoadFailed(#[allow(dead_code)] String);

impl std::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("load failed")
    }
}

impl From<Error> for LoadFailed {
    fn from(e: Error) -> Self {
        LoadFailed(e.to_string())
    }
}

/// Lets every ready task run (paused time: a sleep returns once all else is idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_is_served_at_once_while_one_refresh_runs() {
    refreshing!(RES, LOG, Scope::Global, None);
    let rt = support::runtime().maintenance_interval(Duration::from_secs(3600)).build();
    let s = rt.session();
    let loader = Loader::new();
    loader.gate.add_permits(1);
    let v1 = s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(1))))).await.unwrap();
    assert_eq!(*v1, 1);

    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    // 64 callers inside the stale window: each gets the old value at once, one refresh runs.
    for _ in 0..64 {
        let v = s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(2))))).await.unwrap();
        assert_eq!(*v, 1, "every caller gets the stale value at once");
    }
    settle().await;
    assert_eq!(loader.runs.load(SeqCst), 2, "one load, then one refresh however many callers");
    assert!(LOG.values().is_empty(), "nothing released while the refresh runs");

    loader.gate.add_permits(1);
    settle().await;
    let v = s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(3))))).await.unwrap();
    assert_eq!(*v, 2, "the refreshed value is served");
    assert_eq!(
        LOG.values(),
        vec![1],
        "the old value was released exactly once, after the new one was stored"
    );
    assert_eq!(loader.runs.load(SeqCst), 2);
    let stats = RES.stats_in(&rt);
    assert_eq!((stats.loads, stats.load_failures, stats.evicted_replaced), (2, 0, 1));

    drop(s);
    rt.shutdown().await;
    assert_eq!(LOG.values(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_returns_the_same_instance_releases_nothing() {
    refreshing!(RES, LOG, Scope::Global, None);
    static SHARED: std::sync::OnceLock<Arc<u32>> = std::sync::OnceLock::new();
    let shared = Arc::clone(SHARED.get_or_init(|| Arc::new(7)));
    let rt = support::runtime().build();
    let loader = Loader::new();
    loader.gate.add_permits(2);
    let s = rt.session();
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::clone(&shared))))).await.unwrap();
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::clone(&shared))))).await.unwrap();
    settle().await;
    assert_eq!(loader.runs.load(SeqCst), 2, "the refresh ran");
    assert!(LOG.values().is_empty(), "the same instance is still cached: not released");

    // Its deadline moved: still cached past the first window.
    tokio::time::advance(TTL + Duration::from_secs(5)).await;
    let v = s.run(RES.try_get_refreshing(1, async { Err(LoadFailed("must not load".into())) })).await;
    assert!(Arc::ptr_eq(&v.unwrap(), &shared));
    drop(s);
    rt.shutdown().await;
    assert_eq!(LOG.values(), vec![7], "released once, at shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_old_value_until_the_window_ends() {
    refreshing!(RES, LOG, Scope::Global, Some(Duration::from_secs(30)));
    let rt = support::runtime().maintenance_interval(Duration::from_secs(3600)).build();
    let s = rt.session();
    let loader = Loader::new();
    loader.gate.add_permits(100);
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(1))))).await.unwrap();

    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    let v = s.run(RES.try_get_refreshing(1, loader.load(Err("backend down".into())))).await.unwrap();
    assert_eq!(*v, 1);
    settle().await;
    assert_eq!(RES.stats_in(&rt).load_failures, 1, "the failed refresh is counted");
    // Still served (and retried by the next caller) inside the window.
    let v = s.run(RES.try_get_refreshing(1, loader.load(Err("still down".into())))).await.unwrap();
    assert_eq!(*v, 1);
    settle().await;
    assert_eq!((loader.runs.load(SeqCst), RES.stats_in(&rt).load_failures), (3, 2));
    assert!(LOG.values().is_empty());

    // Past the window (ttl + 30 s): gone; a call waits for a fresh load and gets its error.
    tokio::time::advance(Duration::from_secs(30)).await;
    let err = s.run(RES.try_get_refreshing(1, loader.load(Err("down".into())))).await;
    assert!(err.is_err(), "past the window the stale value is never served");
    settle().await;
    assert_eq!(LOG.values(), vec![1], "the expired value was released once");
    let v = s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(9))))).await.unwrap();
    assert_eq!(*v, 9);
    drop(s);
    rt.shutdown().await;
    assert_eq!(LOG.values(), vec![1, 9]);
}

#[tokio::test(start_paused = true)]
async fn invalidate_or_clear_during_a_refresh_wins() {
    refreshing!(RES, LOG, Scope::Global, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let loader = Loader::new();
    loader.gate.add_permits(2);
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(1))))).await.unwrap();
    s.run(RES.try_get_refreshing(2, loader.load(Ok(Arc::new(2))))).await.unwrap();
    tokio::time::advance(TTL + Duration::from_secs(1)).await;

    // Refreshes of both keys start and wait at the gate.
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(11))))).await.unwrap();
    s.run(RES.try_get_refreshing(2, loader.load(Ok(Arc::new(22))))).await.unwrap();
    settle().await;
    assert_eq!(loader.runs.load(SeqCst), 4);
    assert!(s.run(RES.invalidate(&1)).await);
    let report = s.run(RES.clear()).await;
    assert_eq!(report.released, 1);
    assert_eq!(LOG.values(), vec![1, 2]);

    loader.gate.add_permits(2);
    settle().await;
    // Neither refresh was cached; their values, which nobody received, were released once.
    let mut released = LOG.values();
    released.sort();
    assert_eq!(released, vec![1, 2, 11, 22]);
    assert_eq!(rt.shutdown().await.released, 0, "nothing was cached by the overtaken refreshes");
    assert_eq!(LOG.values().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_session_end_during_a_refresh_releases_the_refreshed_value_as_a_session_end() {
    refreshing!(RES, LOG, Scope::Session, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let loader = Loader::new();
    loader.gate.add_permits(1);
    s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(1))))).await.unwrap();
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    assert_eq!(*s.run(RES.try_get_refreshing(1, loader.load(Ok(Arc::new(2))))).await.unwrap(), 1);
    settle().await;
    let report = s.end().await;
    assert_eq!(report.released, 1);
    assert_eq!(LOG.values(), vec![1]);
    loader.gate.add_permits(1);
    settle().await;
    assert_eq!(LOG.values(), vec![1, 2], "the refresh's value was released, not cached");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn other_calls_on_a_stale_value_refresh_in_place_once() {
    refreshing!(RES, LOG, Scope::Global, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let v = s.run(RES.get_with(1, async { Arc::new(1) })).await.unwrap();
    assert_eq!(*v, 1);
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    // A loader that cannot move to a task: the caller that meets the stale value refreshes it
    // and waits; the value is then fresh for the others.
    let v = s.run(RES.get_with(1, async { Arc::new(2) })).await.unwrap();
    assert_eq!(*v, 2);
    let v = s.run(RES.get_with(1, async { Arc::new(3) })).await.unwrap();
    assert_eq!(*v, 2);
    settle().await;
    assert_eq!(LOG.values(), vec![1]);
    assert_eq!(RES.stats_in(&rt).loads, 2);
    drop(s);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn warm_loads_the_keys_ahead_of_use() {
    static SQUARES: Resource<u64, u64> = Resource::new("warm", Scope::Global, Some(TTL), None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let loaded = s.run(SQUARES.warm([1, 2, 3, 2], |k| async move { Ok::<_, LoadFailed>(k * k) })).await;
    assert_eq!(loaded, 3, "each missing key once");
    let v = s.run(SQUARES.get_with(3, async { unreachable!("warmed") })).await.unwrap();
    assert_eq!(v, 9);
    let failed = s.run(SQUARES.warm([4], |_| async { Err::<u64, _>(LoadFailed("no".into())) })).await;
    assert_eq!(failed, 0);
    assert_eq!(SQUARES.stats_in(&rt).load_failures, 1);
    drop(s);
    rt.shutdown().await;
}

static RATE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The macro form: `refresh = "background"` with the default window (one ttl).
#[connscope::cached_resource(ttl = "10s", refresh = "background")]
async fn rate(currency: String) -> Result<Arc<String>, Error> {
    let n = RATE_RUNS.fetch_add(1, SeqCst);
    Ok(Arc::new(format!("{currency}#{n}")))
}

static PLAIN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[connscope::cached_resource(ttl = "10s", refresh = "background", max_stale = "1m")]
async fn plain(n: u32) -> u32 {
    n + PLAIN_RUNS.fetch_add(1, SeqCst) as u32
}

#[tokio::test(start_paused = true)]
async fn a_cached_function_with_background_refresh_serves_stale_then_the_refreshed_value() {
    let rt = support::runtime().build();
    let s = rt.session();
    assert_eq!(*s.run(rate("EUR".into())).await.unwrap(), "EUR#0");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(*s.run(rate("EUR".into())).await.unwrap(), "EUR#0", "stale, served at once");
    assert_eq!(*s.run(rate("EUR".into())).await.unwrap(), "EUR#0");
    settle().await;
    assert_eq!(RATE_RUNS.load(SeqCst), 2, "one refresh");
    assert_eq!(*s.run(rate("EUR".into())).await.unwrap(), "EUR#1", "refreshed");
    // Past ttl + window (one ttl): a fresh load in the foreground.
    tokio::time::advance(Duration::from_secs(25)).await;
    assert_eq!(*s.run(rate("EUR".into())).await.unwrap(), "EUR#2");
    // `warm` loads ahead of use.
    assert_eq!(*s.run(rate::warm("USD".into())).await.unwrap(), "USD#3");
    assert_eq!(*s.run(rate("USD".into())).await.unwrap(), "USD#3");
    assert_eq!(s.run(async { rate::stats() }).await.loads, 4);

    assert_eq!(s.run(plain(10)).await, 10);
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(s.run(plain(10)).await, 10, "inside max_stale: stale");
    settle().await;
    assert_eq!(s.run(plain(10)).await, 11);
    drop(s);
    rt.shutdown().await;
}
