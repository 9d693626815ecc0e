//! The slots of one store by key: a short vector while the store holds few keys (a session's
//! cache usually holds one: 40 bytes for a `u64 -> u64` slot, where a hash table's smallest
//! allocation is four buckets and their control bytes, 184 bytes), a hash table past [`FEW`].

use std::collections::HashMap;
use std::hash::Hash;

use super::state::{KeyHasher, Slot};

/// How many keys a store keeps in a vector (looked up by comparing keys, no hashing) before it
/// moves them to a hash table.
const FEW: usize = 8;

pub(super) enum Slots<K, V> {
    Few(Vec<(K, Slot<V>)>),
    Many(HashMap<K, Slot<V>, KeyHasher>),
}

impl<K: Hash + Eq, V> Default for Slots<K, V> {
    fn default() -> Self {
        Slots::Few(Vec::new())
    }
}

impl<K: Hash + Eq, V> Slots<K, V> {
    pub(super) fn get(&self, key: &K) -> Option<&Slot<V>> {
        match self {
            Slots::Few(few) => few.iter().find(|(k, _)| k == key).map(|(_, s)| s),
            Slots::Many(many) => many.get(key),
        }
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut Slot<V>> {
        match self {
            Slots::Few(few) => few.iter_mut().find(|(k, _)| k == key).map(|(_, s)| s),
            Slots::Many(many) => many.get_mut(key),
        }
    }

    /// Puts `slot` under `key`; returns the slot it replaced.
    pub(super) fn insert(&mut self, key: K, slot: Slot<V>) -> Option<Slot<V>> {
        let few = match self {
            Slots::Many(many) => return many.insert(key, slot),
            Slots::Few(few) => few,
        };
        if let Some((_, old)) = few.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(old, slot));
        }
        if few.len() < FEW {
            // The first slot gets room for exactly one; the vector doubles from there.
            if few.capacity() == 0 {
                few.reserve_exact(1);
            }
            few.push((key, slot));
            return None;
        }
        let mut many = HashMap::with_capacity_and_hasher(2 * FEW, KeyHasher::default());
        many.extend(few.drain(..));
        many.insert(key, slot);
        *self = Slots::Many(many);
        None
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<Slot<V>> {
        match self {
            Slots::Few(few) => {
                let i = few.iter().position(|(k, _)| k == key)?;
                Some(few.swap_remove(i).1)
            }
            Slots::Many(many) => many.remove(key),
        }
    }

    /// Takes every slot out, and frees the memory they took.
    pub(super) fn take(&mut self) -> Vec<Slot<V>> {
        match std::mem::take(self) {
            Slots::Few(few) => few.into_iter().map(|(_, s)| s).collect(),
            Slots::Many(many) => many.into_values().collect(),
        }
    }

    /// How many slots `pred` accepts.
    pub(super) fn count(&self, pred: impl Fn(&Slot<V>) -> bool) -> usize {
        match self {
            Slots::Few(few) => few.iter().filter(|(_, s)| pred(s)).count(),
            Slots::Many(many) => many.values().filter(|s| pred(s)).count(),
        }
    }
}
