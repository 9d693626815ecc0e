//! `Conn<P>`: lazy connect, shared use, health checks, reconnect, close semantics, single flight.

mod support;

use std::sync::Arc;
use std::time::Duration;

use connscope::{Conn, HealthCheck};
use support::{Probe, ProbeProvider};

fn conn(probe: &Arc<Probe>, health: HealthCheck) -> Conn<ProbeProvider> {
    Conn::with_policy("probe", ProbeProvider(probe.clone()), health, true, Duration::from_secs(5))
}

#[tokio::test]
async fn connects_lazily_and_close_before_use_does_not_connect() {
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::DEFAULT);
    assert_eq!(probe.connects(), 0, "nothing connects until first use");
    c.close().await;
    c.close().await;
    assert_eq!((probe.connects(), probe.closes()), (0, 0), "close never connects just to close");
    assert_eq!(c.get().await.unwrap().serial, 1);
    assert_eq!(probe.connects(), 1);
}

#[tokio::test]
async fn close_then_use_reconnects_and_close_is_idempotent() {
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::DEFAULT);
    assert_eq!(c.get().await.unwrap().serial, 1);
    c.close().await;
    c.close().await;
    assert_eq!(probe.closes(), 1, "closed exactly once");
    assert!(!c.is_connected(), "close resets the handle");
    assert_eq!(c.get().await.unwrap().serial, 2, "the next use reconnects instead of a dead handle");
    assert_eq!(c.counters().connects, 2);
    assert_eq!(c.counters().reconnects, 0, "a close by the app is not a reconnect");
}

#[tokio::test]
async fn a_connection_found_closed_is_closed_and_replaced() {
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::EveryUse);
    assert_eq!(c.get().await.unwrap().serial, 1);
    probe.set_open(false);
    let fresh = c.get().await;
    probe.set_open(true);
    assert_eq!(fresh.unwrap().serial, 2, "transparently reconnected");
    assert_eq!(probe.closes(), 1, "the dead client was closed");
    assert_eq!(c.counters().reconnects, 1);
}

#[tokio::test]
async fn a_login_connection_found_closed_asks_to_log_in_again() {
    let probe = Probe::new();
    let c =
        Conn::with_policy("user", ProbeProvider(probe.clone()), HealthCheck::EveryUse, false, Duration::ZERO);
    c.get().await.unwrap();
    probe.set_open(false);
    let err = c.get().await.unwrap_err();
    assert!(matches!(err, connscope::Error::LoginRequired { .. }), "{err}");
    assert_eq!((probe.connects(), probe.closes()), (1, 1), "closed, and not reconnected");
}

#[tokio::test]
async fn a_login_connection_closed_by_the_app_never_connects_again() {
    let probe = Probe::new();
    let c =
        Conn::with_policy("user", ProbeProvider(probe.clone()), HealthCheck::EveryUse, false, Duration::ZERO);
    assert_eq!(c.get().await.unwrap().serial, 1);
    c.close().await;
    let err = c.get().await.unwrap_err();
    assert!(matches!(err, connscope::Error::LoginRequired { .. }), "{err}");
    assert_eq!((probe.connects(), probe.closes()), (1, 1), "its credentials are gone: no second connect");
}

#[tokio::test(start_paused = true)]
async fn health_check_policies() {
    // Interval: at most once per interval.
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::Interval(Duration::from_secs(5)));
    for _ in 0..10 {
        c.get().await.unwrap();
    }
    assert_eq!(probe.checks(), 0, "fresh connection: no check yet");
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..10 {
        c.get().await.unwrap();
    }
    assert_eq!(probe.checks(), 1, "one check for the whole interval");

    // OnError: only after a user reported the client broken.
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::OnError);
    let r = c.get().await.unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    c.get().await.unwrap();
    assert_eq!(probe.checks(), 0);
    r.report_broken();
    drop(r);
    probe.set_open(false);
    assert_eq!(c.get().await.unwrap().serial, 2, "checked after the error, found closed, replaced");
    assert_eq!(probe.checks(), 1);

    // EveryUse.
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::EveryUse);
    for _ in 0..5 {
        c.get().await.unwrap();
    }
    assert_eq!(probe.checks(), 4, "every use after the connect itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_first_uses_cause_one_connect() {
    let probe = Probe::new();
    probe.connect_delay_ms.store(50, std::sync::atomic::Ordering::SeqCst);
    let c = conn(&probe, HealthCheck::DEFAULT);
    let gate = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (c, gate) = (c.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                c.get().await.unwrap().serial
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    assert_eq!(probe.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_in_flight_users() {
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::DEFAULT);
    let in_use = c.get().await.unwrap();
    let closer = tokio::spawn({
        let c = c.clone();
        async move { c.close().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.closes(), 0, "not closed under a user's feet");
    assert_eq!(in_use.serial, 1);
    drop(in_use);
    closer.await.unwrap();
    assert_eq!(probe.closes(), 1);
}

#[tokio::test(start_paused = true)]
async fn close_gives_up_waiting_after_the_grace_period() {
    let probe = Probe::new();
    let c = conn(&probe, HealthCheck::DEFAULT); // grace: 5 s
    let _stuck = c.get().await.unwrap();
    let started = tokio::time::Instant::now();
    c.close().await;
    assert_eq!(probe.closes(), 1);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn a_failed_connect_is_an_error_naming_the_connection_and_stores_nothing() {
    let probe = Probe::new();
    probe.fail_connect.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = conn(&probe, HealthCheck::DEFAULT);
    let err = c.get().await.unwrap_err();
    assert_eq!(err.to_string(), "could not connect `probe`: connection refused by the test probe");
    assert!(!c.is_connected());
    probe.fail_connect.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.get().await.unwrap().serial, 1, "works once the cause is fixed");
}

/// A provider whose close never finishes (a server that stopped answering mid-close).
struct StuckClose(Arc<Probe>);

impl connscope::Provider for StuckClose {
    type Raw = support::Client;
    type Error = support::Refused;
    async fn connect(&self) -> Result<support::Client, support::Refused> {
        connscope::Provider::connect(&ProbeProvider(self.0.clone())).await
    }
    async fn is_open(&self, _raw: &support::Client) -> bool {
        true
    }
    async fn close(&self, _raw: &support::Client) {
        self.0.closes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_close_that_never_finishes_is_given_up_after_the_hook_timeout() {
    let probe = Probe::new();
    let c = Conn::with_policy(
        "stuck",
        StuckClose(probe.clone()),
        HealthCheck::DEFAULT,
        true,
        Duration::from_secs(5),
    );
    c.get().await.unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(3600), c.close()).await.expect("close returns");
    assert_eq!(started.elapsed(), connscope::DEFAULT_HOOK_TIMEOUT, "after the default hook timeout");
    assert_eq!((probe.closes(), c.counters().closes), (1, 1), "closed once, counted");
    assert_eq!(c.get().await.unwrap().serial, 2, "the handle is usable again");
}
