//! Connections by name: `Runtime::connection::<P>("warehouse")` resolves `[connections.warehouse]`
//! and hands out the cached `Conn<P>` of the right scope, keyed by (type, name, settings); and
//! connections from settings given at run time (`Runtime::connect`, `Runtime::connection_with`),
//! keyed by a digest of the settings themselves.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cache::{BoxFuture, CacheConfig, ReleaseHook, ResourceCache};
use crate::conn::{Conn, ConnId, Home};
use crate::error::Error;
use crate::provider::Connection;
use crate::resource::next_resource_id;
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::secrets::{Config, keyed_digest};
use crate::session::Session;

/// A connection's key in its provider type's cache.
#[derive(Clone, PartialEq, Eq, Hash)]
enum ConnKey {
    /// `[connections.<name>]`: the name and the fingerprint of the resolved section.
    Named(Arc<str>, u64),
    /// Settings given at run time: the connection's name and a digest of the settings.
    Settings(Arc<str>, u64),
}

/// Settings [`Runtime::connect`] and [`Runtime::connection_with`] can cache a connection by:
/// a [`Connection`] that is `Hash`. Implemented for every such type; a type that is not `Hash`
/// gets a message saying to derive it.
///
/// ```
/// use connscope::{Connection, ConnectSettings, Provider};
///
/// #[derive(Connection, Hash)]
/// struct Tenant { database: String, password: connscope::Secret }
/// # impl Provider for Tenant {
/// #     type Raw = ();
/// #     type Error = std::io::Error;
/// #     async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
/// #     async fn is_open(&self, _: &()) -> bool { true }
/// # }
/// fn cacheable<P: ConnectSettings>() {}
/// cacheable::<Tenant>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the settings of a connection given at run time: it is not `Hash`",
    label = "connections from settings are cached by their settings, so these must be `Hash`",
    note = "add `#[derive(Hash)]` to `{Self}` (a `connscope::Secret` field hashes as a keyed digest, never its value)"
)]
pub trait ConnectSettings: Connection + Hash {}

impl<T: Connection + Hash> ConnectSettings for T {}

/// The resource id of provider type `P`'s connection caches with these settings: different
/// ttl / max_entries get different caches, which never clear each other's entries.
fn provider_id<P: Connection>() -> u64 {
    type Settings = (TypeId, Option<Duration>, Option<u64>);
    static IDS: OnceLock<Mutex<HashMap<Settings, u64>>> = OnceLock::new();
    let ids = IDS.get_or_init(Default::default);
    let key = (TypeId::of::<P>(), P::TTL, P::MAX_ENTRIES);
    *ids.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert_with(next_resource_id)
}

impl Runtime {
    /// The cached connection `name` of provider `P`, in `P`'s scope (the current session for a
    /// session-scoped provider). Settings come from `[connections.<name>]` in the secrets file,
    /// overridden by environment variables, overridden by settings given in code. Nothing
    /// connects until the handle is used.
    ///
    /// A provider whose fields all have defaults needs no section: with nothing configuring
    /// `name`, its settings are the defaults. Otherwise a missing section is an
    /// [`Error::Config`] that names the closest configured name (`did you mean `warehouse`?`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use connscope::{Connection, Provider, Runtime};
    ///
    /// #[derive(Connection, serde::Deserialize)]
    /// struct Fake {
    ///     #[serde(default)]
    ///     latency_ms: u64,
    /// }
    /// impl Provider for Fake {
    ///     type Raw = ();
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    ///     async fn is_open(&self, _: &()) -> bool { true }
    /// }
    ///
    /// let rt = Runtime::builder().secrets_file("/nonexistent/secrets.toml").build();
    /// let fake = rt.connection::<Fake>("fake").await.unwrap();   // no [connections.fake] needed
    /// assert_eq!(fake.provider().latency_ms, 0);
    /// # }
    /// ```
    pub async fn connection<P>(&self, name: &str) -> Result<Conn<P>, Error>
    where
        P: Connection + DeserializeOwned,
    {
        let mut resolved = self.shared.config.fingerprinted(name)?;
        let mut tries = 0;
        loop {
            let read = resolved.as_ref().map(|(_, fingerprint)| *fingerprint);
            let conn = self.connection_resolved(name, resolved).await?;
            // The secrets file may have been reloaded since the settings were read: its
            // replacement installed and the connection for the old settings retired, so that
            // this lookup made a new one with settings that no longer hold (a password rotated
            // away: its first connect fails). Then look the current settings up instead.
            let now = self.shared.config.fingerprinted(name)?;
            tries += 1;
            if now.as_ref().map(|(_, fingerprint)| *fingerprint) == read || tries == 3 {
                return Ok(conn);
            }
            resolved = now;
        }
    }

    /// [`connection`](Self::connection) with the settings already resolved (`None`: nothing
    /// configures `name`).
    async fn connection_resolved<P>(
        &self,
        name: &str,
        resolved: Option<(toml::Table, u64)>,
    ) -> Result<Conn<P>, Error>
    where
        P: Connection + DeserializeOwned,
    {
        let (cache, home) = self.connection_cache::<P>(name)?;
        let config = &self.shared.config;
        let (table, fingerprint, configured) = match resolved {
            Some((table, fingerprint)) => (table, fingerprint, true),
            None => {
                let (table, fingerprint) = Config::empty_fingerprinted();
                (table, fingerprint, false)
            }
        };
        let key = ConnKey::Named(Arc::from(name), fingerprint);
        let grace = self.grace_period();
        let stats = Arc::clone(cache.stats_handle());
        // The settings are deserialized only when the connection is not cached yet.
        cache
            .try_get_with_own_error(key, async move {
                let settings = if configured {
                    config.settings::<P>(name, table)?
                } else {
                    // Nothing configures `name`: the provider's defaults, if it has them all.
                    let settings = config.settings::<P>(name, table).map_err(|_| config.missing(name))?;
                    if let Some(close) = did_you_mean(name, &config.names()) {
                        tracing::warn!(
                            connection = name,
                            did_you_mean = close,
                            "connscope: nothing configures this connection; using the provider's defaults"
                        );
                    }
                    settings
                };
                self.shared.named.register::<P>(name);
                // `fingerprint` is keyed per process (`secrets::keyed_digest`): the id shows a
                // digest of settings that may hold a password, and must not let anyone test
                // guesses of it offline.
                let id = ConnId::named((TypeId::of::<P>(), name, fingerprint));
                let conn =
                    Conn::with_id(id, name, settings, P::HEALTH_CHECK, true, grace).refresh_every(P::REFRESH);
                conn.attach_stats(stats);
                conn.attach_home(home);
                #[cfg(feature = "metrics")]
                crate::metrics::track(self, &conn, P::scope(), None);
                Ok(conn)
            })
            .await
    }

    /// The cached connection for `settings` given at run time, in `P`'s scope (the current
    /// session for a session-scoped provider; outside one: [`Error::NoActiveSession`]).
    ///
    /// Equal settings (by their `Hash`) get the same connection, connected once; other
    /// settings another. It is cached, released (and closed, once) on ttl, `max_entries`,
    /// session end and shutdown exactly like a named connection of `P`, and shares `P`'s
    /// cache with them. Its name is `P::NAME`; its [`Conn::id`] is derived from the type and
    /// a digest of the settings keyed per process ([`Secret`](crate::Secret) fields hash that
    /// way too, so no digest can be used to test guesses of a password).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use connscope::{Connection, Provider, Runtime};
    ///
    /// #[derive(Connection, Hash)]
    /// struct Tenant { database: String }
    /// impl Provider for Tenant {
    ///     type Raw = String;
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<String, std::io::Error> { Ok(self.database.clone()) }
    ///     async fn is_open(&self, _: &String) -> bool { true }
    /// }
    ///
    /// let rt = Runtime::builder().build();
    /// let a = rt.connect(Tenant { database: "acme".into() }).await.unwrap();
    /// let b = rt.connect(Tenant { database: "acme".into() }).await.unwrap();
    /// let c = rt.connect(Tenant { database: "globex".into() }).await.unwrap();
    /// assert_eq!(a.id(), b.id());   // the same cached connection
    /// assert_ne!(a.id(), c.id());
    /// assert_eq!(&*a.get().await.unwrap(), "acme");
    /// # }
    /// ```
    pub async fn connect<P>(&self, settings: P) -> Result<Conn<P>, Error>
    where
        P: ConnectSettings,
    {
        self.connect_as(P::NAME, settings).await
    }

    /// The connection `name` (as [`connection`](Self::connection) resolves it) with per-call
    /// overrides applied to its settings: `[connections.<name>]` plus a value from the
    /// request. The result is cached by the final settings (as [`connect`](Self::connect)
    /// does), so other overrides get another connection and equal ones the same. The section
    /// is read and deserialized on every call, cached or not.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use connscope::{Connection, Provider, Runtime};
    ///
    /// #[derive(Connection, Hash, serde::Deserialize)]
    /// struct Tenant { host: String, #[serde(default)] database: String }
    /// impl Provider for Tenant {
    ///     type Raw = String;
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<String, std::io::Error> {
    ///         Ok(format!("{}/{}", self.host, self.database))
    ///     }
    ///     async fn is_open(&self, _: &String) -> bool { true }
    /// }
    ///
    /// let rt = Runtime::builder().connection_setting("tenants", "host", "db.internal").build();
    /// let acme = rt.connection_with::<Tenant>("tenants", |s| s.database = "acme".into()).await.unwrap();
    /// assert_eq!(&*acme.get().await.unwrap(), "db.internal/acme");
    /// # }
    /// ```
    pub async fn connection_with<P>(
        &self,
        name: &str,
        overrides: impl FnOnce(&mut P),
    ) -> Result<Conn<P>, Error>
    where
        P: ConnectSettings + DeserializeOwned,
    {
        // Scope first: outside a session, a session-scoped provider's error comes before any
        // configuration is read.
        self.connection_cache::<P>(name)?;
        let config = &self.shared.config;
        let mut settings = match config.lookup(name)? {
            Some(table) => config.settings::<P>(name, table)?,
            None => config.settings::<P>(name, toml::Table::new()).map_err(|_| config.missing(name))?,
        };
        overrides(&mut settings);
        self.connect_as(name, settings).await
    }

    async fn connect_as<P>(&self, name: &str, settings: P) -> Result<Conn<P>, Error>
    where
        P: ConnectSettings,
    {
        let (cache, home) = self.connection_cache::<P>(name)?;
        let digest = keyed_digest((TypeId::of::<P>(), &settings));
        let key = ConnKey::Settings(Arc::from(name), digest);
        let grace = self.grace_period();
        let stats = Arc::clone(cache.stats_handle());
        cache
            .try_get_with_own_error(key, async move {
                let id = ConnId::named((TypeId::of::<P>(), "settings", name, digest));
                let conn =
                    Conn::with_id(id, name, settings, P::HEALTH_CHECK, true, grace).refresh_every(P::REFRESH);
                conn.attach_stats(stats);
                conn.attach_home(home);
                #[cfg(feature = "metrics")]
                crate::metrics::track(self, &conn, P::scope(), None);
                Ok(conn)
            })
            .await
    }

    /// Statistics of provider `P`'s connections in this runtime, summed over the global scope
    /// and every live session: `reconnects` (clients found closed or lost and replaced),
    /// `retries` ([`Conn::run`] operations run again on a fresh client), and the cache's own
    /// counts (loads are connection handles made, evictions are handles released).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use connscope::{Connection, Provider, Runtime};
    /// # #[derive(Connection, Hash)]
    /// # struct Tenant { database: String }
    /// # impl Provider for Tenant {
    /// #     type Raw = ();
    /// #     type Error = std::io::Error;
    /// #     async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     async fn is_open(&self, _: &()) -> bool { true }
    /// # }
    /// let rt = Runtime::builder().build();
    /// rt.connect(Tenant { database: "acme".into() }).await.unwrap();
    /// let stats = rt.connection_stats::<Tenant>();
    /// assert_eq!((stats.loads, stats.reconnects, stats.retries), (1, 0, 0));
    /// # }
    /// ```
    pub fn connection_stats<P: Connection>(&self) -> crate::stats::StatsSnapshot {
        self.resource_stats(provider_id::<P>())
    }

    fn connection_cache<P: Connection>(
        &self,
        name: &str,
    ) -> Result<(ResourceCache<ConnKey, Conn<P>>, Home), Error> {
        let key = provider_id::<P>();
        let config = || {
            let mut c = CacheConfig::new(format!("connection<{}>", std::any::type_name::<P>()));
            c.ttl = P::TTL;
            c.max_entries = P::MAX_ENTRIES;
            let hook: ReleaseHook<Conn<P>> = Arc::new(|conn: Conn<P>| {
                Box::pin(async move {
                    conn.release().await;
                    Ok(())
                })
            });
            c.on_release = Some(hook);
            c
        };
        match P::scope() {
            Scope::Global => {
                if self.is_shut_down() {
                    return Err(Error::RuntimeShutDown);
                }
                Ok((self.global_cache(key, config), Home::Global(Arc::downgrade(&self.shared))))
            }
            Scope::Session => Session::with_current(|s| {
                let s = s.ok_or_else(|| Error::NoActiveSession { what: format!("connection `{name}`") })?;
                s.check_active()?;
                let cache = s.inner.caches.get_or_create(key, &self.shared.tracker, config);
                Ok((cache, Home::Session(Arc::downgrade(&s.inner))))
            }),
        }
    }
}

/// The configured name `name` is most likely a typo of, if any: the closest by edit distance
/// (a swap of two neighbours is one edit; case is ignored), within a budget that grows with
/// the name's length.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let lowered = name.to_lowercase();
    let budget = match lowered.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .filter(|c| c.as_str() != name)
        .map(|c| (strsim::osa_distance(&lowered, &c.to_lowercase()), c.as_str()))
        .filter(|&(d, _)| d <= budget)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggestions_for_misspelled_connection_names() {
        let names: Vec<String> = ["warehouse", "shop", "analytics_pg"].map(String::from).to_vec();
        assert_eq!(did_you_mean("warehose", &names), Some("warehouse"));
        assert_eq!(did_you_mean("wraehouse", &names), Some("warehouse"), "a swap is one edit");
        assert_eq!(did_you_mean("Shop", &names), Some("shop"));
        assert_eq!(did_you_mean("shpo", &names), Some("shop"));
        assert_eq!(did_you_mean("analytics_mysql", &names), None, "too far");
        assert_eq!(did_you_mean("billing", &names), None);
        assert_eq!(did_you_mean("shop", &names), None, "not a typo of itself");
    }
}

/// What a change of the secrets file does to the named connections of one provider type: the
/// type's functions, kept by name (a provider type is generic; these are its instances).
#[derive(Clone, Copy)]
struct NamedHooks {
    /// Whether settings `table` (`None`: nothing configures the name) are valid for the type.
    check: fn(&Config, &str, Option<toml::Table>) -> Result<(), Error>,
    /// Makes (and connects) the connection with the new settings, before they are installed.
    prepare: fn(Runtime, Arc<str>, Resolved) -> BoxFuture<'static, Option<Successor>>,
    /// Drains and closes the connection with the old settings (fingerprint), handing its late
    /// callers to the successor.
    retire: fn(Runtime, Arc<str>, u64, Option<Successor>) -> BoxFuture<'static, ()>,
}

type Successor = Box<dyn Any + Send>;

/// A name's resolved settings and their fingerprint (`None`: nothing configures the name).
type Resolved = Option<(toml::Table, u64)>;

/// The named connections a runtime handed out: (provider type, name) → that type's hooks.
#[derive(Default)]
pub(crate) struct NamedRegistry(Mutex<HashMap<(TypeId, Arc<str>), NamedHooks>>);

impl NamedRegistry {
    fn register<P: Connection + DeserializeOwned>(&self, name: &str) {
        let hooks = NamedHooks { check: check::<P>, prepare: prepare::<P>, retire: retire::<P> };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((TypeId::of::<P>(), Arc::from(name))).or_insert(hooks);
    }

    fn snapshot(&self) -> Vec<(Arc<str>, NamedHooks)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((_, name), hooks)| (Arc::clone(name), *hooks)).collect()
    }
}

fn check<P: Connection + DeserializeOwned>(
    config: &Config,
    name: &str,
    table: Option<toml::Table>,
) -> Result<(), Error> {
    match table {
        Some(table) => config.settings::<P>(name, table).map(drop),
        None => config.settings::<P>(name, toml::Table::new()).map(drop).map_err(|_| config.missing(name)),
    }
}

fn prepare<P: Connection + DeserializeOwned>(
    rt: Runtime,
    name: Arc<str>,
    resolved: Resolved,
) -> BoxFuture<'static, Option<Successor>> {
    Box::pin(async move {
        // A session's connection is made again on its next lookup (in that session).
        if P::scope() != Scope::Global {
            return None;
        }
        let conn = rt.connection_resolved::<P>(&name, resolved).await.ok()?;
        // Connected before anyone is sent to it, so the first request does not pay the connect.
        if let Err(e) = conn.get().await {
            tracing::warn!(
                connection = %name,
                error = %e,
                "connscope: the connection's new settings (the secrets file changed) do not connect yet; \
                 switching to them anyway"
            );
        }
        Some(Box::new(conn) as Successor)
    })
}

fn retire<P: Connection + DeserializeOwned>(
    rt: Runtime,
    name: Arc<str>,
    old: u64,
    successor: Option<Successor>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let key = ConnKey::Named(Arc::clone(&name), old);
        match P::scope() {
            Scope::Global => {
                let Ok((cache, _)) = rt.connection_cache::<P>(&name) else { return };
                let next = successor.and_then(|s| s.downcast::<Conn<P>>().ok());
                // Released by the cache's hook: drained, then closed once.
                cache
                    .invalidate_if(&key, |old| {
                        if let Some(next) = next {
                            old.set_successor(*next);
                        }
                        true
                    })
                    .await;
            }
            Scope::Session => {
                for s in rt.sessions() {
                    if let Some(cache) = s.inner.caches.existing::<ConnKey, Conn<P>>(provider_id::<P>()) {
                        cache.invalidate(&key).await;
                    }
                }
            }
        }
    })
}

impl Runtime {
    /// Checks the secrets file now (the runtime does it every `secrets_poll_interval`, see
    /// [`RuntimeBuilder::secrets_poll_interval`](crate::RuntimeBuilder::secrets_poll_interval)).
    /// Does nothing when the file did not change since the last check. Otherwise: a file that
    /// cannot be read or parsed, or is gone, keeps the last good settings (one warning, which
    /// quotes no value); a connection whose new settings its provider rejects keeps its last
    /// good ones (one warning); the others' new settings are installed. Each named connection
    /// in use whose resolved settings changed is replaced: a global one is made and connected
    /// with the new settings first, then new lookups get it, and the old one is drained and
    /// closed exactly once (a caller still holding it is served by the new one).
    pub async fn poll_secrets(&self) {
        let rt = self.clone();
        let Ok(Some(candidate)) = crate::credentials::blocking(move || rt.shared.config.poll()).await else {
            return;
        };
        let config = &self.shared.config;
        let file = config.file().display().to_string();
        let old = config.current();
        let mut table = match candidate {
            Ok(Some(table)) => table,
            Ok(None) => {
                if matches!(&*old, Ok(Some(_))) {
                    tracing::warn!(
                        file,
                        "connscope: the secrets file is gone; keeping the last good settings"
                    );
                }
                return;
            }
            Err(why) => {
                tracing::warn!(
                    file,
                    reason = %why,
                    "connscope: the secrets file changed but is invalid; keeping the last good settings"
                );
                return;
            }
        };
        let hooks = self.shared.named.snapshot();
        // A connection whose new settings are invalid keeps its last good section.
        for (name, h) in &hooks {
            let candidate = Ok(Some(table.clone()));
            let checked = config.lookup_in(&candidate, name).and_then(|t| (h.check)(config, name, t));
            if let Err(e) = checked {
                tracing::warn!(
                    file,
                    connection = %name,
                    error = %e,
                    "connscope: the secrets file changed but the connection's new settings are invalid; \
                     keeping its last good settings"
                );
                let last_good = match &*old {
                    Ok(Some(o)) => o.get(&**name),
                    _ => None,
                };
                match last_good {
                    Some(last_good) => table.insert(name.to_string(), last_good.clone()),
                    None => table.remove(&**name),
                };
            }
        }
        let new = Ok(Some(table));
        let fingerprint = |connections, name: &str| match config.fingerprinted_in(connections, name) {
            Ok(Some((_, f))) => Some(f),
            Ok(None) => Some(Config::empty_fingerprinted().1),
            Err(_) => None,
        };
        // The replacements, made with the new settings before anyone can look them up.
        let mut changed = Vec::new();
        for (name, h) in hooks {
            let (Some(before), Ok(after)) = (fingerprint(&old, &name), config.fingerprinted_in(&new, &name))
            else {
                continue;
            };
            let after_fp = after.as_ref().map_or_else(|| Config::empty_fingerprinted().1, |(_, f)| *f);
            if before == after_fp {
                continue;
            }
            let successor = (h.prepare)(self.clone(), Arc::clone(&name), after).await;
            changed.push((name, h, before, successor));
        }
        config.install(new);
        tracing::info!(file, changed = changed.len(), "connscope: secrets file reloaded");
        for (name, h, before, successor) in changed {
            tracing::info!(connection = %name, "connscope: connection settings changed; replacing the connection");
            drop(self.shared.tracker.spawn((h.retire)(self.clone(), name, before, successor)));
        }
    }
}
