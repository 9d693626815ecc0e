//! Exactness under cancellation and races (issue 9, classes 1, 2, 4 and 5): a dropped `end` or
//! `shutdown` strands nothing, a load overtaken by invalidate/clear/insert/scope end is not kept,
//! maintenance never waits on user hooks nor on a dead Tokio runtime, idle end and a request
//! never both win, and `max_entries` evicts the least recently used value exactly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use connscope::{BoxFuture, Error, HookError, LoadError, Resource, Runtime, Scope};
use tokio::time::{sleep, timeout};

/// Values released by each resource's hook, in order.
struct Log(Mutex<Vec<u64>>);

impl Log {
    const fn new() -> Self {
        Log(Mutex::new(Vec::new()))
    }
    fn push(&self, v: u64) {
        self.0.lock().unwrap().push(v);
    }
    fn values(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
}

fn runtime() -> connscope::RuntimeBuilder {
    Runtime::builder().env_vars(Vec::<(String, String)>::new()).secrets_file("/nonexistent/secrets.toml")
}

/// A loader that takes `delay` (paused time) and returns `v`.
async fn slow(v: u64, delay: Duration) -> Result<u64, Error> {
    sleep(delay).await;
    Ok(v)
}

// ------------------------------------------------------------------------------------------
// 1. Cancellation: a dropped end / shutdown strands nothing
// ------------------------------------------------------------------------------------------

static SLOW_LOG: Log = Log::new();
fn slow_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        sleep(Duration::from_secs(5)).await;
        SLOW_LOG.push(v);
        Ok(())
    })
}
static SLOW_SESSION: Resource<u64, u64> =
    Resource::new("slow_session", Scope::Session, None, None, Some(slow_release));
static SLOW_GLOBAL: Resource<u64, u64> =
    Resource::new("slow_global", Scope::Global, None, None, Some(slow_release));

#[tokio::test(start_paused = true)]
async fn a_dropped_end_still_releases_and_a_second_end_gets_the_same_report() {
    let rt = runtime().build();
    let session = rt.session();
    session.run(SLOW_SESSION.get_with(101, async { 101 })).await.unwrap();

    // A request timeout drops the end while the 5 s hook runs.
    assert!(timeout(Duration::from_secs(1), session.end()).await.is_err());
    assert!(session.is_ended());

    let again = timeout(Duration::from_secs(60), session.end()).await.expect("a second end() finishes");
    assert_eq!(again.released, 1, "the second caller gets the end's report");
    assert!(again.is_ok());
    assert_eq!(SLOW_LOG.values().iter().filter(|v| **v == 101).count(), 1, "released exactly once");
    assert_eq!(rt.session_count(), 0);
    assert_eq!(rt.shutdown().await.released, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_shutdown_then_a_retried_one_closes_the_global_caches() {
    let rt = runtime().build();
    let session = rt.session();
    session.run(SLOW_GLOBAL.get_with(202, async { 202 })).await.unwrap();
    session.run(SLOW_SESSION.get_with(203, async { 203 })).await.unwrap();

    assert!(timeout(Duration::from_secs(1), rt.shutdown()).await.is_err());
    assert!(rt.is_shut_down());

    let report =
        timeout(Duration::from_secs(60), rt.shutdown()).await.expect("the retried shutdown finishes");
    assert_eq!(report.released, 2, "the session's value and the global one");
    let log = SLOW_LOG.values();
    assert_eq!(log.iter().filter(|v| **v == 202).count(), 1);
    assert_eq!(log.iter().filter(|v| **v == 203).count(), 1);
    assert!(session.is_ended());
    // Later callers wait for the same shutdown; the report was already handed out.
    let (a, b) = tokio::join!(rt.shutdown(), rt.shutdown());
    assert_eq!((a.released, b.released), (0, 0), "the report was handed out once");
}

// ------------------------------------------------------------------------------------------
// 2. Loads racing invalidate, clear, insert and scope end
// ------------------------------------------------------------------------------------------

static RACE_LOG: Log = Log::new();
fn race_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        RACE_LOG.push(v);
        Ok(())
    })
}
static RACED: Resource<&'static str, u64> =
    Resource::new("raced", Scope::Session, None, None, Some(race_release));

/// Starts a 1 s load of `key` in `session` returning `v`, and lets it begin.
async fn start_load(
    session: &connscope::Session,
    key: &'static str,
    v: u64,
) -> tokio::task::JoinHandle<Result<u64, LoadError<Error>>> {
    let s = session.clone();
    let task =
        tokio::spawn(async move { s.run(RACED.try_get_with(key, slow(v, Duration::from_secs(1)))).await });
    sleep(Duration::from_millis(10)).await;
    task
}

#[tokio::test(start_paused = true)]
async fn a_load_overtaken_by_invalidate_or_clear_is_not_cached() {
    let rt = runtime().build();
    let session = rt.session();

    let load = start_load(&session, "inv", 1).await;
    assert!(!session.run(RACED.invalidate(&"inv")).await, "nothing was stored yet");
    assert_eq!(load.await.unwrap().unwrap(), 1, "the caller gets its value");
    assert_eq!(
        session.run(async { RACED.cache().unwrap().get(&"inv").await }).await,
        None,
        "but it is not kept"
    );

    let load = start_load(&session, "clr", 2).await;
    assert_eq!(session.run(RACED.clear()).await.released, 0);
    assert_eq!(load.await.unwrap().unwrap(), 2);
    assert_eq!(session.run(async { RACED.cache().unwrap().get(&"clr").await }).await, None);

    // A fresh call after the invalidate loads again (and that value is kept).
    let v = session.run(RACED.try_get_with("inv", slow(3, Duration::ZERO))).await.unwrap();
    assert_eq!(v, 3);
    assert_eq!(session.run(async { RACED.cache().unwrap().get(&"inv").await }).await, Some(3));
    let report = session.end().await;
    assert_eq!(report.released, 1, "only the value that was kept is released");
    assert!(!RACE_LOG.values().contains(&1) && !RACE_LOG.values().contains(&2));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_load_never_replaces_an_inserted_value() {
    let rt = runtime().build();
    let session = rt.session();
    let load = start_load(&session, "ins", 10).await;
    session.run(async { RACED.cache().unwrap().insert("ins", 11).await }).await.unwrap();
    assert_eq!(load.await.unwrap().unwrap(), 10);
    assert_eq!(session.run(async { RACED.cache().unwrap().get(&"ins").await }).await, Some(11));
    assert_eq!(session.end().await.released, 1);
    assert!(!RACE_LOG.values().contains(&10), "the load's value was never stored, so never released");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_load_finishing_after_its_session_ended_is_released_once_as_a_session_end() {
    let rt = runtime().build();
    let session = rt.session();
    let cache = session.run(async { RACED.cache() }).await.unwrap();
    let leader = start_load(&session, "late", 20).await;
    let waiter = start_load(&session, "late", 21).await;

    let report = session.end().await;
    assert_eq!(report.released, 0, "nothing was stored when the session ended");
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(err, LoadError::Scope(Error::SessionEnded { .. })),
        "a waiter never gets the value: {err:?}"
    );
    let err = leader.await.unwrap().unwrap_err();
    assert!(matches!(err, LoadError::Scope(Error::SessionEnded { .. })), "{err:?}");
    rt.shutdown().await;
    assert_eq!(RACE_LOG.values().iter().filter(|v| **v == 20).count(), 1, "released exactly once");
    let stats = cache.stats();
    assert_eq!((stats.evicted_session_end, stats.evicted_shutdown, stats.releases), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn an_insert_into_an_ended_session_is_refused_and_the_value_released() {
    let rt = runtime().build();
    let session = rt.session();
    let cache = session.run(async { RACED.cache() }).await.unwrap();
    session.end().await;
    let err = cache.insert("after", 30).await.unwrap_err();
    assert!(matches!(err, Error::SessionEnded { .. }), "{err}");
    assert_eq!(RACE_LOG.values().iter().filter(|v| **v == 30).count(), 1);
    assert_eq!(cache.stats().evicted_session_end, 1);
    assert_eq!(cache.len().await, 0);
    rt.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 4. Maintenance stays prompt whatever user code does
// ------------------------------------------------------------------------------------------

static HOOKED_LOG: Log = Log::new();
fn ten_second_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        sleep(Duration::from_secs(10)).await;
        HOOKED_LOG.push(v);
        Ok(())
    })
}
fn quick_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        HOOKED_LOG.push(v);
        Ok(())
    })
}
static TEN_SECOND_HOOK: Resource<u64, u64> =
    Resource::new("ten_second_hook", Scope::Session, None, None, Some(ten_second_release));
static SHORT_TTL: Resource<u64, u64> =
    Resource::new("short_ttl", Scope::Global, Some(Duration::from_secs(2)), None, Some(quick_release));

#[tokio::test(start_paused = true)]
async fn an_idle_end_with_a_slow_hook_does_not_delay_another_values_expiry() {
    let rt = runtime()
        .idle_timeout(Duration::from_secs(1))
        .maintenance_interval(Duration::from_millis(250))
        .build();
    let idle = rt.session();
    idle.run(TEN_SECOND_HOOK.get_with(401, async { 401 })).await.unwrap();
    let other = rt.session();
    other.run(SHORT_TTL.get_with(402, async { 402 })).await.unwrap();
    let start = tokio::time::Instant::now();
    // Keep `other` active; `idle` ends at ~1 s and its hook takes 10 s.
    while start.elapsed() < Duration::from_secs(3) {
        other.touch();
        sleep(Duration::from_millis(100)).await;
    }
    assert!(idle.is_ended());
    assert!(
        HOOKED_LOG.values().contains(&402),
        "the 2 s value was released by 2.25 s, not after the 10 s hook"
    );
    assert!(!HOOKED_LOG.values().contains(&401), "the slow hook is still running");
    let report = rt.shutdown().await;
    assert!(report.is_ok());
    assert!(HOOKED_LOG.values().contains(&401), "shutdown waited for the idle end it did not start");
}

static ORPHAN_LOG: Log = Log::new();
fn orphan_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        ORPHAN_LOG.push(v);
        Ok(())
    })
}
static ORPHANED: Resource<u64, u64> =
    Resource::new("orphaned", Scope::Global, Some(Duration::from_millis(300)), None, Some(orphan_release));

/// Each `#[tokio::test]` has its own Tokio runtime; the default connscope runtime's maintenance
/// must survive the one that started it.
#[test]
fn maintenance_outlives_the_tokio_runtime_that_started_it() {
    let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    first.block_on(async {
        // No session: the process-wide default runtime, as a global cached function uses.
        assert_eq!(ORPHANED.get_with(501, async { 501 }).await.unwrap(), 501);
    });
    drop(first);
    // Real time here (no Tokio runtime): a generous bound, an exact assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ORPHAN_LOG.values().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ORPHAN_LOG.values(), vec![501], "released once, with no further call");
}

static IDLE_COUNTER: AtomicU64 = AtomicU64::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_request_and_an_idle_end_never_both_win() {
    // Idle timeout zero: every session with no request running is idle at every pass.
    let rt = runtime().idle_timeout(Duration::ZERO).maintenance_interval(Duration::from_secs(3600)).build();
    for _ in 0..20 {
        let sessions: Vec<_> = (0..200).map(|_| rt.session()).collect();
        let maintenance = {
            let rt = rt.clone();
            tokio::spawn(async move { rt.run_maintenance().await })
        };
        let requests: Vec<_> = sessions
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.run(async {
                        let current = connscope::Session::current().unwrap();
                        if current.is_ended() {
                            return; // the idle end won: the request sees an ended session
                        }
                        IDLE_COUNTER.fetch_add(1, SeqCst);
                        for _ in 0..8 {
                            tokio::task::yield_now().await;
                            assert!(!current.is_ended(), "a session was ended under a running request");
                        }
                    })
                    .await
                })
            })
            .collect();
        for r in requests {
            r.await.unwrap();
        }
        maintenance.await.unwrap();
        for s in sessions {
            s.end().await;
        }
    }
    assert_eq!(rt.shutdown().await.released, 0);
    assert!(IDLE_COUNTER.load(SeqCst) > 0, "some requests began on an active session");
}

// ------------------------------------------------------------------------------------------
// 5. max_entries is exact LRU
// ------------------------------------------------------------------------------------------

static LRU_LOG: Log = Log::new();
fn lru_release(v: u64) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        LRU_LOG.push(v);
        Ok(())
    })
}
static BOUNDED: Resource<u64, u64> =
    Resource::new("bounded", Scope::Session, None, Some(2), Some(lru_release));

#[tokio::test]
async fn max_entries_evicts_the_least_recently_used_value_every_time() {
    let rt = runtime().build();
    for round in 0..300u64 {
        let session = rt.session();
        let (a, b, c) = (round * 10 + 1, round * 10 + 2, round * 10 + 3);
        session
            .run(async {
                BOUNDED.get_with(1, async { a }).await.unwrap();
                BOUNDED.get_with(2, async { b }).await.unwrap();
                assert_eq!(BOUNDED.get_with(1, async { 0 }).await.unwrap(), a, "a hit");
                BOUNDED.get_with(3, async { c }).await.unwrap();
                let cache = BOUNDED.cache().unwrap();
                assert_eq!(cache.get(&1).await, Some(a), "round {round}: a was used more recently than b");
                assert_eq!(cache.get(&2).await, None, "round {round}: b is the victim");
            })
            .await;
        assert_eq!(session.end().await.released, 2, "a and c were left at the end");
    }
    rt.shutdown().await;
    let log = LRU_LOG.values();
    for v in 1..=3 {
        for round in 0..300u64 {
            let n = log.iter().filter(|x| **x == round * 10 + v).count();
            assert_eq!(n, 1, "value {} released exactly once", round * 10 + v);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Sessions end on their own by default (issue 9, class 7): documented defaults, pinned here by
// their literal values.
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn by_default_a_session_ends_after_30_idle_minutes() {
    let rt = runtime().build();
    let session = rt.session();
    sleep(Duration::from_secs(29 * 60)).await;
    assert!(!session.is_ended(), "29 minutes idle: still alive");
    sleep(Duration::from_secs(2 * 60)).await;
    assert!(session.is_ended(), "31 minutes idle: ended");
    assert_eq!(rt.session_count(), 0);
    assert!(rt.shutdown().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn by_default_an_active_session_ends_8_hours_after_it_started() {
    // Fewer maintenance passes over 8 paused hours; the lifetime is the default one.
    let rt = runtime().maintenance_interval(Duration::from_secs(10)).build();
    let session = rt.session();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(8 * 3600 - 60) {
        session.run(async {}).await;
        sleep(Duration::from_secs(10 * 60)).await;
    }
    assert!(!session.is_ended(), "active and younger than 8 hours: alive");
    while !session.is_ended() && start.elapsed() < Duration::from_secs(9 * 3600) {
        session.run(async {}).await;
        sleep(Duration::from_secs(60)).await;
    }
    let age = start.elapsed();
    assert!(session.is_ended(), "ended however active");
    assert!(age >= Duration::from_secs(8 * 3600) && age <= Duration::from_secs(8 * 3600 + 120), "{age:?}");
    assert!(rt.shutdown().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_and_the_lifetime_can_be_turned_off() {
    let rt = runtime()
        .no_idle_timeout()
        .no_session_lifetime()
        .maintenance_interval(Duration::from_secs(60))
        .build();
    let session = rt.session();
    sleep(Duration::from_secs(48 * 3600)).await;
    assert!(!session.is_ended());
    let rt2 = runtime()
        .idle_timeout(Duration::from_secs(60))
        .max_session_lifetime(Duration::from_secs(600))
        .build();
    let short = rt2.session();
    sleep(Duration::from_secs(61)).await;
    assert!(short.is_ended(), "a configured idle timeout");
    assert!(rt.shutdown().await.is_ok() && rt2.shutdown().await.is_ok());
}
