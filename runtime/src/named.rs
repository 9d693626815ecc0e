//! Connections by name: `Runtime::connection::<P>("warehouse")` resolves `[connections.warehouse]`
//! and hands out the cached `Conn<P>` of the right scope, keyed by (type, name, settings).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cache::{CacheConfig, ReleaseHook, ResourceCache};
use crate::conn::{Conn, ConnId, Home};
use crate::error::Error;
use crate::provider::Connection;
use crate::resource::next_resource_id;
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::session::Session;

type ConnKey = (Arc<str>, u64);

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
    pub async fn connection<P>(&self, name: &str) -> Result<Conn<P>, Error>
    where
        P: Connection + DeserializeOwned,
    {
        let (cache, home) = self.connection_cache::<P>(name)?;
        let (table, fingerprint) = self.shared.config.fingerprinted(name)?;
        let key: ConnKey = (Arc::from(name), fingerprint);
        let grace = self.grace_period();
        let stats = Arc::clone(cache.stats_handle());
        // The settings are deserialized only when the connection is not cached yet.
        cache
            .try_get_with_own_error(key, async move {
                let settings = self.shared.config.settings::<P>(name, table)?;
                // `fingerprint` is keyed per process (`secrets::keyed_digest`): the id shows a
                // digest of settings that may hold a password, and must not let anyone test
                // guesses of it offline.
                let id = ConnId::named((TypeId::of::<P>(), name, fingerprint));
                let conn = Conn::with_id(id, name, settings, P::HEALTH_CHECK, true, grace);
                conn.attach_stats(stats);
                conn.attach_home(home);
                #[cfg(feature = "metrics")]
                crate::metrics::track(self, &conn, P::scope(), None);
                Ok(conn)
            })
            .await
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
