//! Configuration and secrets: `[connections.<name>]` tables in a TOML file, overridden by
//! `CONNSCOPE__<NAME>__<FIELD>` environment variables, overridden by settings given in code;
//! and [`Secret`], a settings field that is never printed.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use toml::{Table, Value};

use crate::error::Error;

/// The prefix of environment overrides: `CONNSCOPE__WAREHOUSE__PASSWORD=...` sets field
/// `password` of `[connections.warehouse]`.
pub const ENV_PREFIX: &str = "CONNSCOPE__";

/// The variable naming the secrets file when the builder does not.
pub const SECRETS_FILE_VAR: &str = "CONNSCOPE_SECRETS";

/// A secret settings value (a password, a token). Never appears in `Debug`, logs or errors, is
/// not serializable, and is wiped from memory when dropped.
///
/// ```
/// let s = connscope::Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(\"***\")");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret value, for the one place that needs it (a connect call).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Wipes the value: the old bytes are zeroized and the secret becomes empty.
    pub fn forget(&mut self) {
        self.0 = SecretString::from(String::new());
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
        String::deserialize(d).map(Secret::new)
    }
}

#[derive(Default)]
pub(crate) struct ConfigBuilder {
    pub(crate) file: Option<PathBuf>,
    pub(crate) env: Option<Vec<(String, String)>>,
    pub(crate) code: HashMap<String, Table>,
}

/// Layered connection settings, resolved per connection name.
pub(crate) struct Config {
    file: PathBuf,
    /// `Ok(None)`: the file does not exist. `Err`: it exists but could not be read or parsed.
    connections: Result<Option<Table>, String>,
    env: HashMap<String, Vec<(String, String, String)>>,
    code: HashMap<String, Table>,
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder").field("file", &self.file).finish_non_exhaustive()
    }
}

impl ConfigBuilder {
    pub(crate) fn build(self) -> Config {
        let file = self
            .file
            .or_else(|| std::env::var_os(SECRETS_FILE_VAR).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("secrets.toml"));
        let connections = match std::fs::read_to_string(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read the file: {e}")),
            Ok(text) => match text.parse::<Table>() {
                Err(e) => Err(format!("not valid TOML: {e}")),
                Ok(mut doc) => match doc.remove("connections") {
                    None => Ok(Some(Table::new())),
                    Some(Value::Table(t)) => Ok(Some(t)),
                    Some(_) => {
                        Err("`connections` must be a table of `[connections.<name>]` tables".to_owned())
                    }
                },
            },
        };
        let vars: Vec<(String, String)> = match self.env {
            Some(vars) => vars,
            None => std::env::vars().collect(),
        };
        let mut env: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        for (key, value) in vars {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
            let Some((name, field)) = rest.split_once("__") else { continue };
            env.entry(name.to_lowercase()).or_default().push((field.to_lowercase(), value, key.clone()));
        }
        Config { file, connections, env, code: self.code }
    }
}

impl Config {
    /// The merged settings of connection `name`: file, then environment, then code.
    pub(crate) fn section(&self, name: &str) -> Result<Table, Error> {
        let section = format!("connections.{name}");
        let err =
            |message: String| Error::Config { file: self.file.clone(), section: section.clone(), message };
        let from_file = match &self.connections {
            Err(e) => return Err(err(e.clone())),
            Ok(None) => None,
            Ok(Some(all)) => match all.get(name) {
                None => None,
                Some(Value::Table(t)) => Some(t.clone()),
                Some(_) => {
                    return Err(err(format!("`{name}` must be a table: write `[connections.{name}]`")));
                }
            },
        };
        let env = self.env.get(&name.to_lowercase());
        let code = self.code.get(name);
        if from_file.is_none() && env.is_none() && code.is_none() {
            let hint = format!(
                "add a [connections.{name}] table, or set {ENV_PREFIX}{}__<FIELD> variables",
                name.to_uppercase()
            );
            return Err(err(match &self.connections {
                Ok(None) => format!("the file does not exist and nothing else configures `{name}`; {hint}"),
                _ => format!("no [connections.{name}] table; {hint}"),
            }));
        }
        let mut table = from_file.unwrap_or_default();
        for (field, raw, var) in env.into_iter().flatten() {
            let value = coerce(table.get(field), raw).map_err(|m| err(format!("{var}: {m}")))?;
            table.insert(field.clone(), value);
        }
        for (field, value) in code.into_iter().flatten() {
            table.insert(field.clone(), value.clone());
        }
        Ok(table)
    }

    /// The resolved section of `name` and its fingerprint (a connection's cache key part).
    pub(crate) fn fingerprinted(&self, name: &str) -> Result<(Table, u64), Error> {
        let table = self.section(name)?;
        let fingerprint = fingerprint(&table);
        Ok((table, fingerprint))
    }

    /// Deserializes the resolved section `table` of `name` into `P`; a missing or malformed
    /// field is an error naming the file, the section and the field.
    pub(crate) fn settings<P: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        table: Table,
    ) -> Result<P, Error> {
        Value::Table(table).try_into::<P>().map_err(|e| Error::Config {
            file: self.file.clone(),
            section: format!("connections.{name}"),
            message: format!("{} (settings of `{}`)", e.message().trim(), std::any::type_name::<P>()),
        })
    }
}

/// An environment value takes the type of the value it overrides; otherwise it is a string.
fn coerce(existing: Option<&Value>, raw: &str) -> Result<Value, String> {
    Ok(match existing {
        Some(Value::Integer(_)) => {
            Value::Integer(raw.trim().parse().map_err(|_| format!("expected an integer, got `{raw}`"))?)
        }
        Some(Value::Float(_)) => {
            Value::Float(raw.trim().parse().map_err(|_| format!("expected a number, got `{raw}`"))?)
        }
        Some(Value::Boolean(_)) => {
            Value::Boolean(raw.trim().parse().map_err(|_| format!("expected true or false, got `{raw}`"))?)
        }
        _ => Value::String(raw.to_owned()),
    })
}

/// A stable digest of resolved settings, part of a connection's cache key (so two connections
/// with different settings never share a client). Secrets go into the digest, never into text.
fn fingerprint(table: &Table) -> u64 {
    let mut h = DefaultHasher::new();
    table.to_string().hash(&mut h);
    h.finish()
}
