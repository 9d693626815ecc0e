//! The randomized interleaving harness (issue 9, section 10). A seed generates a script of
//! operations ([`script`]); [`run`] plays it as concurrent tasks on paused Tokio time against
//! the public API only, recording every observable event in a [`log::Log`]; [`check`] then
//! tests the promises (released once, never stale, nothing left behind) on that record.
#![allow(dead_code)]

pub mod check;
pub mod log;
pub mod lru;
pub mod run;
pub mod script;
pub mod selftest;

use std::cell::RefCell;
use std::sync::{Arc, Once};
use std::time::Duration;

use connscope::{BoxFuture, HookError};

use log::Log;

/// Every panic and failure the harness causes on purpose carries this text.
pub const PLANNED: &str = "interleave: planned";

/// splitmix64: small, seedable, good enough to pick operations.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What a value's release hook does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// Returns `Ok` at once.
    Quick,
    /// Sleeps this many milliseconds, then returns `Ok`.
    Slow(u64),
    /// Sleeps this many milliseconds, then returns an error.
    Fail(u64),
    /// Sleeps this many milliseconds, then panics.
    Panic(u64),
}

/// A cached value: a unique serial, how its release hook behaves, and the log it reports to.
#[derive(Clone)]
pub struct Val {
    pub serial: u64,
    pub hook: HookKind,
    pub log: Arc<Log>,
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.serial)
    }
}

/// The release hook of every resource of the harness: records its start and end around what
/// the value's [`HookKind`] says.
pub fn release_hook(v: Val) -> BoxFuture<'static, Result<(), HookError>> {
    Box::pin(async move {
        v.log.hook_started(v.serial);
        let outcome = match v.hook {
            HookKind::Quick => Ok(()),
            HookKind::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            HookKind::Fail(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Err(format!("{PLANNED} hook failure of #{}", v.serial).into())
            }
            HookKind::Panic(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                v.log.hook_finished(v.serial);
                panic!("{PLANNED} hook panic of #{}", v.serial);
            }
        };
        v.log.hook_finished(v.serial);
        outcome
    })
}

/// `ResourceCache::insert` returns `()` today and may become fallible: both read as "accepted".
pub trait InsertOutcome {
    /// Whether the cache accepted the value.
    fn accepted(self) -> bool;
}

impl InsertOutcome for () {
    fn accepted(self) -> bool {
        true
    }
}

impl<E> InsertOutcome for Result<(), E> {
    fn accepted(self) -> bool {
        self.is_ok()
    }
}

thread_local! {
    /// Panics on this thread that the harness did not plan (each sequence runs on one thread).
    static UNPLANNED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Installs (once) a panic hook that silences planned panics and records the others.
pub fn install_panic_filter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_text(info.payload());
            if message.contains(PLANNED) {
                return;
            }
            let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            UNPLANNED.with(|u| u.borrow_mut().push(format!("{message}{at}")));
            previous(info);
        }));
    });
}

/// Takes the unplanned panics recorded on this thread so far.
pub fn take_unplanned_panics() -> Vec<String> {
    UNPLANNED.with(|u| std::mem::take(&mut *u.borrow_mut()))
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
