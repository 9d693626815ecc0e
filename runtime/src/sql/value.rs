//! Bind values: [`SqlValue`], the owned, hashable form of a query parameter that is both bound
//! to the statement and part of the query's cache key.

use std::hash::{Hash, Hasher};

/// One bind parameter of a query. Owned and hashable, because the binds are part of the cache
/// key of a cached query. Build it with `From`: `7`, `"emea"`, `Some(1.5)`, `None::<i64>`,
/// `vec![0u8; 4]`…
///
/// Nulls keep their type (`None::<i64>` binds an integer NULL), which PostgreSQL needs to pick
/// operators.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SqlValue {
    /// A boolean.
    Bool(Option<bool>),
    /// A 16-bit integer.
    I16(Option<i16>),
    /// A 32-bit integer.
    I32(Option<i32>),
    /// A 64-bit integer.
    I64(Option<i64>),
    /// A 32-bit float.
    F32(Option<f32>),
    /// A 64-bit float.
    F64(Option<f64>),
    /// Text.
    Text(Option<String>),
    /// Bytes.
    Bytes(Option<Vec<u8>>),
}

// Floats compare by bits: the same bits are the same cache entry (NaN included, and 0.0 is not
// -0.0), which keeps `Eq` and `Hash` consistent.
impl PartialEq for SqlValue {
    fn eq(&self, other: &Self) -> bool {
        use SqlValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (F32(a), F32(b)) => a.map(f32::to_bits) == b.map(f32::to_bits),
            (F64(a), F64(b)) => a.map(f64::to_bits) == b.map(f64::to_bits),
            (Text(a), Text(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SqlValue {}

impl Hash for SqlValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            SqlValue::Bool(v) => v.hash(state),
            SqlValue::I16(v) => v.hash(state),
            SqlValue::I32(v) => v.hash(state),
            SqlValue::I64(v) => v.hash(state),
            SqlValue::F32(v) => v.map(f32::to_bits).hash(state),
            SqlValue::F64(v) => v.map(f64::to_bits).hash(state),
            SqlValue::Text(v) => v.hash(state),
            SqlValue::Bytes(v) => v.hash(state),
        }
    }
}

macro_rules! from_value {
    ($($t:ty => $variant:ident $(via $conv:expr)?),* $(,)?) => {$(
        impl From<$t> for SqlValue {
            fn from(v: $t) -> Self {
                SqlValue::$variant(Some(from_value!(@conv v $(, $conv)?)))
            }
        }
        impl From<Option<$t>> for SqlValue {
            fn from(v: Option<$t>) -> Self {
                SqlValue::$variant(v.map(|v| from_value!(@conv v $(, $conv)?)))
            }
        }
    )*};
    (@conv $v:ident) => { $v };
    (@conv $v:ident, $conv:expr) => { ($conv)($v) };
}

from_value! {
    bool => Bool,
    i16 => I16,
    i32 => I32,
    i64 => I64,
    f32 => F32,
    f64 => F64,
    String => Text,
    &str => Text via str::to_owned,
    &String => Text via String::clone,
    Vec<u8> => Bytes,
    &[u8] => Bytes via <[u8]>::to_vec,
}

#[cfg(test)]
mod tests {
    use super::SqlValue;

    #[test]
    fn nulls_keep_their_type_and_floats_hash_by_bits() {
        assert_eq!(SqlValue::from(None::<i64>), SqlValue::I64(None));
        assert_ne!(SqlValue::from(None::<i64>), SqlValue::from(None::<String>));
        assert_eq!(SqlValue::from("a"), SqlValue::Text(Some("a".into())));
        let h = |v: &SqlValue| {
            use std::hash::{BuildHasher, RandomState};
            static S: std::sync::LazyLock<RandomState> = std::sync::LazyLock::new(RandomState::new);
            S.hash_one(v)
        };
        assert_eq!(h(&SqlValue::from(1.5f64)), h(&SqlValue::from(1.5f64)));
        assert_ne!(h(&SqlValue::from(1i64)), h(&SqlValue::from(1i32)));
    }
}
