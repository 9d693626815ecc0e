//! [`Secret`]: a settings value that is never printed and is wiped from memory when dropped.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Unexpected, Visitor};
use zeroize::Zeroize;

/// A secret settings value (a password, a token). Never appears in `Debug`, logs or errors, is
/// not serializable, and is wiped from memory when dropped.
///
/// ```
/// let s = connscope::Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(\"***\")");
/// assert_eq!(s.expose(), "hunter2");
/// ```
///
/// Read from configuration, a value of another type than a string (`password = 918273645`) is
/// rejected without the value being quoted in the error.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value. The `String` it is given is wiped too (its whole capacity), so no
    /// copy of the value is left behind in freed memory.
    pub fn new(value: impl Into<String>) -> Self {
        let mut value: String = value.into();
        // An exact-size copy: turning a `String` with spare capacity into a boxed `str` would
        // reallocate and free the old buffer unwiped.
        let secret = SecretString::from(Box::<str>::from(value.as_str()));
        value.zeroize();
        Secret(secret)
    }

    /// The secret value, for the one place that needs it (a connect call).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Wipes the value: the old bytes are zeroized and the secret becomes empty.
    pub fn forget(&mut self) {
        self.0 = SecretString::from(Box::<str>::from(""));
    }

    /// Whether the value is empty (never set, or forgotten).
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// Hashes a digest of the value keyed per process, never the value itself: settings holding a
/// `Secret` can `#[derive(Hash)]` (what [`Runtime::connect`](crate::Runtime::connect) keys a
/// connection by), and no hash that shows somewhere lets anyone test guesses of the secret.
///
/// ```
/// use std::hash::{BuildHasher, RandomState};
/// let s = RandomState::new();
/// assert_eq!(s.hash_one(connscope::Secret::new("a")), s.hash_one(connscope::Secret::new("a")));
/// assert_ne!(s.hash_one(connscope::Secret::new("a")), s.hash_one(connscope::Secret::new("b")));
/// ```
impl std::hash::Hash for Secret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        super::keyed_digest(self.expose()).hash(state);
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(SecretVisitor)
    }
}

/// Reads a string; any other value is refused by its kind only. serde's default messages quote
/// the value (``invalid type: integer `918273645` ``), which here may be the password.
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: de::Error>(&self, kind: &'static str) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other(kind), self))
    }
}

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string (the value is not shown: it is a secret)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        self.refuse("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        self.refuse("an integer")
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
        self.refuse("an integer")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        self.refuse("an integer")
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
        self.refuse("an integer")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        self.refuse("a number")
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        self.refuse("bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn a_value_of_another_type_is_refused_without_being_quoted() {
        for text in
            ["password = 918273645", "password = 9182736.45", "password = true", "password = [918273645]"]
        {
            let table: toml::Table = text.parse().unwrap();
            let value = table["password"].clone();
            let err = value.try_into::<Secret>().err().unwrap();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("918273645") && !shown.contains("9182736"), "{shown}");
            assert!(shown.contains("expected a string"), "{shown}");
        }
        let ok: Secret = toml::Value::from("hunter2").try_into().unwrap();
        assert_eq!(ok.expose(), "hunter2");
    }
}
