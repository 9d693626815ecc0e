//! Plays a script: a fresh connscope `Runtime` on a fresh paused current-thread Tokio runtime,
//! each operation a task of its own, then the final phase (end sessions, shutdown) and the
//! probes the checks need.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use connscope::{LoadError, ReleaseReport, Resource, ResourceCache, Runtime, Scope, Session};
use tokio::time::{Instant, timeout};

use super::log::{CacheId, Log, Origin, Outcome, Target, WriteKind, show};
use super::script::{KEYS, LoadKind, Op, OpKind, Script, Spec};
use super::{HookKind, InsertOutcome, PLANNED, Val, panic_text, release_hook};

/// How long an `end`, `shutdown` or operation may take (paused time) before it counts as hung.
pub const HANG: Duration = Duration::from_secs(120);
/// How long the checks wait after the final shutdown for hooks that should not come.
const AFTERMATH: Duration = Duration::from_secs(30);

const NAMES: [&str; 4] = ["R0", "R1", "R2", "R3"];

/// What the checks need besides the log.
pub struct Probes {
    /// Values still found in a cache after the final shutdown: (cache, key, serial).
    pub left_in_caches: Vec<(CacheId, u8, u64)>,
    /// Caches whose `len()` was not 0 after the final shutdown.
    pub nonempty_caches: Vec<(CacheId, u64)>,
    /// `session_count()` after the final shutdown.
    pub sessions_left: usize,
}

/// The loader's error.
#[derive(Debug)]
pub struct PlannedFailure;

impl std::fmt::Display for PlannedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PLANNED} loader failure")
    }
}

struct Harness {
    rt: Runtime,
    resources: Vec<&'static Resource<u8, Val>>,
    sessions: Mutex<Vec<Session>>,
    caches: Mutex<HashMap<CacheId, ResourceCache<u8, Val>>>,
    log: Arc<Log>,
}

/// Runs `script` to the end on a Tokio runtime of its own; returns the log and the probes.
pub fn play(script: &Script) -> (Arc<Log>, Probes) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a Tokio runtime");
    tokio.block_on(play_async(script))
}

async fn play_async(script: &Script) -> (Arc<Log>, Probes) {
    let log = Arc::new(Log::new());
    let mut builder = crate::support::runtime().maintenance_interval(script.maintenance_interval);
    if let Some(idle) = script.idle_timeout {
        builder = builder.idle_timeout(idle);
    }
    let rt = builder.build();
    let mut resources = Vec::new();
    for (i, spec) in script.resources.iter().enumerate() {
        resources.push(resource(i, spec, script.fresh_resources).await);
    }
    let carrier = rt.session();
    log.note(|| format!("{} started (carrier)", carrier.id()));
    let h = Arc::new(Harness {
        rt,
        resources,
        sessions: Mutex::new(vec![carrier]),
        caches: Mutex::new(HashMap::new()),
        log: Arc::clone(&log),
    });

    let start = Instant::now();
    let tasks: Vec<_> = script
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let (h, op) = (Arc::clone(&h), op.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(op.at_ms)).await;
                for _ in 0..op.yields {
                    tokio::task::yield_now().await;
                }
                h.perform(i, &op).await;
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let abort = task.abort_handle();
        match timeout(HANG, task).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) if join.is_panic() => {
                let message = panic_text(&*join.into_panic());
                if !message.contains(PLANNED) {
                    log.violation("unplanned-panic", format!("op {i} panicked: {message}"));
                }
            }
            Ok(Err(join)) => log.violation("op-hang", format!("op {i} did not finish: {join}")),
            Err(_) => {
                abort.abort();
                log.violation(
                    "op-hang",
                    format!("op {i} ({:?}) still running after {HANG:?}", script.ops[i].kind),
                );
            }
        }
    }
    h.final_phase(script.end_sessions_first).await;
    let probes = h.probe().await;
    (log, probes)
}

/// A `Resource` (they are `'static`) for slot `i` with `spec`: a new one leaked for this
/// sequence if `fresh` (its global cache then takes the fast path, and stays allocated for the
/// process), else one shared by every sequence with the same slot and settings. A shared one
/// is first used by a runtime of its own, so that no sequence takes its fast path (which
/// sequence would is a race between the test threads, and replays must not depend on it).
async fn resource(i: usize, spec: &Spec, fresh: bool) -> &'static Resource<u8, Val> {
    type Pool = HashMap<(usize, Option<Duration>, Option<u64>), &'static Resource<u8, Val>>;
    static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(Default::default);
    let make = || {
        &*Box::leak(Box::new(Resource::new(
            NAMES[i],
            spec.scope,
            spec.ttl,
            spec.max_entries,
            Some(release_hook),
        )))
    };
    if fresh {
        return make();
    }
    let key = (i, spec.ttl, spec.max_entries);
    if let Some(res) = POOL.lock().unwrap().get(&key) {
        return res;
    }
    let res = make();
    let owner = crate::support::runtime().build();
    let _ = owner.session().run(async { res.cache().map(|_| ()) }).await;
    let report = owner.shutdown().await;
    assert!(report.is_ok(), "the owner runtime of a shared resource held nothing");
    *POOL.lock().unwrap().entry(key).or_insert(res)
}

impl Harness {
    fn session(&self, n: usize) -> Session {
        let sessions = self.sessions.lock().unwrap();
        sessions[n % sessions.len()].clone()
    }

    fn cache_id(&self, res: usize, session: &Session) -> CacheId {
        match self.resources[res].scope() {
            Scope::Global => (res, None),
            Scope::Session => (res, Some(session.id())),
        }
    }

    /// Keeps a handle on the current scope's cache of `res` (inside `Session::run`), so the
    /// checks can look inside it after shutdown.
    fn keep_cache(&self, res: usize, id: CacheId) -> Option<ResourceCache<u8, Val>> {
        let cache = self.resources[res].cache().ok()?;
        self.caches.lock().unwrap().entry(id).or_insert_with(|| cache.clone());
        Some(cache)
    }

    fn value(&self, serial: u64, hook: HookKind) -> Val {
        Val { serial, hook, log: Arc::clone(&self.log) }
    }

    async fn perform(&self, i: usize, op: &Op) {
        let session = self.session(op.session);
        match op.kind {
            OpKind::Get { res, key, load, hook, cancel_ms } => {
                let id = self.cache_id(res, &session);
                let (call, outcome) = session
                    .run(async {
                        self.keep_cache(res, id);
                        let call = self.log.call_begins(id, key);
                        let get =
                            self.resources[res].try_get_with(key, self.loader(call, id, key, load, hook));
                        let outcome = match cancel_ms {
                            None => Some(get.await),
                            Some(ms) => timeout(Duration::from_millis(ms), get).await.ok(),
                        };
                        (call, outcome)
                    })
                    .await;
                self.log.call_ends(
                    call,
                    match outcome {
                        None => Outcome::Cancelled,
                        Some(Ok(v)) => Outcome::Served(v.serial),
                        Some(Err(LoadError::Failed(_))) => Outcome::LoadFailed,
                        Some(Err(LoadError::Scope(e))) => Outcome::ScopeError(e.to_string()),
                    },
                );
            }
            OpKind::Insert { res, key, delay_ms, hook } => {
                let id = self.cache_id(res, &session);
                let Some(cache) = session.run(async { self.keep_cache(res, id) }).await else {
                    self.log.note(|| format!("op {i}: no cache {} to insert into (scope closed)", show(id)));
                    return;
                };
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let serial = self.log.new_value(Origin::Insert, id, key);
                let write = self.log.write_begins(WriteKind::Insert(serial), Target::Key(id, key));
                // `insert` returns `()` today and may become fallible: `accepted` reads both.
                #[allow(clippy::unit_arg)]
                let accepted = cache.insert(key, self.value(serial, hook)).await.accepted();
                self.log.inserted(serial, accepted);
                self.log.write_ends(write, format!("accepted: {accepted}"));
            }
            OpKind::Invalidate { res, key } => {
                let id = self.cache_id(res, &session);
                let write = self.log.write_begins(WriteKind::Invalidate, Target::Key(id, key));
                let found = session
                    .run(async {
                        self.keep_cache(res, id);
                        self.resources[res].invalidate(&key).await
                    })
                    .await;
                self.log.write_ends(write, format!("found: {found}"));
            }
            OpKind::Clear { res } => {
                let id = self.cache_id(res, &session);
                let write = self.log.write_begins(WriteKind::Clear, Target::Cache(id));
                let report = session
                    .run(async {
                        self.keep_cache(res, id);
                        self.resources[res].clear().await
                    })
                    .await;
                self.check_report("clear", &report);
                self.log.write_ends(write, describe(&report));
            }
            OpKind::StartSession => {
                let s = self.rt.session();
                self.log.note(|| format!("op {i}: {} started (ended at birth: {})", s.id(), s.is_ended()));
                self.sessions.lock().unwrap().push(s);
            }
            OpKind::EndSession { cancel_ms } => self.end(&session, cancel_ms, "end").await,
            OpKind::Maintenance => {
                self.log.note(|| format!("op {i}: run_maintenance begins"));
                if timeout(HANG, self.rt.run_maintenance()).await.is_err() {
                    self.log.violation("maintenance-hang", format!("op {i}: run_maintenance did not return"));
                }
                self.log.note(|| format!("op {i}: run_maintenance returns"));
            }
            OpKind::Advance { ms } => {
                self.log.note(|| format!("op {i}: advance {ms} ms"));
                tokio::time::advance(Duration::from_millis(ms)).await;
            }
            OpKind::Shutdown { cancel_ms } => self.shutdown(cancel_ms, "shutdown").await,
        }
    }

    /// A loader for call `call`: takes a serial when it starts, behaves as `load` says.
    fn loader(
        &self,
        call: usize,
        id: CacheId,
        key: u8,
        load: LoadKind,
        hook: HookKind,
    ) -> impl Future<Output = Result<Val, PlannedFailure>> + Send + 'static {
        let log = Arc::clone(&self.log);
        async move {
            let serial = log.new_value(Origin::Load(call), id, key);
            match load {
                LoadKind::Quick => {}
                LoadKind::Slow(ms) => {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    tokio::task::yield_now().await;
                }
                LoadKind::Fail(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    log.note(|| format!("loader of #{serial} fails"));
                    return Err(PlannedFailure);
                }
                LoadKind::Panic(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    log.note(|| format!("loader of #{serial} panics"));
                    panic!("{PLANNED} loader panic of #{serial}");
                }
            }
            log.loaded(serial);
            Ok(Val { serial, hook, log })
        }
    }

    async fn end(&self, session: &Session, cancel_ms: Option<u64>, what: &str) {
        let write = self.log.write_begins(WriteKind::SessionEnd, Target::Session(session.id()));
        let limit = cancel_ms.map_or(HANG, Duration::from_millis);
        match timeout(limit, session.end()).await {
            Ok(report) => {
                self.check_report(what, &report);
                self.log.write_ends(write, describe(&report));
            }
            Err(_) if cancel_ms.is_some() => {
                self.log.note(|| format!("{what} of {} cancelled after {limit:?}", session.id()));
            }
            Err(_) => self.log.violation("end-hang", format!("{what} of {} did not return", session.id())),
        }
    }

    async fn shutdown(&self, cancel_ms: Option<u64>, what: &str) {
        let write = self.log.write_begins(WriteKind::Shutdown, Target::All);
        let limit = cancel_ms.map_or(HANG, Duration::from_millis);
        match timeout(limit, self.rt.shutdown()).await {
            Ok(report) => {
                self.check_report(what, &report);
                self.log.write_ends(write, describe(&report));
            }
            Err(_) if cancel_ms.is_some() => {
                self.log.note(|| format!("{what} cancelled after {limit:?}"));
            }
            Err(_) => self.log.violation("shutdown-hang", format!("{what} did not return")),
        }
    }

    /// A report may only list the failures and panics the harness planned.
    fn check_report(&self, what: &str, report: &ReleaseReport) {
        for f in &report.failures {
            if !f.message.contains(PLANNED) {
                self.log.violation("report-unplanned-failure", format!("{what} reported: {f}"));
            }
        }
    }

    /// After the operations: every session ends (a later call completes even after a
    /// cancelled one), the runtime shuts down, every session is ended once more.
    async fn final_phase(&self, end_sessions_first: bool) {
        self.log.note(|| "final phase".to_owned());
        let sessions = self.sessions.lock().unwrap().clone();
        if end_sessions_first {
            for s in &sessions {
                self.end(s, None, "final end").await;
            }
        }
        self.shutdown(None, "final shutdown").await;
        let tick = self.log.note(|| "final shutdown returned".to_owned());
        self.log.with(|l| l.shutdown_returned = Some(tick));
        for s in &sessions {
            self.end(s, None, "end after shutdown").await;
        }
    }

    /// Waits a while (paused time), then looks into every cache the sequence used.
    async fn probe(&self) -> Probes {
        tokio::time::sleep(AFTERMATH).await;
        let tick = self.log.note(|| "probing caches".to_owned());
        self.log.with(|l| l.probe_began = Some(tick));
        let sessions_left = self.rt.session_count();
        let caches: Vec<_> = self.caches.lock().unwrap().iter().map(|(id, c)| (*id, c.clone())).collect();
        let mut left_in_caches = Vec::new();
        let mut nonempty_caches = Vec::new();
        for (id, cache) in caches {
            let len = cache.len().await;
            if len != 0 {
                nonempty_caches.push((id, len));
            }
            for key in 0..KEYS as u8 {
                if let Some(v) = cache.get(&key).await {
                    left_in_caches.push((id, key, v.serial));
                }
            }
        }
        Probes { left_in_caches, nonempty_caches, sessions_left }
    }
}

fn describe(report: &ReleaseReport) -> String {
    format!("released {}, {} failures", report.released, report.failures.len())
}
