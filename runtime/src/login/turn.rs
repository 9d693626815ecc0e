//! One turn at a time at a session's login slot: `login` (replace the stored connection) and
//! `logged_in` (drop the connection it found closed, if it is still the stored one) take turns,
//! so a stale check never removes a login made a moment later in another tab.
//!
//! The cache has no "remove if it still holds this value" operation; until it has, these turns
//! make "look, compare, remove" one step. An entry exists only while someone holds or awaits
//! the turn, so the table stays as small as the logins in progress.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::session::SessionId;

type Key = (SessionId, TypeId, Arc<str>);

/// Each slot's lock and how many callers hold or await it.
type Table = HashMap<Key, (Arc<tokio::sync::Mutex<()>>, usize)>;

static TURNS: LazyLock<Mutex<Table>> = LazyLock::new(Default::default);

/// The turn at one login slot; the next caller's turn starts when this is dropped.
pub(super) struct Turn {
    // Declared first: released before the entry is given up.
    _guard: OwnedMutexGuard<()>,
    _entry: Entry,
}

/// A caller's claim on a table entry (holding or awaiting the turn); removes the entry when the
/// last claim goes, whether the turn was had or the wait was cancelled.
struct Entry(Key);

impl Drop for Entry {
    fn drop(&mut self) {
        let mut table = TURNS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, claims)) = table.get_mut(&self.0) {
            *claims -= 1;
            if *claims == 0 {
                table.remove(&self.0);
            }
        }
    }
}

/// Waits for the turn at provider `P`'s login slot `name` of session `session`.
pub(super) async fn turn<P: 'static>(session: SessionId, name: &str) -> Turn {
    let key: Key = (session, TypeId::of::<P>(), Arc::from(name));
    let lock = {
        let mut table = TURNS.lock().unwrap_or_else(|p| p.into_inner());
        let (lock, claims) = table.entry(key.clone()).or_insert_with(|| (Arc::default(), 0));
        *claims += 1;
        Arc::clone(lock)
    };
    let entry = Entry(key);
    Turn { _guard: lock.lock_owned().await, _entry: entry }
}

/// Whether a turn at this slot is held or awaited (for tests).
#[cfg(test)]
pub(super) fn in_use<P: 'static>(session: SessionId, name: &str) -> bool {
    TURNS.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&(
        session,
        TypeId::of::<P>(),
        Arc::from(name),
    ))
}
