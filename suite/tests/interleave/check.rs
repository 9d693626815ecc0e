//! The promises, checked on the record of one sequence. Each broken promise is a
//! [`Violation`] named after its invariant, so a failure says which promise broke.

use std::collections::BTreeMap;

use super::log::{LogInner, Origin, Outcome, Target, ValueRec, Violation, WriteKind, WriteRec};
use super::run::Probes;
use super::script::Script;

/// Every invariant the checks can report, for the summary.
pub const INVARIANTS: &[&str] = &[
    "hook-twice",
    "stored-not-released",
    "released-after-shutdown",
    "left-in-cache",
    "registry-not-empty",
    "stale-after-invalidate",
    "stale-after-clear",
    "stale-after-insert",
    "load-replaced-insert",
    "served-after-release",
    "served-after-ttl",
    "served-after-end",
    "served-after-shutdown",
    "end-hang",
    "shutdown-hang",
    "maintenance-hang",
    "op-hang",
    "unplanned-panic",
    "report-unplanned-failure",
];

/// Every violation in the record of one sequence (those found while running included).
pub fn check(log: &LogInner, probes: &Probes, script: &Script) -> Vec<Violation> {
    let mut out = log.violations.clone();
    let mut push = |invariant: &'static str, detail: String| out.push(Violation { invariant, detail });

    // No hook runs twice.
    for (serial, v) in &log.values {
        if v.hook_starts.len() > 1 {
            push(
                "hook-twice",
                format!("hook of #{serial} ran {} times (ticks {:?})", v.hook_starts.len(), v.hook_starts),
            );
        }
    }

    // Every stored value is released exactly once by the time shutdown returns.
    let stored = stored_values(log, probes);
    if let Some(done) = log.shutdown_returned {
        for (serial, why) in &stored {
            let v = &log.values[serial];
            let problem = match (v.hook_starts.first(), v.hook_end) {
                (None, _) => "its hook never ran".to_owned(),
                (Some(&t), _) if t > done => {
                    format!("its hook only started at tick {t}, after shutdown returned")
                }
                (Some(_), None) => "its hook never finished".to_owned(),
                (Some(_), Some(e)) if e > done => {
                    format!("its hook finished at tick {e}, after shutdown returned")
                }
                _ => continue,
            };
            push(
                "stored-not-released",
                format!("#{serial} ({why}): {problem} (shutdown returned at tick {done})"),
            );
        }
        let quiet_until = log.probe_began.unwrap_or(u64::MAX);
        for (serial, v) in &log.values {
            if let Some(&t) = v.hook_starts.first()
                && t > done
                && t < quiet_until
                && !stored.contains_key(serial)
            {
                push(
                    "released-after-shutdown",
                    format!("hook of #{serial} started at tick {t}, after shutdown returned"),
                );
            }
        }
    }

    // Nothing left in any registry.
    for (cache, key, serial) in &probes.left_in_caches {
        push(
            "left-in-cache",
            format!("#{serial} still in {} key {key} after shutdown", super::log::show(*cache)),
        );
    }
    for (cache, len) in &probes.nonempty_caches {
        push("registry-not-empty", format!("{} holds {len} values after shutdown", super::log::show(*cache)));
    }
    if probes.sessions_left != 0 {
        push("registry-not-empty", format!("session_count() is {} after shutdown", probes.sessions_left));
    }

    // Nothing served that a completed write, a release, the TTL or a closed scope ruled out.
    for (call_id, call) in log.calls.iter().enumerate() {
        let Outcome::Served(serial) = call.outcome else { continue };
        let v = &log.values[&serial];
        let own = v.origin == Origin::Load(call_id);
        let mut seen: Vec<&'static str> = Vec::new();
        let mut report = |invariant: &'static str, detail: String| {
            if !seen.contains(&invariant) {
                seen.push(invariant);
                push(
                    invariant,
                    format!("call {call_id} (began at tick {}) got #{serial}: {detail}", call.begin_tick),
                );
            }
        };
        if let Some(&t) = v.hook_starts.first()
            && t < call.begin_tick
        {
            report("served-after-release", format!("its hook had started at tick {t}"));
        }
        if !own
            && let (Some(ttl), Some(from)) = (script.resources[call.cache.0].ttl, v.ttl_from)
            && call.begin_at >= from + ttl
        {
            report("served-after-ttl", format!("its TTL of {ttl:?} had passed"));
        }
        for w in &log.writes {
            let Some(end) = w.end_tick else { continue };
            if end >= call.begin_tick || !affects(w, call.cache, call.key) {
                continue;
            }
            let inserted = match w.kind {
                WriteKind::Insert(x) => log.values.get(&x),
                _ => None,
            };
            if let Some((invariant, why)) = stale(w, v, serial, own, inserted) {
                report(
                    invariant,
                    format!("{why} (write began at tick {}, completed at tick {end})", w.start_tick),
                );
            }
        }
    }
    out
}

/// Values the cache certainly stored: every completed insert, every value a call got from the
/// cache (its load was over before the call began: the loader had returned and the call that
/// ran it had returned too, so it was not shared in flight), every value still found in a cache
/// after shutdown.
fn stored_values(log: &LogInner, probes: &Probes) -> BTreeMap<u64, String> {
    let mut stored = BTreeMap::new();
    for (serial, v) in &log.values {
        if v.origin == Origin::Insert && v.end_tick.is_some() {
            stored.insert(*serial, "inserted".to_owned());
        }
    }
    for (call_id, call) in log.calls.iter().enumerate() {
        let Outcome::Served(serial) = call.outcome else { continue };
        let v = &log.values[&serial];
        let Origin::Load(leader) = v.origin else { continue };
        let over = v.end_tick.max(log.calls[leader].end_tick);
        if leader != call_id && v.end_tick.is_some() && over.is_some_and(|t| t < call.begin_tick) {
            stored.entry(serial).or_insert_with(|| format!("served from the cache to call {call_id}"));
        }
    }
    for (_, _, serial) in &probes.left_in_caches {
        stored.entry(*serial).or_insert_with(|| "left in a cache".to_owned());
    }
    stored
}

fn affects(w: &WriteRec, cache: super::log::CacheId, key: u8) -> bool {
    match w.target {
        Target::Key(c, k) => c == cache && k == key,
        Target::Cache(c) => c == cache,
        Target::Session(s) => cache.1 == Some(s),
        Target::All => true,
    }
}

/// Whether write `w`, completed before a call began, rules out the value `v` it got.
/// `inserted`: the value an insert `w` stored.
fn stale(
    w: &WriteRec,
    v: &ValueRec,
    serial: u64,
    own: bool,
    inserted: Option<&ValueRec>,
) -> Option<(&'static str, String)> {
    let loaded_before = v.origin != Origin::Insert && v.start_tick < w.start_tick;
    let inserted_before = v.origin == Origin::Insert && v.end_tick.is_some_and(|e| e < w.start_tick);
    // An insert counts only if the cache took it; a load "replaced" it only if it was still
    // there when the load returned (it was not released before by expiry, eviction...).
    let took = inserted.is_some_and(|x| x.accepted == Some(true));
    let there_at_load_end = inserted.is_some_and(|x| match (x.hook_starts.first(), v.end_tick) {
        (Some(h), Some(e)) => *h > e,
        _ => true,
    });
    match w.kind {
        WriteKind::SessionEnd => Some(("served-after-end", "its session had ended".to_owned())),
        WriteKind::Shutdown => Some(("served-after-shutdown", "the runtime had shut down".to_owned())),
        _ if own => None,
        WriteKind::Invalidate | WriteKind::Clear if loaded_before || inserted_before => {
            let invariant =
                if w.kind == WriteKind::Clear { "stale-after-clear" } else { "stale-after-invalidate" };
            let how = if loaded_before { "its load started" } else { "it was inserted" };
            Some((invariant, format!("{how} before a {:?} of its key", w.kind)))
        }
        WriteKind::Insert(x) if !took || x == serial => None,
        WriteKind::Insert(x) if loaded_before && v.end_tick.is_some_and(|e| e > w.start_tick) => {
            there_at_load_end.then(|| {
                ("load-replaced-insert", format!("a load that began before insert #{x} replaced it"))
            })
        }
        WriteKind::Insert(x) if loaded_before || inserted_before => {
            Some(("stale-after-insert", format!("it was stored before insert #{x} replaced it")))
        }
        _ => None,
    }
}
