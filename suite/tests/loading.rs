//! Loading: single flight, errors not cached, panics and cancellation do not poison a key.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use connscope::{Error, Resource, Scope};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_callers_run_one_load() {
    static RES: Resource<u32, Arc<String>> = Resource::new("single_flight", Scope::Global, None, None, None);
    let rt = support::runtime().build();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (s, runs, gate) = (rt.session(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                s.run(async {
                    gate.wait().await;
                    RES.get_with(7, async {
                        runs.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Arc::new("seven".to_owned())
                    })
                    .await
                    .unwrap()
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(*t.await.unwrap(), "seven");
    }
    assert_eq!(runs.load(SeqCst), 1);
    let stats = RES.stats_in(&rt);
    assert_eq!(stats.loads, 1);
    assert_eq!(stats.hits + stats.misses, 64);
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("backend said no ({0})")]
    Backend(u32),
    #[error(transparent)]
    Scope(#[from] Error),
}

#[tokio::test(start_paused = true)]
async fn an_error_is_returned_and_not_cached() {
    static RES: Resource<u32, u32> = Resource::new("fallible", Scope::Global, None, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let attempts = AtomicU32::new(0);
    let load = || async {
        let n = attempts.fetch_add(1, SeqCst) + 1;
        if n == 1 { Err(AppError::Backend(n)) } else { Ok(n * 10) }
    };
    let first = s.run(RES.try_get(1, load())).await;
    assert!(matches!(first, Err(AppError::Backend(1))), "the caller gets its own error back");
    let second = s.run(RES.try_get(1, load())).await.unwrap();
    assert_eq!(second, 20, "the error was not cached: the next call loaded again");
    let third = s.run(RES.try_get(1, load())).await.unwrap();
    assert_eq!(third, 20, "the Ok was cached");
    let stats = s.run(async { RES.stats() }).await;
    assert_eq!((stats.loads, stats.load_failures), (2, 1));
}

/// Paused time on one thread: every caller is polled (and joins the load in flight) before the
/// clock moves, so exactly one load runs, whatever the machine's speed.
#[tokio::test(start_paused = true)]
async fn waiters_of_a_failed_load_get_a_shared_error_and_nothing_is_cached() {
    static RES: Resource<u32, u32> = Resource::new("shared_failure", Scope::Global, None, None, None);
    let rt = support::runtime().build();
    let runs = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, runs) = (rt.session(), runs.clone());
            tokio::spawn(async move {
                s.run(RES.try_get(1, async move {
                    runs.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<u32, _>(AppError::Backend(7))
                }))
                .await
            })
        })
        .collect();
    let mut own = 0;
    let mut shared = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(AppError::Backend(7)) => own += 1,
            Err(AppError::Scope(Error::SharedLoadFailed { source, .. })) => {
                assert!(source.to_string().contains("backend said no"));
                shared += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(runs.load(SeqCst), 1, "single flight: the failing load ran once for all eight callers");
    assert_eq!((own, shared), (1, 7), "the loader's caller got its own error, the waiters a shared one");
    let stats = RES.stats_in(&rt);
    assert_eq!((stats.loads, stats.load_failures), (1, 1), "{stats:?}");
    let cache = rt.session().run(async { RES.cache() }).await.unwrap();
    assert!(cache.is_empty().await, "nothing was cached");
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (0, true), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_does_not_poison_the_key() {
    static RES: Resource<u32, u32> = Resource::new("panicky", Scope::Global, None, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let s2 = s.clone();
    let crashed =
        tokio::spawn(async move { s2.run(RES.get_with(1, async { panic!("loader exploded") })).await }).await;
    assert!(crashed.unwrap_err().is_panic());
    let v = s.run(RES.get_with(1, async { 5 })).await.unwrap();
    assert_eq!(v, 5, "the next call loads again");
    let stats = s.run(async { RES.stats() }).await;
    assert_eq!(stats.load_failures, 1);
    assert_eq!(stats.loads, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_does_not_block_the_others() {
    static RES: Resource<u32, u32> = Resource::new("cancelled", Scope::Global, None, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let s = s.clone();
        tokio::spawn(async move {
            s.run(RES.get_with(1, async move {
                let _ = started_tx.send(());
                std::future::pending::<u32>().await // a load that would never finish
            }))
            .await
        })
    };
    started_rx.await.unwrap();
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.run(RES.get_with(1, async { 42 })).await })
    };
    tokio::task::yield_now().await;
    leader.abort();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    assert_eq!(got.expect("waiter blocked behind a cancelled leader").unwrap().unwrap(), 42);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_release_hook_does_not_stop_the_others() {
    static RELEASED: AtomicU32 = AtomicU32::new(0);
    static RES: Resource<u32, u32> = Resource::new(
        "bad_hook",
        Scope::Global,
        None,
        None,
        Some(|v| {
            Box::pin(async move {
                match v {
                    2 => panic!("hook exploded on 2"),
                    3 => Err("hook failed on 3".into()),
                    _ => {
                        RELEASED.fetch_add(1, SeqCst);
                        Ok(())
                    }
                }
            })
        }),
    );
    let rt = support::runtime().build();
    let s = rt.session();
    let report = s
        .run(async {
            for k in 1..=4 {
                RES.get_with(k, async move { k }).await.unwrap();
            }
            RES.clear().await
        })
        .await;
    assert_eq!(report.released, 4);
    assert_eq!(RELEASED.load(SeqCst), 2, "hooks of 1 and 4 ran despite 2 and 3");
    let mut failures: Vec<_> = report.failures.iter().map(|f| (f.panicked, f.message.clone())).collect();
    failures.sort();
    assert_eq!(
        failures,
        vec![(false, "hook failed on 3".to_owned()), (true, "hook exploded on 2".to_owned())]
    );
    // Nothing is left behind, and the cache keeps working.
    assert!(s.run(async { RES.cache().unwrap().is_empty().await }).await);
    assert_eq!(s.run(RES.get_with(2, async { 22 })).await.unwrap(), 22);
    let stats = s.run(async { RES.stats() }).await;
    assert_eq!((stats.releases, stats.release_failures), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn a_session_resource_outside_a_session_is_a_typed_error() {
    static RES: Resource<u32, u32> = Resource::new("needs_session", Scope::Session, None, None, None);
    let err = RES.get_with(1, async { 1 }).await.unwrap_err();
    assert!(matches!(&err, Error::NoActiveSession { what } if what == "needs_session"));
    assert!(err.to_string().contains("Session::run"), "says what to do: {err}");
    let via_from: Result<u32, AppError> = RES.try_get(1, async { Ok(1) }).await;
    assert!(matches!(via_from, Err(AppError::Scope(Error::NoActiveSession { .. }))));
}
