//! What happened during one sequence, in order: every value (where it came from, when its
//! hook ran), every call (when it began, what it got), every write (invalidate, clear, insert,
//! session end, shutdown). Events are numbered by a "tick" that only grows; the harness runs on
//! one thread, so tick order is the real order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use connscope::SessionId;
use tokio::time::Instant;

/// Which cache: a resource index, and the session for a session-scoped resource.
pub type CacheId = (usize, Option<SessionId>);

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A loader run by call number `.0`.
    Load(usize),
    /// `ResourceCache::insert`.
    Insert,
}

/// One value's life.
#[derive(Clone, Debug)]
pub struct ValueRec {
    pub origin: Origin,
    pub cache: CacheId,
    pub key: u8,
    /// When the loader started / the insert was called.
    pub start_tick: u64,
    /// When the loader returned it / the insert returned.
    pub end_tick: Option<u64>,
    /// When its TTL starts: the loader's return, or the insert's call.
    pub ttl_from: Option<Instant>,
    /// For inserts: whether the cache accepted it.
    pub accepted: Option<bool>,
    pub hook_starts: Vec<u64>,
    pub hook_end: Option<u64>,
}

/// What a call (`try_get_with`) got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Served(u64),
    LoadFailed,
    ScopeError(String),
    Cancelled,
}

/// One call of `try_get_with`.
#[derive(Clone, Debug)]
pub struct CallRec {
    pub cache: CacheId,
    pub key: u8,
    pub begin_tick: u64,
    pub begin_at: Instant,
    pub outcome: Outcome,
    /// When the call returned (or was cancelled).
    pub end_tick: Option<u64>,
}

/// What a write affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Key(CacheId, u8),
    Cache(CacheId),
    Session(SessionId),
    All,
}

/// The kind of write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Invalidate,
    Clear,
    Insert(u64),
    SessionEnd,
    Shutdown,
}

/// One write: when it began and (if it was not cancelled) when it completed.
#[derive(Clone, Debug)]
pub struct WriteRec {
    pub kind: WriteKind,
    pub target: Target,
    pub start_tick: u64,
    pub end_tick: Option<u64>,
}

/// A broken promise.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The invariant's name, e.g. `stale-after-invalidate`.
    pub invariant: &'static str,
    pub detail: String,
}

/// The record of one sequence.
#[derive(Default)]
pub struct LogInner {
    pub tick: u64,
    pub trace: Vec<String>,
    pub values: BTreeMap<u64, ValueRec>,
    pub calls: Vec<CallRec>,
    pub writes: Vec<WriteRec>,
    pub violations: Vec<Violation>,
    /// Tick at which the final `shutdown()` returned.
    pub shutdown_returned: Option<u64>,
    /// Tick at which the checks started probing the caches (after a quiet wait).
    pub probe_began: Option<u64>,
    next_serial: u64,
}

/// Shared by the harness and every value (values report their own hooks).
pub struct Log {
    inner: Mutex<LogInner>,
    start: Instant,
}

impl Log {
    /// An empty log; times in the trace count from now.
    pub fn new() -> Self {
        Log { inner: Mutex::new(LogInner::default()), start: Instant::now() }
    }

    /// Runs `f` on the record.
    pub fn with<R>(&self, f: impl FnOnce(&mut LogInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a trace line and returns its tick.
    pub fn note(&self, line: impl FnOnce() -> String) -> u64 {
        let ms = self.start.elapsed().as_millis();
        self.with(|l| {
            l.tick += 1;
            let tick = l.tick;
            l.trace.push(format!("{tick:>5} {:>4}.{:03}s  {}", ms / 1000, ms % 1000, line()));
            tick
        })
    }

    /// Records a broken promise seen while running (a hang, an unexpected report).
    pub fn violation(&self, invariant: &'static str, detail: String) {
        self.note(|| format!("VIOLATION {invariant}: {detail}"));
        self.with(|l| l.violations.push(Violation { invariant, detail }));
    }

    /// A new value: returns its serial.
    pub fn new_value(&self, origin: Origin, cache: CacheId, key: u8) -> u64 {
        let serial = self.with(|l| {
            l.next_serial += 1;
            l.next_serial
        });
        let what = match origin {
            Origin::Load(call) => format!("call {call}: loader starts value #{serial}"),
            Origin::Insert => format!("insert #{serial} into {} key {key}", show(cache)),
        };
        let tick = self.note(|| what);
        let ttl_from = (origin == Origin::Insert).then(Instant::now);
        self.with(|l| {
            l.values.insert(
                serial,
                ValueRec {
                    origin,
                    cache,
                    key,
                    start_tick: tick,
                    end_tick: None,
                    ttl_from,
                    accepted: None,
                    hook_starts: Vec::new(),
                    hook_end: None,
                },
            )
        });
        serial
    }

    /// A loader returned `serial` (`Ok`).
    pub fn loaded(&self, serial: u64) {
        let tick = self.note(|| format!("loader returns #{serial}"));
        self.with(|l| {
            if let Some(v) = l.values.get_mut(&serial) {
                v.end_tick = Some(tick);
                v.ttl_from = Some(Instant::now());
            }
        });
    }

    /// An insert of `serial` returned.
    pub fn inserted(&self, serial: u64, accepted: bool) {
        let tick = self.note(|| format!("insert #{serial} returns (accepted: {accepted})"));
        self.with(|l| {
            if let Some(v) = l.values.get_mut(&serial) {
                v.end_tick = Some(tick);
                v.accepted = Some(accepted);
            }
        });
    }

    /// The release hook of `serial` started.
    pub fn hook_started(&self, serial: u64) {
        let tick = self.note(|| format!("hook of #{serial} starts"));
        self.with(|l| {
            if let Some(v) = l.values.get_mut(&serial) {
                v.hook_starts.push(tick);
            }
        });
    }

    /// The release hook of `serial` finished (or is about to fail or panic).
    pub fn hook_finished(&self, serial: u64) {
        let tick = self.note(|| format!("hook of #{serial} ends"));
        self.with(|l| {
            if let Some(v) = l.values.get_mut(&serial) {
                v.hook_end = Some(tick);
            }
        });
    }

    /// A call begins now; returns its number.
    pub fn call_begins(&self, cache: CacheId, key: u8) -> usize {
        let id = self.with(|l| l.calls.len());
        let tick = self.note(|| format!("call {id}: get {} key {key} begins", show(cache)));
        self.with(|l| {
            l.calls.push(CallRec {
                cache,
                key,
                begin_tick: tick,
                begin_at: Instant::now(),
                outcome: Outcome::Pending,
                end_tick: None,
            })
        });
        id
    }

    /// Call `id` ended with `outcome`.
    pub fn call_ends(&self, id: usize, outcome: Outcome) {
        let tick = self.note(|| format!("call {id}: {outcome:?}"));
        self.with(|l| {
            l.calls[id].outcome = outcome;
            l.calls[id].end_tick = Some(tick);
        });
    }

    /// A write begins; returns its index.
    pub fn write_begins(&self, kind: WriteKind, target: Target) -> usize {
        let index = self.with(|l| l.writes.len());
        let tick = self.note(|| format!("{kind:?} of {} begins", show_target(target)));
        self.with(|l| l.writes.push(WriteRec { kind, target, start_tick: tick, end_tick: None }));
        index
    }

    /// Write `index` completed (`what`: its result, for the trace).
    pub fn write_ends(&self, index: usize, what: String) {
        let kind = self.with(|l| l.writes[index].kind);
        let tick = self.note(|| format!("{kind:?} completes: {what}"));
        self.with(|l| l.writes[index].end_tick = Some(tick));
    }
}

/// A cache for the trace: `R2` (global) or `R1@session-4`.
pub fn show(cache: CacheId) -> String {
    match cache.1 {
        None => format!("R{}", cache.0),
        Some(s) => format!("R{}@{s}", cache.0),
    }
}

/// A write's target for the trace.
pub fn show_target(t: Target) -> String {
    match t {
        Target::Key(c, k) => format!("{} key {k}", show(c)),
        Target::Cache(c) => show(c),
        Target::Session(s) => s.to_string(),
        Target::All => "the runtime".to_owned(),
    }
}
