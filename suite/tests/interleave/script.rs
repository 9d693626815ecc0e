//! A sequence's script, generated from its seed alone: the runtime's settings, the resources,
//! and the operations with the time each starts at.

use std::fmt;
use std::time::Duration;

use connscope::Scope;

use super::{HookKind, Rng};

/// Keys are `0..KEYS`: few, so calls collide.
pub const KEYS: u64 = 3;

/// The TTLs a resource may have.
const TTLS_MS: [u64; 5] = [150, 400, 900, 1600, 2500];

/// One resource of the sequence.
#[derive(Clone, Debug)]
pub struct Spec {
    pub scope: Scope,
    pub ttl: Option<Duration>,
    pub max_entries: Option<u64>,
}

/// How a loader behaves.
#[derive(Clone, Copy, Debug)]
pub enum LoadKind {
    /// Returns at once.
    Quick,
    /// Yields and sleeps this many milliseconds, then returns.
    Slow(u64),
    /// Sleeps this many milliseconds, then returns an error.
    Fail(u64),
    /// Sleeps this many milliseconds, then panics.
    Panic(u64),
}

/// What an operation does.
#[derive(Clone, Debug)]
pub enum OpKind {
    /// `try_get_with`, dropped after `cancel_ms` if set.
    Get {
        res: usize,
        key: u8,
        load: LoadKind,
        hook: HookKind,
        cancel_ms: Option<u64>,
    },
    /// Takes the cache handle now, inserts after `delay_ms` (so the scope may have closed).
    Insert {
        res: usize,
        key: u8,
        delay_ms: u64,
        hook: HookKind,
    },
    Invalidate {
        res: usize,
        key: u8,
    },
    Clear {
        res: usize,
    },
    StartSession,
    /// `Session::end`, dropped after `cancel_ms` if set.
    EndSession {
        cancel_ms: Option<u64>,
    },
    /// `Runtime::run_maintenance` (idle sessions, TTL, evictions), besides the background task.
    Maintenance,
    /// `tokio::time::advance`.
    Advance {
        ms: u64,
    },
    /// `Runtime::shutdown`, dropped after `cancel_ms` if set.
    Shutdown {
        cancel_ms: Option<u64>,
    },
}

/// One operation: it starts at `at_ms`, yields `yields` times, and works in session
/// number `session` (modulo the sessions started so far).
#[derive(Clone, Debug)]
pub struct Op {
    pub at_ms: u64,
    pub yields: u32,
    pub session: usize,
    pub kind: OpKind,
}

/// The whole sequence.
#[derive(Clone, Debug)]
pub struct Script {
    pub seed: u64,
    pub idle_timeout: Option<Duration>,
    pub maintenance_interval: Duration,
    pub resources: Vec<Spec>,
    pub ops: Vec<Op>,
    /// Whether the final phase ends every session before the final shutdown.
    pub end_sessions_first: bool,
    /// Whether the resources are new ones (so global calls take the resource's fast path, kept
    /// for its first runtime) rather than ones shared with earlier sequences.
    pub fresh_resources: bool,
}

impl Script {
    /// The script of `seed`.
    pub fn generate(seed: u64) -> Script {
        let mut rng = Rng::new(seed);
        let idle_timeout = rng.chance(50).then(|| Duration::from_millis(rng.between(300, 3000)));
        let maintenance_interval = Duration::from_millis(rng.between(50, 1000));
        // A few TTLs only, so the harness can reuse one `Resource` per setting (see `run`).
        let ttl =
            |rng: &mut Rng| rng.chance(50).then(|| Duration::from_millis(TTLS_MS[rng.below(5) as usize]));
        let resources = vec![
            Spec { scope: Scope::Global, ttl: ttl(&mut rng), max_entries: None },
            Spec { scope: Scope::Global, ttl: ttl(&mut rng), max_entries: Some(rng.between(1, 3)) },
            Spec { scope: Scope::Session, ttl: ttl(&mut rng), max_entries: None },
            Spec { scope: Scope::Session, ttl: ttl(&mut rng), max_entries: Some(rng.between(1, 3)) },
        ];
        let count = rng.between(10, 36);
        let horizon = rng.between(500, 5000);
        let shutdown_chance = if rng.chance(25) { 4 } else { 0 };
        let ops = (0..count)
            .map(|_| Op {
                at_ms: rng.below(horizon),
                yields: rng.below(4) as u32,
                session: rng.below(8) as usize,
                kind: op_kind(&mut rng, resources.len(), shutdown_chance),
            })
            .collect();
        Script {
            seed,
            idle_timeout,
            maintenance_interval,
            resources,
            ops,
            end_sessions_first: rng.chance(50),
            fresh_resources: rng.chance(6),
        }
    }
}

fn op_kind(rng: &mut Rng, resources: usize, shutdown_chance: u64) -> OpKind {
    let res = rng.below(resources as u64) as usize;
    let key = rng.below(KEYS) as u8;
    let roll = rng.below(100);
    if roll < shutdown_chance {
        return OpKind::Shutdown { cancel_ms: cancel(rng, 50) };
    }
    match roll {
        0..=44 => {
            OpKind::Get { res, key, load: load_kind(rng), hook: hook_kind(rng), cancel_ms: cancel(rng, 20) }
        }
        45..=54 => OpKind::Insert { res, key, delay_ms: rng.below(3) * rng.below(800), hook: hook_kind(rng) },
        55..=65 => OpKind::Invalidate { res, key },
        66..=70 => OpKind::Clear { res },
        71..=78 => OpKind::StartSession,
        79..=88 => OpKind::EndSession { cancel_ms: cancel(rng, 40) },
        89..=94 => OpKind::Maintenance,
        _ => OpKind::Advance { ms: rng.between(1, 4000) },
    }
}

/// `Some(ms)` with probability `percent`: 0 (cancel after the first poll), a little, or a lot.
fn cancel(rng: &mut Rng, percent: u64) -> Option<u64> {
    rng.chance(percent).then(|| match rng.below(3) {
        0 => 0,
        1 => rng.between(1, 20),
        _ => rng.between(20, 2000),
    })
}

fn load_kind(rng: &mut Rng) -> LoadKind {
    match rng.below(100) {
        0..=39 => LoadKind::Quick,
        40..=79 => LoadKind::Slow(rng.between(1, 1500)),
        80..=91 => LoadKind::Fail(rng.below(500)),
        _ => LoadKind::Panic(rng.below(500)),
    }
}

fn hook_kind(rng: &mut Rng) -> HookKind {
    match rng.below(100) {
        0..=49 => HookKind::Quick,
        50..=79 => HookKind::Slow(rng.between(1, 1500)),
        80..=89 => HookKind::Fail(rng.below(300)),
        _ => HookKind::Panic(rng.below(300)),
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: idle_timeout {:?}, maintenance every {:?}, end sessions before the final shutdown: {}, \
             fresh resources: {}",
            self.seed,
            self.idle_timeout,
            self.maintenance_interval,
            self.end_sessions_first,
            self.fresh_resources
        )?;
        for (i, r) in self.resources.iter().enumerate() {
            writeln!(f, "  R{i}: {:?}, ttl {:?}, max_entries {:?}", r.scope, r.ttl, r.max_entries)?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(
                f,
                "  op {i:>2} at {:>4} ms (+{} yields, session #{}): {:?}",
                op.at_ms, op.yields, op.session, op.kind
            )?;
        }
        Ok(())
    }
}
