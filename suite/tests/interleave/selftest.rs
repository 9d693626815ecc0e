//! The checks themselves, on fabricated records: each broken promise is caught under its own
//! name, and a clean record passes. (A checker that never fires would let the random test pass
//! by accident.)

use std::time::Duration;

use super::check::check;
use super::log::{CacheId, Log, Origin, Outcome, Target, WriteKind};
use super::run::Probes;
use super::script::Script;

fn probes() -> Probes {
    Probes { left_in_caches: Vec::new(), nonempty_caches: Vec::new(), sessions_left: 0 }
}

/// The invariants `check` reports for the record `build` writes (resource 0 has a 1 s TTL).
fn verdict(build: impl FnOnce(&Log)) -> Vec<&'static str> {
    let log = Log::new();
    build(&log);
    let mut script = Script::generate(0);
    script.resources[0].ttl = Some(Duration::from_secs(1));
    let mut names: Vec<_> =
        log.with(|l| check(l, &probes(), &script)).into_iter().map(|v| v.invariant).collect();
    names.dedup();
    names
}

const C: CacheId = (0, None);

/// Call `n` loads a value with a serial and gets it.
fn load(log: &Log) -> (usize, u64) {
    let call = log.call_begins(C, 1);
    let serial = log.new_value(Origin::Load(call), C, 1);
    log.loaded(serial);
    log.call_ends(call, Outcome::Served(serial));
    (call, serial)
}

fn hit(log: &Log, serial: u64) {
    let call = log.call_begins(C, 1);
    log.call_ends(call, Outcome::Served(serial));
}

fn release(log: &Log, serial: u64) {
    log.hook_started(serial);
    log.hook_finished(serial);
}

fn shut_down(log: &Log) {
    let tick = log.note(|| "final shutdown returned".to_owned());
    log.with(|l| l.shutdown_returned = Some(tick));
}

/// Asserts every check fires on its fabricated case, and stays quiet on a clean record.
pub fn run() {
    let clean = verdict(|log| {
        let (_, a) = load(log);
        hit(log, a);
        let w = log.write_begins(WriteKind::Invalidate, Target::Key(C, 1));
        release(log, a);
        log.write_ends(w, String::new());
        let (_, b) = load(log);
        hit(log, b);
        release(log, b);
        shut_down(log);
    });
    assert_eq!(clean, Vec::<&str>::new(), "a clean record passes");

    let twice = verdict(|log| {
        let (_, a) = load(log);
        release(log, a);
        release(log, a);
        shut_down(log);
    });
    assert_eq!(twice, ["hook-twice"]);

    let never = verdict(|log| {
        let (_, a) = load(log);
        hit(log, a);
        shut_down(log);
    });
    assert_eq!(never, ["stored-not-released"]);

    let stale = verdict(|log| {
        let call = log.call_begins(C, 1);
        let a = log.new_value(Origin::Load(call), C, 1);
        let w = log.write_begins(WriteKind::Invalidate, Target::Key(C, 1));
        log.write_ends(w, String::new());
        log.loaded(a);
        log.call_ends(call, Outcome::Served(a));
        hit(log, a);
        release(log, a);
        shut_down(log);
    });
    assert_eq!(stale, ["stale-after-invalidate"]);

    let released = verdict(|log| {
        let (_, a) = load(log);
        release(log, a);
        hit(log, a);
        shut_down(log);
    });
    assert_eq!(released, ["served-after-release"]);

    let expired = verdict(|log| {
        let (_, a) = load(log);
        // Its TTL started a second ago.
        let earlier = tokio::time::Instant::now() - Duration::from_secs(1);
        log.with(|l| l.values.get_mut(&a).expect("recorded").ttl_from = Some(earlier));
        hit(log, a);
        release(log, a);
        shut_down(log);
    });
    assert_eq!(expired, ["served-after-ttl"]);

    let after_shutdown = verdict(|log| {
        let (_, a) = load(log);
        let w = log.write_begins(WriteKind::Shutdown, Target::All);
        release(log, a);
        log.write_ends(w, String::new());
        let (_, b) = load(log);
        release(log, b);
        shut_down(log);
    });
    assert_eq!(after_shutdown, ["served-after-shutdown"]);

    let replaced = verdict(|log| {
        let call = log.call_begins(C, 1);
        let a = log.new_value(Origin::Load(call), C, 1);
        let x = log.new_value(Origin::Insert, C, 1);
        let w = log.write_begins(WriteKind::Insert(x), Target::Key(C, 1));
        log.inserted(x, true);
        log.write_ends(w, String::new());
        log.loaded(a);
        log.call_ends(call, Outcome::Served(a));
        release(log, x);
        hit(log, a);
        release(log, a);
        shut_down(log);
    });
    assert_eq!(replaced, ["load-replaced-insert"]);
}
