//! `on_release = path` takes what people write: `fn(&V)`, `fn(V)`, `async fn(V)`, each
//! returning `()` or `Result<(), E>` with `E: Display`, and any `Fn(V) -> impl Future + Send`
//! (a `const` fn pointer too). Each form: the hook runs exactly once, with the value that left;
//! an `Err` is counted in `release_failures` and listed in the report.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use connscope::{ReleaseReport, Runtime, StatsSnapshot, cached_resource};

fn runtime() -> Runtime {
    support::runtime().build()
}

/// What one hook saw: the values it was given, in order.
struct Seen(Mutex<Vec<String>>);

impl Seen {
    const fn new() -> Self {
        Seen(Mutex::new(Vec::new()))
    }
    fn push(&self, v: impl Into<String>) {
        self.0.lock().unwrap().push(v.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Loads `key` through `load`, invalidates it (which awaits the hook), and checks the hook ran
/// once with the value; then loads it again and clears, checking the report. `failing`: the
/// hook returns `Err("<value> failed")`.
async fn check_form<F, Fut>(
    seen: &Seen,
    load: F,
    invalidate: impl AsyncFn() -> bool,
    clear: impl AsyncFn() -> ReleaseReport,
    stats: fn() -> StatsSnapshot,
    failing: bool,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        let value = load().await;
        assert_eq!(load().await, value, "cached");
        assert!(seen.all().is_empty(), "no release before the value leaves");

        assert!(invalidate().await);
        assert_eq!(seen.all(), vec![value.clone()], "the hook ran once, with the value");
        let counted = stats();
        assert_eq!((counted.releases, counted.release_failures), (1, u64::from(failing)), "{counted:?}");

        load().await;
        let report = clear().await;
        assert_eq!(seen.all(), vec![value.clone(), value.clone()], "once per value that left");
        assert_eq!(report.released, 1);
        if failing {
            assert_eq!(report.failures.len(), 1, "{report:?}");
            assert_eq!(report.failures[0].message, format!("{value} failed"));
            assert!(!report.failures[0].panicked);
        } else {
            assert!(report.is_ok(), "{report:?}");
        }
        let counted = stats();
        assert_eq!((counted.releases, counted.release_failures), (2, 2 * u64::from(failing)), "{counted:?}");
    })
    .await;
    let report = rt.shutdown().await;
    assert_eq!(report.released, 0, "nothing released twice: {report:?}");
    assert_eq!(seen.all().len(), 2);
}

// fn(&V) ---------------------------------------------------------------------------------------

static BORROWS: Seen = Seen::new();

fn borrows(v: &Arc<String>) {
    BORROWS.push(v.as_str());
}

#[cached_resource(on_release = borrows)]
async fn borrows_fn(n: u32) -> Arc<String> {
    Arc::new(format!("borrowed {n}"))
}

#[tokio::test]
async fn a_plain_fn_taking_a_reference() {
    check_form(
        &BORROWS,
        || async { (*borrows_fn(1).await).clone() },
        async || borrows_fn::invalidate(1).await,
        async || borrows_fn::clear().await,
        borrows_fn::stats,
        false,
    )
    .await;
}

static BORROWS_ERR: Seen = Seen::new();

fn borrows_err(v: &Arc<String>) -> Result<(), String> {
    BORROWS_ERR.push(v.as_str());
    Err(format!("{v} failed"))
}

#[cached_resource(on_release = borrows_err)]
async fn borrows_err_fn(n: u32) -> Result<Arc<String>, connscope::Error> {
    Ok(Arc::new(format!("borrowed, failing {n}")))
}

#[tokio::test]
async fn a_plain_fn_taking_a_reference_returning_an_error() {
    check_form(
        &BORROWS_ERR,
        || async { (*borrows_err_fn(1).await.unwrap()).clone() },
        async || borrows_err_fn::invalidate(1).await,
        async || borrows_err_fn::clear().await,
        borrows_err_fn::stats,
        true,
    )
    .await;
}

// fn(V) ----------------------------------------------------------------------------------------

static TAKES: Seen = Seen::new();

fn takes(v: String) {
    TAKES.push(v);
}

#[cached_resource(scope = "session", on_release = takes)]
async fn takes_fn(n: u32) -> Result<String, connscope::Error> {
    Ok(format!("taken {n}"))
}

#[tokio::test]
async fn a_plain_fn_taking_the_value() {
    check_form(
        &TAKES,
        || async { takes_fn(1).await.unwrap() },
        async || takes_fn::invalidate(1).await,
        async || takes_fn::clear().await,
        takes_fn::stats,
        false,
    )
    .await;
}

static TAKES_ERR: Seen = Seen::new();

fn takes_err(v: String) -> Result<(), std::io::Error> {
    TAKES_ERR.push(v.clone());
    Err(std::io::Error::other(format!("{v} failed")))
}

#[cached_resource(on_release = takes_err)]
async fn takes_err_fn(n: u32) -> String {
    format!("taken, failing {n}")
}

#[tokio::test]
async fn a_plain_fn_taking_the_value_returning_an_error() {
    check_form(
        &TAKES_ERR,
        || takes_err_fn(1),
        async || takes_err_fn::invalidate(1).await,
        async || takes_err_fn::clear().await,
        takes_err_fn::stats,
        true,
    )
    .await;
}

// async fn(V) ----------------------------------------------------------------------------------

static AWAITS: Seen = Seen::new();

async fn awaits(v: String) {
    tokio::task::yield_now().await;
    AWAITS.push(v);
}

#[cached_resource(on_release = awaits)]
async fn awaits_fn(n: u32) -> String {
    format!("awaited {n}")
}

#[tokio::test]
async fn an_async_fn_taking_the_value() {
    check_form(
        &AWAITS,
        || awaits_fn(1),
        async || awaits_fn::invalidate(1).await,
        async || awaits_fn::clear().await,
        awaits_fn::stats,
        false,
    )
    .await;
}

static AWAITS_ERR: Seen = Seen::new();

/// An error type that is `Display` but not `std::error::Error`.
struct NotAnError(String);

impl std::fmt::Display for NotAnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn awaits_err(v: String) -> Result<(), NotAnError> {
    tokio::task::yield_now().await;
    AWAITS_ERR.push(v.clone());
    Err(NotAnError(format!("{v} failed")))
}

#[cached_resource(on_release = awaits_err)]
async fn awaits_err_fn(n: u32) -> Result<String, String> {
    Ok(format!("awaited, failing {n}"))
}

#[tokio::test]
async fn an_async_fn_taking_the_value_returning_an_error() {
    check_form(
        &AWAITS_ERR,
        || async { awaits_err_fn(1).await.unwrap() },
        async || awaits_err_fn::invalidate(1).await,
        async || awaits_err_fn::clear().await,
        awaits_err_fn::stats,
        true,
    )
    .await;
}

// Forms accepted before: a fn returning `impl Future + Send + 'static`, a `const` fn pointer ---

static FUTURE_RETURNING: Seen = Seen::new();

fn future_returning(v: String) -> impl Future<Output = Result<(), &'static str>> + Send + 'static {
    FUTURE_RETURNING.push(v);
    async { Ok(()) }
}

#[cached_resource(on_release = future_returning)]
async fn future_returning_fn(n: u32) -> String {
    format!("future {n}")
}

#[tokio::test]
async fn a_fn_returning_a_future() {
    check_form(
        &FUTURE_RETURNING,
        || future_returning_fn(1),
        async || future_returning_fn::invalidate(1).await,
        async || future_returning_fn::clear().await,
        future_returning_fn::stats,
        false,
    )
    .await;
}

static POINTER: Seen = Seen::new();
static POINTER_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A closure, through a `const` fn pointer.
const POINTER_HOOK: fn(&String) = |v| {
    POINTER_CALLS.fetch_add(1, SeqCst);
    POINTER.push(v.clone());
};

#[cached_resource(on_release = POINTER_HOOK)]
async fn pointer_fn(n: u32) -> String {
    format!("pointer {n}")
}

#[tokio::test]
async fn a_const_fn_pointer() {
    check_form(
        &POINTER,
        || pointer_fn(1),
        async || pointer_fn::invalidate(1).await,
        async || pointer_fn::clear().await,
        pointer_fn::stats,
        false,
    )
    .await;
    assert_eq!(POINTER_CALLS.load(SeqCst), 2);
}

// Every way a value leaves: a plain `fn(&V)` also runs on ttl expiry and session end -----------

static LEAVES: Seen = Seen::new();

fn leaves(v: &u32) {
    LEAVES.push(v.to_string());
}

#[cached_resource(scope = "session", ttl = "10s", on_release = leaves)]
async fn leaves_fn(n: u32) -> Result<u32, connscope::Error> {
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn a_plain_fn_runs_on_expiry_and_session_end() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        leaves_fn(1).await.unwrap();
        leaves_fn(2).await.unwrap();
    })
    .await;
    tokio::time::advance(std::time::Duration::from_secs(11)).await;
    s.run(leaves_fn(2)).await.unwrap(); // reloaded: the expired one was released
    rt.run_maintenance().await;
    while LEAVES.all().len() < 2 {
        tokio::task::yield_now().await;
    }
    let report = s.end().await;
    assert_eq!(report.released, 1, "{report:?}");
    let mut all = LEAVES.all();
    all.sort();
    assert_eq!(all, vec!["1", "2", "2"], "each value released exactly once");
    assert_eq!(rt.shutdown().await.released, 0);
}
