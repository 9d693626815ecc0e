//! Login forms: the values a user submitted ([`FormValues`]), how one form value becomes a
//! settings field ([`FormValue`]), and what is wrong with a submission ([`FormError`]).
//!
//! `#[derive(Connection)]` describes a provider's fields in [`Connection::FORM`] and implements
//! [`Connection::from_form`], which builds the provider settings from a [`FormValues`] and names
//! every missing or malformed field at once.
//!
//! [`Connection::FORM`]: crate::Connection::FORM
//! [`Connection::from_form`]: crate::Connection::from_form

use std::collections::HashMap;
use std::fmt;

use crate::provider::FieldKind;
use crate::secrets::Secret;

/// What a login form submitted, plus the values the app fixes itself.
///
/// * Submitted values ([`submitted`](Self::submitted), [`set`](Self::set)) fill the fields shown
///   in the form. An empty value counts as not submitted (HTML forms send `""` for empty inputs).
/// * App values ([`fix`](Self::fix)) are the only source of fields marked
///   `#[connection(fixed)]` (a user cannot override them by submitting a field of that name), and
///   fill form fields the user left empty.
///
/// `Debug` shows field names only, never values; values are wiped from memory on drop.
///
/// ```
/// use connscope::FormValues;
///
/// let values = FormValues::submitted([("user", "ada"), ("password", "hunter2")]).fix("host", "db.internal");
/// assert_eq!(values.get("user"), Some("ada"));
/// assert_eq!(values.get_fixed("host"), Some("db.internal"));
/// assert!(!format!("{values:?}").contains("hunter2"));
/// ```
#[derive(Clone, Default)]
pub struct FormValues {
    submitted: HashMap<String, String>,
    app: HashMap<String, String>,
}

impl FormValues {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// The values a user submitted, as `(field name, text)` pairs.
    pub fn submitted<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        pairs.into_iter().collect()
    }

    /// Sets one submitted value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.submitted.insert(name.into(), value.into());
        self
    }

    /// Adds an app value: the value of a `fixed` field, or a fallback for a form field the user
    /// left empty.
    #[must_use]
    pub fn fix(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.app.insert(name.into(), value.into());
        self
    }

    /// The submitted value of `name`, if it is there and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.submitted.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The app value of `name`, if any.
    pub fn get_fixed(&self, name: &str) -> Option<&str> {
        self.app.get(name).map(String::as_str)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for FormValues {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let submitted = iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        FormValues { submitted, app: HashMap::new() }
    }
}

impl fmt::Debug for FormValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a submitted value may be a password.
        let mut submitted: Vec<&str> = self.submitted.keys().map(String::as_str).collect();
        let mut app: Vec<&str> = self.app.keys().map(String::as_str).collect();
        submitted.sort_unstable();
        app.sort_unstable();
        f.debug_struct("FormValues").field("submitted", &submitted).field("fixed", &app).finish()
    }
}

impl Drop for FormValues {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for value in self.submitted.values_mut().chain(self.app.values_mut()) {
            value.zeroize();
        }
    }
}

/// A settings field type that can be read from the text of a login-form input.
///
/// Implemented for `String`, [`Secret`] (a password input), `bool` (`true`/`false`, `on`/`off`,
/// `yes`/`no`, `1`/`0`), the integer and float types, `char`, `PathBuf`, IP and socket
/// addresses, and `Option<T>` (an optional field). Implement it for your own field types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read from a login-form value",
    label = "the type of a `#[derive(Connection)]` field",
    note = "implement `connscope::FormValue` for `{Self}` (`fn from_form_value(text: &str) -> Result<Self, String>`), \
            or use a field type that has it: `String`, `Secret`, `bool`, integers, floats, `Option<T>`"
)]
pub trait FormValue: Sized {
    /// The input kind: text, or password for [`Secret`].
    const KIND: FieldKind = FieldKind::Text;
    /// Whether the form must supply the field (false for `Option<T>`).
    const REQUIRED: bool = true;

    /// Parses the submitted text. The error says what is wrong, without repeating the value
    /// (it may be a secret).
    fn from_form_value(text: &str) -> Result<Self, String>;

    /// The value of a field nobody supplied, if that is allowed (`Some(None)` for `Option<T>`).
    fn absent() -> Option<Self> {
        None
    }
}

impl FormValue for String {
    fn from_form_value(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl FormValue for Secret {
    const KIND: FieldKind = FieldKind::Password;
    fn from_form_value(text: &str) -> Result<Self, String> {
        Ok(Secret::new(text))
    }
}

impl FormValue for bool {
    fn from_form_value(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        }
    }
}

impl<T: FormValue> FormValue for Option<T> {
    const KIND: FieldKind = T::KIND;
    const REQUIRED: bool = false;
    fn from_form_value(text: &str) -> Result<Self, String> {
        T::from_form_value(text).map(Some)
    }
    fn absent() -> Option<Self> {
        Some(None)
    }
}

macro_rules! form_value_from_str {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl FormValue for $ty {
            fn from_form_value(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| concat!("expected ", $what).to_owned())
            }
        }
    )*};
}

form_value_from_str! {
    u8 => "a whole number from 0 to 255",
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number from 0 to 4294967295",
    u64 => "a whole number, 0 or more",
    u128 => "a whole number, 0 or more",
    usize => "a whole number, 0 or more",
    i8 => "a whole number from -128 to 127",
    i16 => "a whole number from -32768 to 32767",
    i32 => "a whole number",
    i64 => "a whole number",
    i128 => "a whole number",
    isize => "a whole number",
    f32 => "a number",
    f64 => "a number",
    char => "a single character",
    std::net::IpAddr => "an IP address",
    std::net::Ipv4Addr => "an IPv4 address",
    std::net::Ipv6Addr => "an IPv6 address",
    std::net::SocketAddr => "an address like 127.0.0.1:5432",
}

impl FormValue for std::path::PathBuf {
    fn from_form_value(text: &str) -> Result<Self, String> {
        Ok(std::path::PathBuf::from(text))
    }
}

impl FormValue for std::time::Duration {
    fn from_form_value(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("expected a duration like 30s or 5m ({e})"))
    }
}

/// What is wrong with one field of a submitted form.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// The form did not supply a required field.
    Missing,
    /// A field fixed by the app (`#[connection(fixed)]`) was not supplied with
    /// [`FormValues::fix`].
    MissingFixed,
    /// The value could not be read; the text says why (never the value itself).
    Invalid(String),
}

/// One field of a submitted form that is missing or malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name (the form input's name).
    pub name: &'static str,
    /// The field's label, as shown in the form.
    pub label: &'static str,
    /// What is wrong.
    pub problem: FieldProblem,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, label) = (self.name, self.label);
        match &self.problem {
            FieldProblem::Missing => write!(f, "`{name}` ({label}) is required"),
            FieldProblem::MissingFixed => write!(
                f,
                "`{name}` is fixed by the app and was not supplied; add it with `FormValues::fix(\"{name}\", ...)`"
            ),
            FieldProblem::Invalid(why) => write!(f, "`{name}` ({label}) is not valid: {why}"),
        }
    }
}

/// Why a login form could not be turned into provider settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// Some fields are missing or malformed; all of them are listed.
    Fields {
        /// The provider type.
        provider: &'static str,
        /// Every field that is missing or malformed.
        fields: Vec<FieldError>,
    },
    /// The provider has no login form (its `Connection` impl was written by hand).
    NoForm {
        /// The provider type.
        provider: &'static str,
    },
}

impl FormError {
    /// The fields that are missing or malformed (empty for [`FormError::NoForm`]).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            FormError::Fields { fields, .. } => fields,
            FormError::NoForm { .. } => &[],
        }
    }
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::Fields { provider, fields } => {
                write!(f, "login form for `{provider}`: ")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{field}")?;
                }
                Ok(())
            }
            FormError::NoForm { provider } => write!(
                f,
                "`{provider}` has no login form: derive it with `#[derive(Connection)]` or implement \
                 `Connection::from_form`"
            ),
        }
    }
}

impl std::error::Error for FormError {}
