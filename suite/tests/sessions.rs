//! Sessions: task-local context, isolation, explicit end, idle timeout, typed errors after end.

mod support;

use std::time::Duration;

use connscope::{Error, Resource, Scope, Session};

async fn deep_in_the_call_stack() -> Option<connscope::SessionId> {
    async fn deeper() -> Option<connscope::SessionId> {
        Session::current().map(|s| s.id())
    }
    deeper().await
}

#[tokio::test]
async fn code_deep_in_a_call_finds_the_current_session() {
    let rt = support::runtime().build();
    let (a, b) = (rt.session(), rt.session());
    assert_ne!(a.id(), b.id());
    assert_eq!(a.run(deep_in_the_call_stack()).await, Some(a.id()));
    assert_eq!(b.run(deep_in_the_call_stack()).await, Some(b.id()));
    assert_eq!(deep_in_the_call_stack().await, None);
    assert_eq!(rt.find_session(a.id()).map(|s| s.id()), Some(a.id()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_is_ended_by_the_runtime() {
    tracked_resource!(RES, LOG, Scope::Session, None, None);
    let rt = support::runtime().idle_timeout(Duration::from_secs(60)).build();
    let idle = rt.session();
    let busy = rt.session();
    idle.run(RES.get_with(1, async { 1 })).await.unwrap();
    busy.run(RES.get_with(1, async { 2 })).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        busy.touch();
    }
    // 80 s without activity: the idle one is ended and its value released; the busy one lives.
    assert!(idle.is_ended());
    assert!(!busy.is_ended());
    assert_eq!(rt.session_count(), 1);
    assert_eq!(LOG.values(), vec![1], "the idle session's value was released, and only it");
    let err = idle.run(RES.get_with(1, async { 3 })).await.unwrap_err();
    assert!(matches!(err, Error::SessionEnded { id } if id == idle.id()), "{err}");
    assert_eq!(busy.run(RES.get_with(1, async { 4 })).await.unwrap(), 2, "the busy session kept its value");
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "{report:?}");
    assert_eq!(LOG.values(), vec![1, 2], "each released exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_session_running_work_is_not_idle() {
    let rt = support::runtime().idle_timeout(Duration::from_secs(10)).build();
    let s = rt.session();
    s.run(tokio::time::sleep(Duration::from_secs(60))).await;
    assert!(!s.is_ended(), "a session with work in progress is not idle");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(s.is_ended());
    assert_eq!(rt.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn using_an_ended_session_is_a_typed_error_not_a_panic() {
    static RES: Resource<u32, u32> = Resource::new("ended", Scope::Session, None, None, None);
    let rt = support::runtime().build();
    let s = rt.session();
    let report = s.end().await;
    assert_eq!((report.released, report.is_ok()), (0, true), "{report:?}");
    let err = s.run(RES.get_with(1, async { 1 })).await.unwrap_err();
    assert!(err.to_string().contains("has ended"), "{err}");
    let err = s.run(rt.connection::<support::UserDb>("userdb")).await.unwrap_err();
    assert!(matches!(err, Error::SessionEnded { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_ends_release_once_and_both_return_after_release() {
    static LOG: support::ReleaseLog = support::ReleaseLog::new();
    static RES: Resource<u32, u32> = Resource::new(
        "slow_release",
        Scope::Session,
        None,
        None,
        Some(|v| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                LOG.record(v);
                Ok(())
            })
        }),
    );
    let rt = support::runtime().build();
    let s = rt.session();
    s.run(RES.get_with(1, async { 1 })).await.unwrap();
    let (r1, r2) = tokio::join!(s.end(), s.end());
    assert_eq!(r1.released + r2.released, 1);
    assert!(r1.is_ok() && r2.is_ok(), "{r1:?} {r2:?}");
    assert_eq!(LOG.values(), vec![1], "both ends returned after the hook finished");
}
