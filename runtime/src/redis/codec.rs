//! How shared values and keys become bytes (postcard: compact, serde, a stable documented wire
//! format), and the layout of the Redis keys: `{prefix}:{resource}:{version}:v:{key}` for a
//! value, `...:l:{key}` for the lock of its load, `{prefix}:bus` for the broadcast channel.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of every stored value: a value written by a later, incompatible encoding of
/// connscope is a miss, not garbage.
const FORMAT: u8 = 1;

/// How a shared resource's keys and values are encoded, and its version: values written by
/// another version are never read (they live under other keys). Built by
/// [`SharedSpec::new`], which asks for serde on both; `#[cached_resource(shared = true)]` builds
/// it with a version derived from the function's tokens.
///
/// ```
/// use connscope::{Resource, Scope, SharedSpec};
/// use std::time::Duration;
///
/// static PRICES: Resource<String, Vec<u32>> =
///     Resource::new("prices", Scope::Global, Some(Duration::from_secs(60)), None, None)
///         .shared(SharedSpec::new("v2"));
/// ```
pub struct SharedSpec<K, V> {
    pub(crate) version: &'static str,
    pub(crate) encode_key: fn(&K) -> Option<Vec<u8>>,
    pub(crate) decode_key: fn(&[u8]) -> Option<K>,
    pub(crate) encode: fn(&V) -> Option<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> Option<V>,
}

impl<K, V> Clone for SharedSpec<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for SharedSpec<K, V> {}

impl<K, V> SharedSpec<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A spec whose values are readable only by the same `version` (change it when the value's
    /// meaning or layout changes).
    pub const fn new(version: &'static str) -> Self {
        SharedSpec {
            version,
            encode_key: encode_plain::<K>,
            decode_key: decode_plain::<K>,
            encode: encode_plain::<V>,
            decode: decode_plain::<V>,
        }
    }
}

impl<K, V> SharedSpec<K, V> {
    /// Built from generated functions (`#[cached_resource(shared = true)]`).
    #[doc(hidden)]
    pub const fn from_fns(fns: crate::macro_support::SharedFns<K, V>) -> Self {
        SharedSpec {
            version: fns.version,
            encode_key: fns.encode_key,
            decode_key: fns.decode_key,
            encode: fns.encode,
            decode: fns.decode,
        }
    }

    pub(crate) fn encode_key_of(&self, key: &K) -> Option<Vec<u8>> {
        (self.encode_key)(key)
    }

    pub(crate) fn decode_key_of(&self, bytes: &[u8]) -> Option<K> {
        (self.decode_key)(bytes)
    }
}

fn encode_plain<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    postcard::to_stdvec(value).ok()
}

fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// A stored value: the format byte, then the encoded value.
pub(crate) fn frame(encoded: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() + 1);
    out.push(FORMAT);
    out.extend(encoded);
    out
}

/// The encoded value inside a stored one; `None` for another format.
pub(crate) fn unframe(stored: &[u8]) -> Option<&[u8]> {
    match stored.split_first() {
        Some((&FORMAT, rest)) => Some(rest),
        _ => None,
    }
}

/// The Redis keys of one resource version.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    /// `{prefix}:{resource}:{version}:`
    base: Vec<u8>,
}

impl Keys {
    pub(crate) fn new(prefix: &str, resource: &str) -> Self {
        Keys { base: format!("{prefix}:{resource}:").into_bytes() }
    }

    fn with(&self, kind: &[u8], key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.base.len() + kind.len() + key.len());
        k.extend_from_slice(&self.base);
        k.extend_from_slice(kind);
        k.extend_from_slice(key);
        k
    }

    pub(crate) fn value(&self, key: &[u8]) -> Vec<u8> {
        self.with(b"v:", key)
    }

    pub(crate) fn lock(&self, key: &[u8]) -> Vec<u8> {
        self.with(b"l:", key)
    }

    /// A generation counter (the SQL query cache's: `g:t{tag}`, `g:c{connection}`), part of the
    /// key of every value read at it.
    pub(crate) fn generation(&self, key: &[u8]) -> Vec<u8> {
        self.with(b"g:", key)
    }

    /// A `SCAN MATCH` pattern for every key of this resource version (glob characters escaped).
    pub(crate) fn pattern(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.base.len() + 2);
        for &b in &self.base {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(b);
        }
        p.push(b'*');
        p
    }
}

/// The resource's name on the wire: `{name}:{version}`.
pub(crate) fn resource_id(name: &str, version: &str) -> String {
    format!("{name}:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_bytes_are_a_miss() {
        let spec = SharedSpec::<(String, u32), Vec<i64>>::new("1");
        let k = (spec.encode_key)(&("a".to_owned(), 7)).unwrap();
        assert_eq!((spec.decode_key)(&k), Some(("a".to_owned(), 7)));
        let v = frame((spec.encode)(&vec![1, -2, 3]).unwrap());
        assert_eq!(unframe(&v).and_then(spec.decode), Some(vec![1, -2, 3]));
        assert_eq!(unframe(b"\x02garbage"), None);
        assert_eq!(unframe(b""), None);
    }

    #[test]
    fn two_versions_never_share_a_key_and_globs_are_escaped() {
        let a = Keys::new("app", &resource_id("m::f", "1"));
        let b = Keys::new("app", &resource_id("m::f", "2"));
        assert_ne!(a.value(b"k"), b.value(b"k"));
        assert_ne!(a.value(b"k"), a.lock(b"k"));
        assert_eq!(Keys::new("a*", "r").pattern(), b"a\\*:r:*".to_vec());
    }
}
