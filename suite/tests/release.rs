//! Each value's release hook runs exactly once, whichever way it leaves the cache.

mod support;

use std::time::Duration;

use connscope::Scope;

const TTL: Duration = Duration::from_secs(10);

/// The README's promise, by its literal value (not the library's constant): expired values are
/// released within one maintenance interval, 250 ms by default.
const DOCUMENTED_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);

/// Shuts `rt` down and checks its report: `released` values, every hook succeeded.
async fn shut_down(rt: &connscope::Runtime, released: usize) {
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (released, true), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn ttl_expiry_releases_promptly_without_any_further_call() {
    // 1 ms past a multiple of every interval that divides 10 s: a longer interval than
    // documented shows as a late release instead of landing on a tick by chance.
    const TTL: Duration = Duration::from_millis(10_001);
    tracked_resource!(RES, LOG, Scope::Global, Some(TTL), None);
    let rt = support::runtime().build();
    let loaded_at = tokio::time::Instant::now();
    rt.session().run(async { RES.get_with(1, async { 1 }).await.unwrap() }).await;

    // No further call to the cache: the runtime's maintenance must find the expired value.
    assert!(LOG.wait_for(1, Duration::from_secs(60)).await, "expired value was never released");
    let late = LOG.released_at(1).unwrap() - (loaded_at + TTL);
    assert!(late <= DOCUMENTED_MAINTENANCE_INTERVAL, "released {late:?} after expiry");

    tokio::time::sleep(Duration::from_secs(60)).await;
    shut_down(&rt, 0).await;
    assert_eq!(LOG.values(), vec![1], "released exactly once");
}

#[tokio::test(start_paused = true)]
async fn an_expired_value_is_never_handed_out() {
    tracked_resource!(RES, LOG, Scope::Global, Some(TTL), None);
    let rt = support::runtime().maintenance_interval(Duration::from_secs(3600)).build();
    let s = rt.session();
    s.run(async { RES.get_with(1, async { 1 }).await.unwrap() }).await;
    tokio::time::advance(TTL).await;
    // Maintenance has not run (one-hour interval), yet the caller must not see the stale value.
    let v = s.run(async { RES.get_with(1, async { 2 }).await.unwrap() }).await;
    assert_eq!(v, 2);
    assert!(LOG.wait_for(1, Duration::from_secs(1)).await);
    assert_eq!(LOG.values(), vec![1]);
    shut_down(&rt, 1).await;
    assert_eq!(LOG.values(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn size_eviction_releases_the_least_recently_used_once() {
    tracked_resource!(RES, LOG, Scope::Global, None, Some(2));
    let rt = support::runtime().build();
    let s = rt.session();
    s.run(async {
        RES.get_with(1, async { 1 }).await.unwrap();
        RES.get_with(2, async { 2 }).await.unwrap();
        RES.cache().unwrap().len().await; // let moka apply the writes
        RES.get_with(1, async { 1 }).await.unwrap(); // 1 is now more recent than 2
        RES.get_with(3, async { 3 }).await.unwrap();
    })
    .await;
    rt.run_maintenance().await;
    assert!(LOG.wait_for(1, Duration::from_secs(5)).await, "nothing evicted");
    assert_eq!(LOG.values(), vec![2], "LRU evicts 2, never the newly loaded 3");
    let stats = s.run(async { RES.stats() }).await;
    assert_eq!(stats.evicted_size, 1);
    // The newest value is still cached: no second load.
    let loads = stats.loads;
    s.run(async { RES.get_with(3, async { 99 }).await.unwrap() }).await;
    assert_eq!(s.run(async { RES.stats() }).await.loads, loads);
    shut_down(&rt, 2).await;
    assert_eq!(LOG.values(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn invalidate_releases_one_key_before_returning() {
    tracked_resource!(RES, LOG, Scope::Global, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    s.run(async {
        RES.get_with(1, async { 1 }).await.unwrap();
        RES.get_with(2, async { 2 }).await.unwrap();
        assert!(RES.invalidate(&1).await);
        assert_eq!(LOG.values(), vec![1], "hook finished when invalidate returned");
        assert!(!RES.invalidate(&1).await, "second invalidate finds nothing");
        assert_eq!(RES.stats().evicted_explicit, 1);
    })
    .await;
    shut_down(&rt, 1).await;
    assert_eq!(LOG.values(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn clear_releases_everything_once() {
    tracked_resource!(RES, LOG, Scope::Global, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let report = s
        .run(async {
            for k in 1..=3 {
                RES.get_with(k, async move { k }).await.unwrap();
            }
            RES.clear().await
        })
        .await;
    assert!(report.is_ok());
    assert_eq!(report.released, 3);
    assert_eq!(LOG.values(), vec![1, 2, 3]);
    let again = s.run(async { RES.clear().await }).await;
    assert_eq!(again.released, 0);
    shut_down(&rt, 0).await;
    assert_eq!(LOG.values(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn replacing_a_value_releases_the_old_one_once() {
    tracked_resource!(RES, LOG, Scope::Global, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    s.run(async {
        RES.get_with(1, async { 10 }).await.unwrap();
        RES.cache().unwrap().insert(1, 11).await.unwrap();
    })
    .await;
    assert!(LOG.wait_for(1, Duration::from_secs(5)).await);
    assert_eq!(LOG.values(), vec![10]);
    assert_eq!(s.run(async { RES.stats() }).await.evicted_replaced, 1);
    shut_down(&rt, 1).await;
    assert_eq!(LOG.values(), vec![10, 11]);
}

#[tokio::test(start_paused = true)]
async fn session_end_releases_only_that_sessions_values() {
    tracked_resource!(RES, LOG, Scope::Session, None, None);
    let rt = support::runtime().build();
    let (alice, bob) = (rt.session(), rt.session());
    // Same key, two sessions: two loads, two values.
    let a = alice.run(async { RES.get_with(1, async { 100 }).await.unwrap() }).await;
    let b = bob.run(async { RES.get_with(1, async { 200 }).await.unwrap() }).await;
    assert_eq!((a, b), (100, 200));

    let report = alice.end().await;
    assert_eq!(report.released, 1);
    assert_eq!(LOG.values(), vec![100], "only alice's value, and before end() returned");
    // Bob still has his.
    assert_eq!(bob.run(async { RES.get_with(1, async { 999 }).await.unwrap() }).await, 200);
    // Ending again releases nothing twice.
    assert_eq!(alice.end().await.released, 0);
    shut_down(&rt, 1).await;
    assert_eq!(LOG.values(), vec![100, 200]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_global_and_session_values() {
    tracked_resource!(GLOBAL, GLOG, Scope::Global, None, None);
    tracked_resource!(PER_USER, SLOG, Scope::Session, None, None);
    let rt = support::runtime().build();
    let sessions: Vec<_> = (0..3).map(|_| rt.session()).collect();
    for (i, s) in sessions.iter().enumerate() {
        let i = i as u32;
        s.run(async move {
            GLOBAL.get_with(i, async move { i }).await.unwrap();
            PER_USER.get_with(0, async move { 10 + i }).await.unwrap();
        })
        .await;
    }
    let report = rt.shutdown().await;
    assert!(report.is_ok());
    assert_eq!(report.released, 6);
    assert_eq!(GLOG.values(), vec![0, 1, 2]);
    assert_eq!(SLOG.values(), vec![10, 11, 12]);
    assert!(sessions.iter().all(|s| s.is_ended()));
    assert_eq!(rt.session_count(), 0);
    // Shutdown is idempotent and a shut-down runtime loads nothing.
    assert_eq!(rt.shutdown().await.released, 0);
    let err = rt.session().run(async { PER_USER.get_with(0, async { 0 }).await }).await.unwrap_err();
    assert!(matches!(err, connscope::Error::RuntimeShutDown), "{err}");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_expiries_release_each_value_exactly_once() {
    tracked_resource!(RES, LOG, Scope::Global, Some(TTL), None);
    let rt = support::runtime().build();
    let s = rt.session();
    s.run(async {
        for k in 0..10_000u32 {
            RES.get_with(k, async move { k }).await.unwrap();
        }
    })
    .await;
    assert!(LOG.wait_for(10_000, Duration::from_secs(60)).await, "only {} released", LOG.values().len());
    shut_down(&rt, 0).await;
    let values = LOG.values();
    assert_eq!(values.len(), 10_000);
    assert!(values.iter().copied().eq(0..10_000u32), "each value once");
}

#[tokio::test(start_paused = true)]
async fn a_release_hook_that_never_finishes_is_dropped_after_the_hook_timeout_and_reported() {
    static STUCK: connscope::Resource<u32, u32> = connscope::Resource::new(
        "STUCK",
        Scope::Session,
        None,
        None,
        Some(|_| Box::pin(std::future::pending())),
    );
    tracked_resource!(FINE, LOG, Scope::Session, None, None);
    let rt = support::runtime().hook_timeout(Duration::from_secs(2)).build();
    let (s, other) = (rt.session(), rt.session());
    for s in [&s, &other] {
        s.run(async {
            STUCK.get_with(1, async { 1 }).await.unwrap();
            FINE.get_with(1, async { 1 }).await.unwrap();
        })
        .await;
    }
    let started = tokio::time::Instant::now();
    let report =
        tokio::time::timeout(Duration::from_secs(3600), s.end()).await.expect("the session's end returns");
    assert_eq!(started.elapsed(), Duration::from_secs(2), "after the hook timeout, not before");
    assert_eq!(report.released, 2, "{report:?}");
    let [failure] = &report.failures[..] else { panic!("one failure: {report:?}") };
    assert_eq!(&*failure.resource, "STUCK");
    assert!(failure.message.contains("still running after 2s (the runtime's `hook_timeout`)"), "{failure}");
    assert_eq!(LOG.values(), vec![1], "the other hook of the session ran");

    let report =
        tokio::time::timeout(Duration::from_secs(3600), rt.shutdown()).await.expect("shutdown returns");
    assert_eq!((report.released, report.failures.len()), (2, 1), "{report:?}");
}
