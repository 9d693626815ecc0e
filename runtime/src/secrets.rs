//! Configuration and secrets: `[connections.<name>]` tables in a TOML file, overridden by
//! `CONNSCOPE__<NAME>__<FIELD>` environment variables, overridden by settings given in code;
//! and [`Secret`], a settings field that is never printed.

mod quiet;
mod secret;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use toml::{Table, Value};
use zeroize::Zeroize;

pub use secret::Secret;

use crate::error::Error;
use crate::provider::{Connection, FieldKind};
use crate::watch::{self, Seen};

/// The prefix of environment overrides: `CONNSCOPE__WAREHOUSE__PASSWORD=...` sets field
/// `password` of `[connections.warehouse]`.
pub const ENV_PREFIX: &str = "CONNSCOPE__";

/// The variable naming the secrets file when the builder does not.
pub const SECRETS_FILE_VAR: &str = "CONNSCOPE_SECRETS";

#[derive(Default)]
pub(crate) struct ConfigBuilder {
    pub(crate) file: Option<PathBuf>,
    pub(crate) env: Option<Vec<(String, String)>>,
    pub(crate) code: HashMap<String, Table>,
}

/// The `[connections]` table of the secrets file. `Ok(None)`: the file does not exist. `Err`:
/// it exists but could not be read or parsed (the message quotes no value).
pub(crate) type FileConnections = Result<Option<Table>, String>;

/// Layered connection settings, resolved per connection name. The file's part is reloaded when
/// the file changes ([`Config::poll`], run by the runtime every `secrets_poll_interval`).
pub(crate) struct Config {
    file: PathBuf,
    /// The file's connections as last installed: at build, whatever the file held; afterwards
    /// only valid contents replace it (a file that becomes invalid keeps the last good one).
    connections: RwLock<Arc<FileConnections>>,
    /// What the last read saw of the file (valid or not): each change is acted on once.
    seen: Mutex<Option<Seen>>,
    env: HashMap<String, Vec<(String, String, String)>>,
    code: HashMap<String, Table>,
    /// The `[redis]` table and `REDIS_URL`.
    #[cfg(feature = "redis")]
    redis: (Result<Option<Table>, String>, Option<String>),
}

/// The `[redis]` table of the secrets file (read once, when the runtime is built).
type RedisTable = Result<Option<Table>, String>;

/// Reads the secrets file: what a poll sees of it, its `[connections]` and its `[redis]`.
fn read_file(file: &Path) -> (Option<Seen>, FileConnections, RedisTable) {
    match watch::poll(file) {
        None => (None, Ok(None), Ok(None)),
        Some((seen, Err(e))) => (seen, Err(format!("cannot read the file: {e}")), Ok(None)),
        Some((seen, Ok(bytes))) => {
            let (connections, redis) = parse_file(bytes);
            (seen, connections, redis)
        }
    }
}

fn parse_file(bytes: Vec<u8>) -> (FileConnections, RedisTable) {
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            e.into_bytes().zeroize();
            return (Err("the file is not UTF-8".to_owned()), Ok(None));
        }
    };
    let parsed = match text.parse::<Table>() {
        // Line, column and the parser's message: never toml's `Display`, which
        // quotes the broken line (and that line may hold a password).
        Err(e) => (Err(quiet::syntax_error(&text, &e)), Ok(None)),
        Ok(mut doc) => {
            let redis = match doc.remove("redis") {
                None => Ok(None),
                Some(Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err("`redis` must be a table: write `[redis]`".to_owned()),
            };
            let connections = match doc.remove("connections") {
                None => Ok(Some(Table::new())),
                Some(Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err("`connections` must be a table of `[connections.<name>]` tables".to_owned()),
            };
            (connections, redis)
        }
    };
    // The file's text holds every secret in it: wipe it once parsed.
    text.zeroize();
    parsed
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
        #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
        let (seen, connections, redis_table) = read_file(&file);
        let vars: Vec<(String, String)> = match self.env {
            Some(vars) => vars,
            None => std::env::vars().collect(),
        };
        #[cfg(feature = "redis")]
        let redis_url = vars.iter().find(|(k, _)| k == crate::redis::REDIS_URL_VAR).map(|(_, v)| v.clone());
        let mut env: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        for (key, value) in vars {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
            let Some((name, field)) = rest.split_once("__") else { continue };
            env.entry(name.to_lowercase()).or_default().push((field.to_lowercase(), value, key.clone()));
        }
        Config {
            file,
            connections: RwLock::new(Arc::new(connections)),
            seen: Mutex::new(seen),
            env,
            code: self.code,
            #[cfg(feature = "redis")]
            redis: (redis_table, redis_url),
        }
    }
}

impl Config {
    /// The shared tier's settings: `[redis]`, else `REDIS_URL`; `Ok(None)`: not configured.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self) -> Result<Option<crate::redis::RedisSettings>, String> {
        let (table, url) = &self.redis;
        let table = table.as_ref().map_err(|e| format!("{}: [redis]: {e}", self.file.display()))?;
        crate::redis::RedisSettings::resolve(table.as_ref(), url.as_deref())
            .map_err(|e| format!("{}: [redis]: {e}", self.file.display()))
    }

    /// The merged settings of connection `name`: file, then environment, then code.
    #[cfg(feature = "axum")]
    pub(crate) fn section(&self, name: &str) -> Result<Table, Error> {
        self.lookup(name)?.ok_or_else(|| self.missing(name))
    }

    /// The merged settings of connection `name`, or `None` when nothing configures it (no
    /// section in the file, no environment variable, nothing in code).
    pub(crate) fn lookup(&self, name: &str) -> Result<Option<Table>, Error> {
        self.lookup_in(&self.current(), name)
    }

    /// The file's connections as installed now.
    pub(crate) fn current(&self) -> Arc<FileConnections> {
        Arc::clone(&self.connections.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The secrets file's path.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// Reads the file again (blocking I/O) if it changed since the last read: `None` when it did
    /// not, else what it holds now (`Ok(None)`: it is gone). Nothing is installed.
    pub(crate) fn poll(&self) -> Option<FileConnections> {
        let (seen, connections, _) = read_file(&self.file);
        let mut last = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *last == seen {
            return None;
        }
        *last = seen;
        Some(connections)
    }

    /// Makes `connections` the file's part of every lookup from now on; returns the previous.
    pub(crate) fn install(&self, connections: FileConnections) -> Arc<FileConnections> {
        let mut slot = self.connections.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, Arc::new(connections))
    }

    /// [`lookup`](Self::lookup) with the file's part `connections`.
    pub(crate) fn lookup_in(
        &self,
        connections: &FileConnections,
        name: &str,
    ) -> Result<Option<Table>, Error> {
        let section = format!("connections.{name}");
        let err =
            |message: String| Error::Config { file: self.file.clone(), section: section.clone(), message };
        let from_file = match connections {
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
            return Ok(None);
        }
        let mut table = from_file.unwrap_or_default();
        for (field, raw, var) in env.into_iter().flatten() {
            let value = coerce(table.get(field), raw).map_err(|m| err(format!("{var}: {m}")))?;
            table.insert(field.clone(), value);
        }
        for (field, value) in code.into_iter().flatten() {
            table.insert(field.clone(), value.clone());
        }
        Ok(Some(table))
    }

    /// The error for a connection `name` that nothing configures: what to add, and the closest
    /// configured name if `name` looks like a typo of it.
    pub(crate) fn missing(&self, name: &str) -> Error {
        let hint = format!(
            "add a [connections.{name}] table, or set {ENV_PREFIX}{}__<FIELD> variables",
            name.to_uppercase()
        );
        let mut message = match &*self.current() {
            Ok(None) => format!("the file does not exist and nothing else configures `{name}`; {hint}"),
            _ => format!("no [connections.{name}] table; {hint}"),
        };
        if let Some(close) = crate::named::did_you_mean(name, &self.names()) {
            message = format!("{message}. Did you mean `{close}`?");
        }
        Error::Config { file: self.file.clone(), section: format!("connections.{name}"), message }
    }

    /// Every connection name something configures: file sections, environment, code.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &*self.current() {
            Ok(Some(all)) => all.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        };
        names.extend(self.env.keys().cloned());
        names.extend(self.code.keys().cloned());
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The empty settings of a connection nothing configures, and their fingerprint.
    pub(crate) fn empty_fingerprinted() -> (Table, u64) {
        let table = Table::new();
        let fingerprint = fingerprint(&table);
        (table, fingerprint)
    }

    /// The resolved section of `name` and its fingerprint (a connection's cache key part), or
    /// `None` when nothing configures `name`.
    pub(crate) fn fingerprinted(&self, name: &str) -> Result<Option<(Table, u64)>, Error> {
        self.fingerprinted_in(&self.current(), name)
    }

    /// [`fingerprinted`](Self::fingerprinted) with the file's part `connections`.
    pub(crate) fn fingerprinted_in(
        &self,
        connections: &FileConnections,
        name: &str,
    ) -> Result<Option<(Table, u64)>, Error> {
        Ok(self.lookup_in(connections, name)?.map(|table| {
            let fingerprint = fingerprint(&table);
            (table, fingerprint)
        }))
    }

    /// Deserializes the resolved section `table` of `name` into `P`; a missing or malformed
    /// field is an error naming the file, the section and the field. The reason is left out for
    /// a secret field (a password input of `P`'s login form), since serde's messages quote the
    /// value; a [`Secret`] never quotes it in the first place.
    pub(crate) fn settings<P: Connection + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        table: Table,
    ) -> Result<P, Error> {
        let secret_fields: Vec<&str> =
            P::FORM.iter().filter(|f| f.kind == FieldKind::Password).map(|f| f.name).collect();
        let secrets: Table =
            secret_fields.iter().filter_map(|&f| table.get(f).map(|v| (f.to_owned(), v.clone()))).collect();
        Value::Table(table).try_into::<P>().map_err(|e| {
            let field = quiet::field_of(&e);
            let why = quiet::settings_error(e.message().trim(), field.as_deref(), &secret_fields, &secrets);
            Error::Config {
                file: self.file.clone(),
                section: format!("connections.{name}"),
                message: format!("{why} (settings of `{}`)", std::any::type_name::<P>()),
            }
        })
    }
}

/// An environment value takes the type of the value it overrides; otherwise it is a string.
/// The error names the expected type, never the value (the variable may hold a password).
fn coerce(existing: Option<&Value>, raw: &str) -> Result<Value, String> {
    let fail = |what: &str| format!("expected {what} (the value is not shown)");
    Ok(match existing {
        Some(Value::Integer(_)) => Value::Integer(raw.trim().parse().map_err(|_| fail("an integer"))?),
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().map_err(|_| fail("a number"))?),
        Some(Value::Boolean(_)) => Value::Boolean(raw.trim().parse().map_err(|_| fail("true or false"))?),
        _ => Value::String(raw.to_owned()),
    })
}

/// The key of this process's digests of settings: drawn at random once (std's `RandomState`,
/// SipHash keyed from the operating system's randomness).
static PROCESS_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A digest of `value` keyed per process: stable within the process, and useless outside it.
/// Digests of settings that hold secrets use it, so that a digest that shows somewhere (a
/// connection's [`ConnId`](crate::ConnId)) is no offline oracle for guessing a password.
pub(crate) fn keyed_digest(value: impl Hash) -> u64 {
    PROCESS_KEY.hash_one(value)
}

/// A digest of resolved settings, part of a connection's cache key and identity (so two
/// connections with different settings never share a client). Keyed per process
/// ([`keyed_digest`]); computed from the values themselves, without rendering the table (and
/// its secrets) to text first.
fn fingerprint(table: &Table) -> u64 {
    let mut h = PROCESS_KEY.build_hasher();
    hash_table(table, &mut h);
    h.finish()
}

fn hash_table(table: &Table, h: &mut impl Hasher) {
    // Sorted by key: the digest does not depend on the order the layers inserted them in.
    let mut entries: Vec<(&String, &Value)> = table.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries.len().hash(h);
    for (key, value) in entries {
        key.hash(h);
        hash_value(value, h);
    }
}

fn hash_value(value: &Value, h: &mut impl Hasher) {
    std::mem::discriminant(value).hash(h);
    match value {
        Value::String(s) => s.hash(h),
        Value::Integer(i) => i.hash(h),
        Value::Float(f) => f.to_bits().hash(h),
        Value::Boolean(b) => b.hash(h),
        Value::Datetime(d) => d.to_string().hash(h),
        Value::Array(items) => {
            items.len().hash(h);
            for item in items {
                hash_value(item, h);
            }
        }
        Value::Table(t) => hash_table(t, h),
    }
}
