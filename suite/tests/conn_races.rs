//! `Conn` and session logins under races and cancellation: a fake provider whose `is_open`,
//! `connect` and `close` block at gates until the test lets them through, so every interleaving
//! below is forced, not hoped for. Time is paused: `settle` lets every other task run until it
//! blocks, and no test depends on the wall clock.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use connscope::{Conn, Connection, Error, GlobalScope, HealthCheck, Provider, SessionScope};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};

/// Where a provider call stops while armed: it announces its arrival and waits for a pass.
struct Gate {
    armed: AtomicBool,
    arrivals: Semaphore,
    passes: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { armed: AtomicBool::new(false), arrivals: Semaphore::new(0), passes: Semaphore::new(0) }
    }
}

impl Gate {
    fn arm(&self) {
        self.armed.store(true, SeqCst);
    }
    /// Later calls pass freely (a call already stopped still waits for its pass).
    fn disarm(&self) {
        self.armed.store(false, SeqCst);
    }
    /// Called by the provider.
    async fn pass(&self) {
        if self.armed.load(SeqCst) {
            self.arrivals.add_permits(1);
            self.passes.acquire().await.expect("never closed").forget();
        }
    }
    /// Waits until a provider call stopped here.
    async fn arrival(&self) {
        self.arrivals.acquire().await.expect("never closed").forget();
    }
    /// Lets one stopped call through.
    fn let_one_through(&self) {
        self.passes.add_permits(1);
    }
}

/// What happened to the clients of one label.
#[derive(Default)]
struct Fake {
    connects: AtomicU64,
    closed: Mutex<Vec<u64>>,
    shut: AtomicBool,
    refuse: AtomicBool,
    is_open_gate: Gate,
    close_gate: Gate,
}

impl Fake {
    /// Serials of the clients closed so far, in order.
    fn closed(&self) -> Vec<u64> {
        self.closed.lock().unwrap().clone()
    }
    fn set_open(&self, open: bool) {
        self.shut.store(!open, SeqCst);
    }
    fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, SeqCst);
    }
}

static FAKES: LazyLock<Mutex<HashMap<String, Arc<Fake>>>> = LazyLock::new(Default::default);

fn fake(label: &str) -> Arc<Fake> {
    FAKES.lock().unwrap().entry(label.to_owned()).or_default().clone()
}

/// The provider: settings name the fake they report to.
#[derive(Debug, serde::Deserialize)]
struct Gated {
    label: String,
}

impl Gated {
    fn new(label: &str) -> Self {
        Gated { label: label.to_owned() }
    }
}

impl Provider for Gated {
    type Raw = support::Client;
    type Error = support::Refused;
    async fn connect(&self) -> Result<support::Client, support::Refused> {
        let f = fake(&self.label);
        if f.refuse.load(SeqCst) {
            return Err(support::Refused);
        }
        Ok(support::Client { serial: f.connects.fetch_add(1, SeqCst) + 1 })
    }
    async fn is_open(&self, _raw: &support::Client) -> bool {
        let f = fake(&self.label);
        f.is_open_gate.pass().await;
        !f.shut.load(SeqCst)
    }
    async fn close(&self, raw: &support::Client) {
        let f = fake(&self.label);
        f.close_gate.pass().await;
        f.closed.lock().unwrap().push(raw.serial);
    }
}

impl Connection for Gated {
    type Scope = GlobalScope;
    const NAME: &'static str = "gated";
    const HEALTH_CHECK: HealthCheck = HealthCheck::EveryUse;
}

/// The same provider as a per-user login.
#[derive(Debug, serde::Deserialize)]
struct TabLogin(Gated);

impl Provider for TabLogin {
    type Raw = support::Client;
    type Error = support::Refused;
    async fn connect(&self) -> Result<support::Client, support::Refused> {
        self.0.connect().await
    }
    async fn is_open(&self, raw: &support::Client) -> bool {
        self.0.is_open(raw).await
    }
    async fn close(&self, raw: &support::Client) {
        self.0.close(raw).await
    }
}

impl Connection for TabLogin {
    type Scope = SessionScope;
    const NAME: &'static str = "tab_login";
    const HEALTH_CHECK: HealthCheck = HealthCheck::EveryUse;
}

const GRACE: Duration = Duration::from_secs(10);

fn conn(label: &str) -> Conn<Gated> {
    Conn::with_policy("gated", Gated::new(label), HealthCheck::EveryUse, true, GRACE)
}

/// Lets every other task run until it blocks (the paused clock only advances then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn get_counts_its_user_before_the_health_check_so_close_waits_for_it() {
    let f = fake("count-before-check");
    let c = conn("count-before-check");
    drop(c.get().await.unwrap());
    f.is_open_gate.arm();
    let getter = tokio::spawn({
        let c = c.clone();
        async move { c.get().await }
    });
    f.is_open_gate.arrival().await;
    let started = Instant::now();
    let closer = tokio::spawn({
        let c = c.clone();
        async move { c.close().await }
    });
    settle().await;
    f.is_open_gate.let_one_through();
    let user = getter.await.unwrap().expect("the check passed");
    assert_eq!(user.serial, 1);
    assert_eq!(f.closed(), Vec::<u64>::new(), "the client handed out is not closed while it is held");
    assert!(!closer.is_finished(), "close waits for the user whose check was running");
    drop(user);
    closer.await.unwrap();
    assert_eq!(f.closed(), vec![1], "closed once its user let go");
    assert!(started.elapsed() < GRACE, "closed when the user let go, not at the grace period");
    assert_eq!(c.counters().closes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_logged_in_check_keeps_the_login_another_tab_made_meanwhile() {
    let f = fake("two-tabs");
    let rt = support::runtime().build();
    let s = rt.session();
    let old = s.login("db", TabLogin(Gated::new("two-tabs"))).await.unwrap();
    // Tab A finds the old connection closed and is closing it...
    f.set_open(false);
    f.close_gate.arm();
    let tab_a = tokio::spawn({
        let s = s.clone();
        async move { s.logged_in::<TabLogin>("db").await }
    });
    f.close_gate.arrival().await;
    f.close_gate.disarm();
    // ...while tab B logs in anew.
    f.set_open(true);
    let new = s.login("db", TabLogin(Gated::new("two-tabs"))).await.unwrap();
    assert_ne!(new.id(), old.id());
    f.close_gate.let_one_through();
    let err = tab_a.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::LoginRequired { .. }), "{err}");

    let now = s.logged_in::<TabLogin>("db").await.expect("tab B's login survives tab A's stale check");
    assert_eq!(now.id(), new.id());
    assert_eq!(now.get().await.unwrap().serial, 2);
    assert_eq!(f.closed(), vec![1], "only the connection tab A checked was closed");
    let report = s.end().await;
    assert_eq!((report.released, report.failures.len()), (1, 0));
    assert_eq!(f.closed(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_reconnect_does_not_make_a_later_connect_count_as_one() {
    let f = fake("failed-reconnect");
    let c = conn("failed-reconnect");
    assert_eq!(c.get().await.unwrap().serial, 1);
    f.set_open(false);
    f.set_refuse(true);
    assert!(c.get().await.is_err(), "found closed, and the reconnect failed");
    assert_eq!(f.closed(), vec![1]);
    f.set_open(true);
    f.set_refuse(false);
    c.close().await;
    assert_eq!(c.get().await.unwrap().serial, 2);
    let counters = c.counters();
    assert_eq!((counters.connects, counters.reconnects), (2, 0), "an ordinary connect is not a reconnect");

    // A reconnect that succeeds still counts, once.
    f.set_open(false);
    let fresh = c.get().await;
    f.set_open(true);
    assert_eq!(fresh.unwrap().serial, 3);
    assert_eq!(c.counters().reconnects, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_background_close_of_a_replaced_client() {
    let f = fake("background-close");
    let rt =
        support::runtime().grace_period(GRACE).connection_setting("wh", "label", "background-close").build();
    let conn = rt.connection::<Gated>("wh").await.unwrap();
    let held = conn.get().await.unwrap();
    assert_eq!(held.serial, 1);
    f.set_open(false);
    let fresh = conn.get().await;
    f.set_open(true);
    assert_eq!(fresh.unwrap().serial, 2, "replaced while client 1 is still in use");
    assert_eq!(f.closed(), Vec::<u64>::new(), "client 1 closes once its user lets go");
    let user = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(held);
    });
    let started = Instant::now();
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.failures.len()), (1, 0));
    let mut closed = f.closed();
    closed.sort_unstable();
    assert_eq!(closed, vec![1, 2], "shutdown returned only after the replaced client was closed");
    assert_eq!(started.elapsed(), Duration::from_secs(2), "when its user let go");
    user.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_dropped_while_waiting_for_users_still_closes_exactly_once() {
    let f = fake("close-dropped");
    let c = conn("close-dropped");
    let held = c.get().await.unwrap();
    assert!(timeout(Duration::from_secs(1), c.close()).await.is_err(), "close waits for the user");
    assert_eq!(f.closed(), Vec::<u64>::new());
    drop(held);
    settle().await;
    assert_eq!(f.closed(), vec![1], "the client the dropped close took is closed anyway");
    c.close().await;
    assert_eq!(f.closed(), vec![1], "and never twice");
    assert_eq!(c.counters().closes, 1);
}

#[tokio::test(start_paused = true)]
async fn get_dropped_while_closing_a_dead_client_still_closes_it() {
    let f = fake("get-dropped");
    let c = conn("get-dropped");
    assert_eq!(c.get().await.unwrap().serial, 1);
    f.set_open(false);
    f.close_gate.arm();
    let getter = tokio::spawn({
        let c = c.clone();
        async move { c.get().await }
    });
    f.close_gate.arrival().await;
    getter.abort();
    assert!(getter.await.unwrap_err().is_cancelled());
    f.close_gate.let_one_through();
    settle().await;
    assert_eq!(f.closed(), vec![1], "the dead client is closed though its finder was dropped");
    f.set_open(true);
    assert_eq!(c.get().await.unwrap().serial, 2);
    assert_eq!(c.counters().closes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_second_login_does_not_wait_for_the_first_ones_close_and_each_client_closes_once() {
    let f = fake("login-dropped");
    let rt = support::runtime().build();
    let s = rt.session();
    s.login("db", TabLogin(Gated::new("login-dropped"))).await.unwrap();
    // The first login's close is held at its gate: the second login is stored without waiting.
    f.close_gate.arm();
    let second = s.login("db", TabLogin(Gated::new("login-dropped"))).await.unwrap();
    f.close_gate.arrival().await;
    f.close_gate.disarm();
    assert_eq!(s.logged_in::<TabLogin>("db").await.unwrap().id(), second.id());
    assert!(f.closed().is_empty(), "the first client's close is still running");
    f.close_gate.let_one_through();
    settle().await;
    assert_eq!(f.closed(), vec![1]);
    assert_eq!(second.get().await.unwrap().serial, 2);
    let report = s.end().await;
    assert_eq!((report.released, report.failures.len()), (1, 0));
    assert_eq!(f.closed(), vec![1, 2], "every client connected is closed exactly once");
}

/// Runs `fut` to its end on this thread, with no Tokio runtime on it (connscope may hand work to
/// its own background runtime).
fn block_on_outside_tokio<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
}

/// Polls `fut` once on this thread, with no Tokio runtime anywhere.
fn poll_outside_tokio<F: std::future::Future>(fut: F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::pin!(fut).poll(&mut cx)
}

#[test]
fn closing_outside_a_tokio_runtime_does_not_panic() {
    let f = fake("no-runtime");
    let c = conn("no-runtime");
    let std::task::Poll::Ready(Ok(held)) = poll_outside_tokio(c.get()) else { panic!("connects at once") };
    // Found closed while `held` is in use: replaced, the old client closed without a runtime.
    f.set_open(false);
    let std::task::Poll::Ready(fresh) = poll_outside_tokio(c.get()) else { panic!("no wait") };
    f.set_open(true);
    assert_eq!(fresh.unwrap().serial, 2);
    drop(held);
    block_on_outside_tokio(c.close());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while f.closed().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut closed = f.closed();
    closed.sort();
    assert_eq!(closed, vec![1, 2], "the replaced client closed in the background, the other by close()");
    assert_eq!(c.counters().closes, 2);
}
