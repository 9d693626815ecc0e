//! Procedural macros of connscope: `#[derive(Connection)]` and `#[cached_resource]`.
//!
//! Use them through the `connscope` crate; generated code names only `::connscope::__private`
//! (or the path given with `crate = "..."`).
//!
//! Each macro is a pipeline: parse (darling, collecting every error) -> validate (checks that
//! span several attributes or the function signature) -> expand (`quote!`, no user-input checks
//! left). A macro never panics on user input; on error it still emits the user's item.

mod attr;
mod cached_resource;
mod connection;
mod paths;

use proc_macro::TokenStream;

/// Implements `connscope::Connection` for a provider's settings struct: its scope, name, caching
/// policy, health-check policy and login form. The struct also implements `Provider` (by hand:
/// `connect` and `is_open`).
///
/// ```ignore
/// #[derive(Connection, serde::Deserialize)]
/// #[connection(scope = "session", ttl = "30m", max_entries = 100)]
/// pub struct Warehouse {
///     pub url: String,
///     #[connection(default = "5432")]
///     pub port: u16,
///     pub user: String,
///     #[connection(secret)]
///     pub password: connscope::Secret,
///     #[connection(fixed)]
///     pub database: String,
/// }
/// ```
///
/// On the struct, `#[connection(...)]` takes (all optional):
///
/// | key | value | default |
/// |---|---|---|
/// | `scope` | `"global"` (one connection shared by every user) or `"session"` (one per user session) | `"global"` |
/// | `ttl` | how long a connection lives, e.g. `"30m"`, `"1h 30m"` | forever |
/// | `max_entries` | how many connections of this type a scope keeps (least recently used goes) | unbounded |
/// | `name` | the `[connections.<name>]` section | the struct's name in snake_case |
/// | `health_check` | when `is_open` runs: `"every_use"`, `"on_error"` or an interval like `"5s"` | every 5 s |
/// | `refresh` | rebuild each live client this long after it connected, e.g. `"14m"` (the replacement connects first, in-flight users finish on the old client, which is then closed once) | never (only ahead of its credentials' expiry) |
/// | `crate` | path to the `connscope` crate, if renamed | `"::connscope"` |
///
/// On a field:
///
/// | key | meaning |
/// |---|---|
/// | `secret` | a password input in the login form, wiped once a login connection is open (a field of type `Secret` or `Option<Secret>` is secret without it) |
/// | `default = <literal>` | shown in the form, and used when the field is left empty |
/// | `label = "..."` | the form label (default: from the field's identifier, `db_host` -> `Db host`) |
/// | `fixed` | set by the app, not shown in the login form |
/// | `skip` | runtime state, not a setting: never read from config or the form, `Default::default()` or serde's `default = "path"` (a `#[serde(skip)]` field is skipped without it) |
///
/// A field is read the way serde reads it from configuration: the derive honours the field's
/// `#[serde(rename = "...")]` (the name in the form and in config), `#[serde(default)]` /
/// `#[serde(default = "path")]` (the value when none is given), `#[serde(with = "module")]` /
/// `#[serde(deserialize_with = "path")]` (how the value is read: a fixed field's config value,
/// or a form field's submitted text, which is then shown as a text input) and
/// `#[serde(skip)]` / `#[serde(skip_deserializing)]`, and the struct's `#[serde(rename_all =
/// "...")]` and `#[serde(default)]`. A `#[serde(flatten)]` field is a compile error (list its
/// settings as fields). Generic structs work; each field's type gets the bound its reading needs.
///
/// The login form is `Connection::FORM`. `Connection::from_form` builds the settings from a
/// `FormValues` and names every missing or malformed field at once: a form field is parsed
/// from the submitted text with `connscope::FormValue` (`String`, `Secret`, `bool`, numbers,
/// `Option<T>`, ...); a `fixed` field is deserialized from the app's value
/// (`FormValues::fix("host", "db.internal")` or `fix_all(table)`), else from its `default`, so
/// it can be of any `Deserialize` type (a list, a nested table). `Connection::forget_secrets`
/// wipes the secret fields. `#[connection(default)]` applies to forms and fixed values only:
/// for `[connections.<name>]` configuration, use serde's own `#[serde(default)]` (which the
/// form honours too).
///
/// Only structs with named fields can derive `Connection`; anything else is a compile error.
/// On a mistake in the attributes, every mistake is reported at once, each at its token.
#[proc_macro_derive(Connection, attributes(connection))]
pub fn derive_connection(input: TokenStream) -> TokenStream {
    connection::expand_derive_connection(input.into()).into()
}

/// Caches an `async fn`: its arguments are the key, its value is kept per scope.
///
/// ```ignore
/// #[cached_resource(scope = "session", ttl = "5m", max_entries = 100)]
/// async fn top_customers(#[not_key] conn: &Conn<Warehouse>, region: &str) -> Result<Arc<Vec<Customer>>, AppError> {
///     /* runs once per (session, region) until it expires */
/// }
///
/// top_customers(&conn, "emea").await?;
/// top_customers::invalidate("emea").await;   // drop one key (its release hook runs)
/// let report = top_customers::clear().await; // drop every key of the current scope
/// let stats = top_customers::stats();        // hits, misses, loads, evictions...
/// ```
///
/// `#[cached_resource(...)]` takes (all optional):
///
/// | key | value | default |
/// |---|---|---|
/// | `scope` | `"global"` (one cache shared by every user) or `"session"` (one cache per user session) | `"global"` |
/// | `ttl` | how long a value lives, e.g. `"30s"`, `"5m"`, `"1h 30m"` | forever |
/// | `max_entries` | how many values a scope keeps (least recently used goes) | unbounded |
/// | `on_release = path` | a function run exactly once on each value that leaves the cache | none |
/// | `crate` | path to the `connscope` crate, if renamed | `"::connscope"` |
///
/// **The key.** Every argument is part of the key, except those marked `#[not_key]` and those
/// whose name starts with `_` (like `_conn`). Prefer `#[not_key]`: renaming `conn` to `_conn` to
/// silence an unused-variable warning would silently change what is cached. A key argument must
/// be `Hash + Eq + Clone + Send + Sync + 'static`; one taken by reference (`&str`, `&T`) is keyed
/// by an owned copy (`String`, `T`). A `Conn<P>` or `&Conn<P>` argument is keyed by the
/// connection's identity (`Conn::id()`), so two connections (say `"emea"` and `"apac"`) never
/// share a result; mark it `#[not_key]` when every connection may share one.
///
/// ```ignore
/// #[cached_resource(ttl = "5m")]
/// async fn totals(#[not_key] conn: &Conn<Warehouse>, region: String) -> Result<Totals, sqlx::Error> {
///     /* keyed by `region` only */
/// }
/// ```
///
/// **The value.** The function returns `T` or `Result<T, E>` (recognized by the name
/// `Result`), with `T: Clone + Send + Sync + 'static` (wrap big values in `Arc`). Only `Ok` is
/// cached; concurrent callers of a missing key run the body once (single flight).
///
/// **The error.** A `scope = "global"` function may return any error type (`sqlx::Error`,
/// `String`, ...): a caller that waited for a load that failed runs the body itself (one caller
/// at a time per key), so every caller gets its own error; after `Runtime::shutdown` the body
/// runs uncached. A `scope = "session"` function must return `Result<T, E>` with
/// `E: From<connscope::Error> + Display`: connscope reports "no active session", "session
/// ended" and a concurrent caller's failed load (`Error::SharedLoadFailed`) through it.
///
/// **Scope containment.** A `scope = "global"` function cannot take a `Conn<P>` of a
/// session-scoped provider `P` (even `#[not_key]`): that would share one user's data with every
/// user. It is a compile error.
///
/// **Release hooks.** `on_release = path` names a `fn(&T)`, a `fn(T)` or an `async fn(T)` (any
/// `Fn(T) -> impl Future + Send + 'static`), each returning `()` or `Result<(), E>` with
/// `E: Display` (an `Err` is counted in `release_failures` and listed in the `ReleaseReport`).
/// It runs exactly once per value, in a task of its own: on ttl expiry, `max_entries`
/// eviction, `invalidate`, `clear`, session end and runtime shutdown.
///
/// **Controls.** Next to `fn name`, the macro emits `mod name` (modules live in the type
/// namespace, so both coexist) with the function's visibility:
/// * `name::invalidate(<key arguments>) -> bool` (async): removes one key of the current scope;
/// * `name::clear() -> ReleaseReport` (async): removes every key of the current scope;
/// * `name::stats() -> StatsSnapshot`: statistics of the current scope's cache;
/// * `name::resource() -> &'static Resource<K, V>`: the underlying resource (e.g. `stats_in`).
///
/// **Limits.** Free functions only: methods (`self`), functions in `impl` blocks, generic
/// functions and `impl Trait` arguments are rejected with an error saying what to do. Argument
/// and return types must be nameable from the enclosing module (`mod name` reaches them with
/// `use super::*`), so not types declared inside a function body. Only `async fn` are
/// supported: callers of a missing key wait for the one running load, and release hooks are
/// async.
#[proc_macro_attribute]
pub fn cached_resource(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_resource::expand_cached_resource(args.into(), item.into()).into()
}
