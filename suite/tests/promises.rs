//! Promises the README makes that no other suite pins down, checked through the public API with
//! paused time and events (never a guessed sleep): release never runs on a caller's path, failing
//! hooks are reported, the grace wait, the documented defaults by their literal values, the
//! eviction and health-check counters, and the quickstart's output. (The tracing events are in
//! `tracing_events.rs`: a test binary of their own, see there.)

mod support;

use std::time::Duration;

use connscope::{Conn, HealthCheck, Resource, Scope};
use support::{Probe, ProbeProvider, ReleaseLog};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};

/// How long a call may take on the paused clock before the test calls it blocked. Paused time
/// auto-advances when every task waits, so a call stuck behind a hook hits this at once.
const BLOCKED: Duration = Duration::from_secs(3600);

/// Waits (on the paused clock, bounded) until `f` holds, letting background tasks run.
async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f()
}

// ---------------------------------------------------------------------------------------------
// Release never runs inline on a caller
// ---------------------------------------------------------------------------------------------

/// Records which values' hooks were entered and finished; the hooks of values 1, 21 and 101 are
/// blocked until the test opens the gate (it never does before its assertions: "blocked
/// forever" as far as they go).
static INLINE_STARTED: ReleaseLog = ReleaseLog::new();
static INLINE_DONE: ReleaseLog = ReleaseLog::new();
static INLINE_GATE: Semaphore = Semaphore::const_new(0);

fn blocking_hook(v: u32) -> connscope::BoxFuture<'static, Result<(), connscope::HookError>> {
    Box::pin(async move {
        INLINE_STARTED.record(v);
        if matches!(v, 1 | 21 | 101) {
            INLINE_GATE.acquire().await.unwrap().forget();
        }
        INLINE_DONE.record(v);
        Ok(())
    })
}

static INLINE_TTL: Resource<u32, u32> =
    Resource::new("inline_ttl", Scope::Global, Some(Duration::from_secs(10)), None, Some(blocking_hook));
static INLINE_SIZE: Resource<u32, u32> =
    Resource::new("inline_size", Scope::Global, None, Some(1), Some(blocking_hook));

#[tokio::test(start_paused = true)]
async fn a_release_hook_blocked_forever_delays_no_hit_and_no_load_of_another_key() {
    let rt = support::runtime().build();
    let s = rt.session();
    // Value 1 expires at 10 s; value 2 (loaded at 5 s) lives until 15 s.
    s.run(INLINE_TTL.get_with(1, async { 1 })).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let loaded_2 = Instant::now();
    s.run(INLINE_TTL.get_with(2, async { 2 })).await.unwrap();
    // Maintenance finds 1 expired and starts its hook, which blocks.
    assert!(
        INLINE_STARTED.wait_for(1, Duration::from_secs(60)).await,
        "the expired value's hook never started"
    );
    assert_eq!(INLINE_STARTED.values(), vec![1]);

    let hit = timeout(BLOCKED, s.run(INLINE_TTL.get_with(2, async { 99 }))).await;
    assert_eq!(hit.expect("a hit waited for another key's release hook").unwrap(), 2);
    let load = timeout(BLOCKED, s.run(INLINE_TTL.get_with(3, async { 3 }))).await;
    assert_eq!(load.expect("a load waited for another key's release hook").unwrap(), 3);
    let again = timeout(BLOCKED, s.run(INLINE_TTL.get_with(1, async { 11 }))).await;
    assert_eq!(again.expect("a reload waited for the old value's release hook").unwrap(), 11);

    // Maintenance is not stuck behind the blocked hook either: 2 is released on time.
    assert!(INLINE_DONE.wait_for(1, Duration::from_secs(60)).await, "2 was never released");
    let late = INLINE_DONE.released_at(2).unwrap() - (loaded_2 + Duration::from_secs(10));
    assert!(late <= Duration::from_millis(250), "2 released {late:?} after its expiry");

    // max_entries = 1: loading 22 evicts 21, whose hook blocks; the load returns anyway.
    s.run(INLINE_SIZE.get_with(21, async { 21 })).await.unwrap();
    let evicting = timeout(BLOCKED, s.run(INLINE_SIZE.get_with(22, async { 22 }))).await;
    assert_eq!(evicting.expect("a load waited for the evicted value's release hook").unwrap(), 22);
    rt.run_maintenance().await;
    assert!(INLINE_STARTED.wait_for(3, Duration::from_secs(60)).await, "{:?}", INLINE_STARTED.values());
    assert_eq!(INLINE_STARTED.values(), vec![1, 2, 21]);
    assert_eq!(
        timeout(BLOCKED, s.run(INLINE_SIZE.get_with(22, async { 0 }))).await.unwrap().unwrap(),
        22,
        "a hit while the evicted value's hook is blocked"
    );

    // No maintenance at all (one-hour interval): the caller itself meets the expired value 101.
    let quiet = support::runtime().maintenance_interval(Duration::from_secs(3600)).build();
    let q = quiet.session();
    q.run(INLINE_TTL.get_with(101, async { 101 })).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let reload = timeout(BLOCKED, q.run(INLINE_TTL.get_with(101, async { 111 }))).await;
    assert_eq!(reload.expect("the caller that met an expired value ran its hook inline").unwrap(), 111);
    assert!(INLINE_STARTED.wait_for(4, Duration::from_secs(60)).await, "{:?}", INLINE_STARTED.values());
    // (The shared clock moved 10 s: rt's maintenance released 3 and 11 meanwhile, on time.)
    assert_eq!(INLINE_DONE.values(), vec![2, 3, 11], "the hooks of 1, 21 and 101 are still blocked");

    // Open the gate: every value is released exactly once by the time shutdown returns.
    INLINE_GATE.add_permits(3);
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "22 at shutdown: {report:?}");
    let report = quiet.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "111 at shutdown: {report:?}");
    assert_eq!(INLINE_DONE.values(), vec![1, 2, 3, 11, 21, 22, 101, 111], "each value released exactly once");
}

static IDLE_GATE: Semaphore = Semaphore::const_new(0);
static IDLE_DONE: ReleaseLog = ReleaseLog::new();
static IDLE_SESSION: Resource<u32, u32> = Resource::new(
    "idle_session_blocked",
    Scope::Session,
    None,
    None,
    Some(|v| {
        Box::pin(async move {
            IDLE_GATE.acquire().await.unwrap().forget();
            IDLE_DONE.record(v);
            Ok(())
        })
    }),
);
static IDLE_GLOBAL: Resource<u32, u32> = Resource::new(
    "idle_global_ttl",
    Scope::Global,
    Some(Duration::from_millis(20_001)),
    None,
    Some(|v| {
        Box::pin(async move {
            IDLE_DONE.record(v);
            Ok(())
        })
    }),
);

#[tokio::test(start_paused = true)]
async fn an_idle_sessions_blocked_hook_does_not_delay_another_values_expiry() {
    let rt = support::runtime().idle_timeout(Duration::from_secs(10)).build();
    let idle = rt.session();
    idle.run(IDLE_SESSION.get_with(1, async { 1 })).await.unwrap();
    let loaded = Instant::now();
    rt.session().run(IDLE_GLOBAL.get_with(2, async { 2 })).await.unwrap();
    // At about 10 s maintenance ends the idle session; its hook blocks. The global value
    // expires at 20.001 s and must still be released within 250 ms of that.
    assert!(IDLE_DONE.wait_for(1, Duration::from_secs(60)).await, "the global value was never released");
    assert!(idle.is_ended());
    let late = IDLE_DONE.released_at(2).unwrap() - (loaded + Duration::from_millis(20_001));
    assert!(late <= Duration::from_millis(250), "released {late:?} after its expiry");
    IDLE_GATE.add_permits(1);
    let report = rt.shutdown().await;
    assert!(report.is_ok(), "{report:?}");
    assert!(IDLE_DONE.wait_for(2, Duration::from_secs(60)).await);
    assert_eq!(IDLE_DONE.values(), vec![1, 2], "each released exactly once");
}

// ---------------------------------------------------------------------------------------------
// Failing hooks are reported by `end` and `shutdown`
// ---------------------------------------------------------------------------------------------

fn failing_hook(v: u32) -> connscope::BoxFuture<'static, Result<(), connscope::HookError>> {
    Box::pin(async move {
        match v % 10 {
            2 => Err(format!("hook failed on {v}").into()),
            3 => panic!("hook exploded on {v}"),
            _ => Ok(()),
        }
    })
}

static FAILING_SESSION: Resource<u32, u32> =
    Resource::new("failing_session", Scope::Session, None, None, Some(failing_hook));
static FAILING_GLOBAL: Resource<u32, u32> =
    Resource::new("failing_global", Scope::Global, None, None, Some(failing_hook));

fn failures(report: &connscope::ReleaseReport) -> Vec<(String, bool, String)> {
    let mut f: Vec<_> =
        report.failures.iter().map(|f| (f.resource.to_string(), f.panicked, f.message.clone())).collect();
    f.sort();
    f
}

#[tokio::test(start_paused = true)]
async fn end_and_shutdown_report_every_failing_and_panicking_hook() {
    let rt = support::runtime().build();
    let (a, b) = (rt.session(), rt.session());
    for k in [11, 12, 13] {
        a.run(FAILING_SESSION.get_with(k, async move { k })).await.unwrap();
    }
    let ended = a.end().await;
    assert_eq!(ended.released, 3, "{ended:?}");
    assert!(!ended.is_ok());
    assert_eq!(
        failures(&ended),
        vec![
            ("failing_session".to_owned(), false, "hook failed on 12".to_owned()),
            ("failing_session".to_owned(), true, "hook exploded on 13".to_owned()),
        ]
    );

    for k in [21, 22, 23] {
        b.run(FAILING_SESSION.get_with(k, async move { k })).await.unwrap();
    }
    for k in [31, 32, 33] {
        b.run(FAILING_GLOBAL.get_with(k, async move { k })).await.unwrap();
    }
    let shut = rt.shutdown().await;
    assert_eq!(shut.released, 6, "b's three values and the three global ones: {shut:?}");
    assert!(!shut.is_ok());
    assert_eq!(
        failures(&shut),
        vec![
            ("failing_global".to_owned(), false, "hook failed on 32".to_owned()),
            ("failing_global".to_owned(), true, "hook exploded on 33".to_owned()),
            ("failing_session".to_owned(), false, "hook failed on 22".to_owned()),
            ("failing_session".to_owned(), true, "hook exploded on 23".to_owned()),
        ]
    );
    let text = shut.failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(text.contains("failing_global") && text.contains("hook exploded on 33"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The grace wait on release and replace, and the documented defaults by their literal values
// ---------------------------------------------------------------------------------------------

/// A runtime with connection `wh` configured for `support::Warehouse` (probe `label`), and no
/// grace period set: the default applies.
fn warehouse_runtime(label: &str) -> connscope::Runtime {
    support::runtime().connection_setting("wh", "label", label).build()
}

#[tokio::test(start_paused = true)]
async fn a_released_connection_is_closed_only_after_its_user_drops_it() {
    let probe = support::probe("grace_release");
    let rt = warehouse_runtime("grace_release");
    let conn = rt.connection::<support::Warehouse>("wh").await.unwrap();
    let in_use = conn.get().await.unwrap();
    let started = Instant::now();
    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(probe.closes(), 0, "not closed under its user's feet");
    assert!(!shutdown.is_finished(), "shutdown waits for the user");
    assert_eq!(in_use.serial, 1, "the user still has its client");
    drop(in_use);
    let report = shutdown.await.unwrap();
    assert_eq!((report.released, report.is_ok()), (1, true), "{report:?}");
    assert_eq!(probe.closes(), 1);
    assert_eq!(started.elapsed(), Duration::from_secs(3), "closed as soon as the user let go");
}

#[tokio::test(start_paused = true)]
async fn the_default_grace_period_is_ten_seconds() {
    // Through the runtime: a global connection held by a user past shutdown.
    let probe = support::probe("grace_default");
    let rt = warehouse_runtime("grace_default");
    let conn = rt.connection::<support::Warehouse>("wh").await.unwrap();
    let _stuck = conn.get().await.unwrap();
    let started = Instant::now();
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "{report:?}");
    assert_eq!(probe.closes(), 1, "closed after the grace period even though still held");
    assert_eq!(started.elapsed(), Duration::from_secs(10), "README: 10 s by default");

    // And a handle made with `Conn::new`, closed by the app.
    let probe = Probe::new();
    let c = Conn::new("probe", ProbeProvider(probe.clone()));
    let _stuck = c.get().await.unwrap();
    let started = Instant::now();
    c.close().await;
    assert_eq!(probe.closes(), 1);
    assert_eq!(started.elapsed(), Duration::from_secs(10), "README: 10 s by default");
}

#[tokio::test(start_paused = true)]
async fn a_replaced_connection_is_closed_only_after_its_user_drops_it() {
    // `support::Warehouse` checks on every use: found closed, it is replaced at once, and the old
    // client is closed only when its user lets go.
    let probe = support::probe("grace_replace");
    let rt = warehouse_runtime("grace_replace");
    let conn = rt.connection::<support::Warehouse>("wh").await.unwrap();
    let old = conn.get().await.unwrap();
    probe.set_open(false);
    let fresh = timeout(BLOCKED, conn.get()).await.expect("the replacement waited for the old user").unwrap();
    probe.set_open(true);
    assert_eq!((old.serial, fresh.serial), (1, 2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(probe.closes(), 0, "the replaced client is not closed under its user's feet");
    drop(old);
    assert!(until(|| probe.closes() == 1).await, "the replaced client was never closed");
    assert_eq!(conn.counters().reconnects, 1);
    drop(fresh);
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "{report:?}");
    assert_eq!(probe.closes(), 2, "each client closed exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_replaced_login_is_closed_only_after_its_user_drops_it() {
    let probe = support::probe("grace_login");
    let rt = support::runtime().build();
    let s = rt.session();
    let label = || support::UserDb { label: "grace_login".into() };
    let first = s.login("db", label()).await.unwrap();
    let in_use = first.get().await.unwrap();
    let second = tokio::spawn({
        let s = s.clone();
        async move { s.login("db", label()).await.map(|c| c.provider().label.clone()) }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(probe.closes(), 0, "the earlier login is not closed under its user's feet");
    drop(in_use);
    assert_eq!(second.await.unwrap().unwrap(), "grace_login");
    assert!(until(|| probe.closes() == 1).await, "the earlier login was never closed");
    let report = s.end().await;
    assert_eq!((report.released, report.is_ok()), (1, true), "{report:?}");
    assert_eq!((probe.connects(), probe.closes()), (2, 2));
    assert_eq!(rt.shutdown().await.released, 0);
}

#[tokio::test(start_paused = true)]
async fn the_default_health_check_runs_at_most_every_five_seconds_and_is_counted() {
    let probe = Probe::new();
    let c = Conn::new("probe", ProbeProvider(probe.clone()));
    assert_eq!(c.get().await.unwrap().serial, 1);
    tokio::time::advance(Duration::from_millis(4_999)).await;
    for _ in 0..3 {
        c.get().await.unwrap();
    }
    assert_eq!((probe.checks(), c.counters().health_checks), (0, 0), "not before 5 s");
    tokio::time::advance(Duration::from_millis(1)).await;
    for _ in 0..3 {
        c.get().await.unwrap();
    }
    assert_eq!((probe.checks(), c.counters().health_checks), (1, 1), "README: at most every 5 seconds");
    tokio::time::advance(Duration::from_secs(5)).await;
    c.get().await.unwrap();
    assert_eq!((probe.checks(), c.counters().health_checks), (2, 2));
    // A user's report makes the next use check, whatever the interval.
    c.get().await.unwrap().report_broken();
    c.get().await.unwrap();
    assert_eq!((probe.checks(), c.counters().health_checks), (3, 3), "checked after report_broken");
    assert_eq!(HealthCheck::DEFAULT, HealthCheck::Interval(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn expired_values_are_released_within_250_ms_by_default() {
    static LOG: ReleaseLog = ReleaseLog::new();
    // 10.001 s: an expiry that falls between two ticks of any interval that divides 10 s, so
    // a longer interval than documented shows as a late release.
    const TTL: Duration = Duration::from_millis(10_001);
    static RES: Resource<u32, u32> = Resource::new(
        "default_interval",
        Scope::Global,
        Some(TTL),
        None,
        Some(|v| {
            Box::pin(async move {
                LOG.record(v);
                Ok(())
            })
        }),
    );
    let rt = support::runtime().build();
    let loaded_at = Instant::now();
    rt.session().run(RES.get_with(1, async { 1 })).await.unwrap();
    assert!(LOG.wait_for(1, Duration::from_secs(60)).await, "never released");
    let late = LOG.released_at(1).unwrap() - (loaded_at + TTL);
    assert!(late <= Duration::from_millis(250), "README: within 250 ms by default; was {late:?}");
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.is_ok()), (0, true), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// Eviction counters
// ---------------------------------------------------------------------------------------------

static COUNTED: Resource<u32, u32> =
    Resource::new("counted", Scope::Global, Some(Duration::from_secs(10)), None, None);
static COUNTED_SESSION: Resource<u32, u32> =
    Resource::new("counted_session", Scope::Session, None, None, None);

#[tokio::test(start_paused = true)]
async fn each_way_out_is_counted_under_its_own_cause() {
    let rt = support::runtime().maintenance_interval(Duration::from_secs(3600)).build();
    let s = rt.session();
    let global = s.run(async { COUNTED.cache() }).await.unwrap();
    let session = s.run(async { COUNTED_SESSION.cache() }).await.unwrap();
    s.run(async {
        COUNTED.get_with(1, async { 1 }).await.unwrap();
        COUNTED.get_with(2, async { 2 }).await.unwrap();
        COUNTED_SESSION.get_with(1, async { 1 }).await.unwrap();
        COUNTED_SESSION.get_with(2, async { 2 }).await.unwrap();
        COUNTED_SESSION.get_with(3, async { 3 }).await.unwrap();
    })
    .await;

    // Expiry, found by maintenance.
    tokio::time::advance(Duration::from_secs(10)).await;
    rt.run_maintenance().await;
    assert!(until(|| global.stats().releases == 2).await, "{:?}", global.stats());
    let g = global.stats();
    assert_eq!((g.evicted_expired, g.evictions(), g.release_failures), (2, 2, 0), "{g:?}");
    s.run(COUNTED.get_with(3, async { 3 })).await.unwrap();

    // Session end.
    let ended = s.end().await;
    assert_eq!((ended.released, ended.is_ok()), (3, true), "{ended:?}");
    let st = session.stats();
    assert_eq!((st.evicted_session_end, st.evictions(), st.releases), (3, 3, 3), "{st:?}");

    // Shutdown.
    let shut = rt.shutdown().await;
    assert_eq!((shut.released, shut.is_ok()), (1, true), "{shut:?}");
    let g = global.stats();
    assert_eq!((g.evicted_expired, g.evicted_shutdown, g.evictions(), g.releases), (2, 1, 3, 3), "{g:?}");
    assert_eq!((g.evicted_size, g.evicted_explicit, g.evicted_replaced, g.evicted_session_end), (0, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// The quickstart's output
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
#[allow(dead_code)]
#[path = "../../examples/quickstart.rs"]
mod quickstart;

/// The README's sample output of the quickstart (the `text` block after "cargo run --example
/// quickstart` creates").
#[cfg(feature = "sqlite")]
fn readme_quickstart_output() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let from =
        readme.find("`cargo run --example quickstart` creates").expect("the README describes the quickstart");
    let block = &readme[from..];
    let start = block.find("```text\n").expect("followed by its output") + "```text\n".len();
    let end = start + block[start..].find("```").unwrap();
    block[start..end].lines().map(str::to_owned).collect()
}

/// What varies from run to run: the timings, and how many connections the pool opened.
#[cfg(feature = "sqlite")]
fn normalized(line: &str) -> String {
    if let Some((head, _)) = line.split_once(" rows in ") {
        return format!("{head} rows in <time>");
    }
    if let Some((head, tail)) = line.split_once("database, ") {
        let n: u64 = tail.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(n >= 1, "at least one connection was opened: {line}");
        return format!("{head}database, <n>{}", &tail[tail.find(' ').unwrap_or(tail.len())..]);
    }
    line.to_owned()
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_quickstart_prints_what_the_readme_says() {
    let mut out = Vec::new();
    // The quickstart's own secrets file, seen from this suite (one directory down).
    let builder = connscope::Runtime::builder()
        .secrets_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/secrets.toml"));
    quickstart::quickstart_on(builder, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let printed: Vec<String> = text.lines().map(normalized).collect();
    let documented: Vec<String> = readme_quickstart_output().iter().map(|l| normalized(l)).collect();
    assert_eq!(printed, documented, "the quickstart printed:\n{text}");
    assert_eq!(documented.len(), 7, "{documented:?}");
}
