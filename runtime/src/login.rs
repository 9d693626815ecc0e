//! Per-user login on a session: connect with the user's credentials now, keep only the live
//! connection (secrets wiped), hand it out until it is found closed or the user logs out.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::cache::{CacheConfig, ReleaseHook, ResourceCache};
use crate::conn::{Conn, Home, detached};
use crate::error::Error;
use crate::provider::Connection;
use crate::resource::next_resource_id;
use crate::session::Session;

/// The resource id of the login connections of provider `P` in a session.
fn login_id<P: 'static>() -> u64 {
    static IDS: OnceLock<Mutex<HashMap<TypeId, u64>>> = OnceLock::new();
    let ids = IDS.get_or_init(Default::default);
    *ids.lock().unwrap_or_else(|p| p.into_inner()).entry(TypeId::of::<P>()).or_insert_with(next_resource_id)
}

impl Session {
    fn logins<P: Connection>(&self) -> Result<ResourceCache<Arc<str>, Conn<P>>, Error> {
        self.check_active()?;
        let config = || {
            let mut c = CacheConfig::new(format!("login<{}>", std::any::type_name::<P>()));
            c.ttl = P::TTL;
            let hook: ReleaseHook<Conn<P>> = Arc::new(|conn: Conn<P>| {
                Box::pin(async move {
                    conn.release().await;
                    Ok(())
                })
            });
            c.on_release = Some(hook);
            c
        };
        Ok(self.inner.caches.get_or_create(login_id::<P>(), &self.runtime().shared.tracker, config))
    }

    /// Logs this session in to connection `name` with the user's `settings`: connects now. On
    /// failure nothing is stored and the error says why. On success the secret fields of the
    /// settings are wiped, the connection is kept for this session only (replacing an earlier
    /// login of the same name, which closes in the background after its users) and returned.
    /// Once connected, the login is stored even if the returned future is dropped: the new
    /// client is never left unclosed. A session that ended meanwhile refuses it (the connection
    /// is closed) with [`Error::SessionEnded`].
    pub async fn login<P: Connection>(&self, name: &str, mut settings: P) -> Result<Conn<P>, Error> {
        let logins = self.logins::<P>()?;
        let raw = settings.connect().await.map_err(|e| Error::connect(name, e));
        settings.forget_secrets();
        let conn = Conn::connected(name, settings, raw?, P::HEALTH_CHECK, self.runtime().grace_period());
        conn.attach_stats(Arc::clone(logins.stats_handle()));
        conn.attach_home(Home::Session(Arc::downgrade(&self.inner)));
        #[cfg(feature = "metrics")]
        crate::metrics::track(self.runtime(), &conn, crate::scope::Scope::Session, Some(self));
        let store = {
            let (id, key, conn) = (self.id(), Arc::<str>::from(name), conn.clone());
            async move {
                // Replaces an earlier login (closed in the background, after its users); refused,
                // and this connection released, if the session ended while we connected.
                if logins.insert(key.clone(), conn).await.is_ok() {
                    tracing::info!(session = %id, connection = %key, "connscope: logged in");
                }
            }
        };
        detached(store).await;
        // Ended meanwhile: the connection was released with the session (or refused by it).
        self.check_active()?;
        Ok(conn)
    }

    /// The connection this session logged in to as `name`, checked per its health-check
    /// policy. [`Error::LoginRequired`] when there is none, or when it was found closed (it is
    /// closed and removed first, so the next step is the login form). Only the connection found
    /// closed is removed: a login made meanwhile (another browser tab) stays.
    pub async fn logged_in<P: Connection>(&self, name: &str) -> Result<Conn<P>, Error> {
        let logins = self.logins::<P>()?;
        let key: Arc<str> = Arc::from(name);
        let Some(conn) = logins.get(&key).await else {
            return Err(Error::LoginRequired { connection: name.to_owned(), reason: "not logged in" });
        };
        match conn.get().await {
            Ok(_) => Ok(conn),
            Err(e) => {
                // Only the connection found closed: a login made meanwhile (another tab) stays.
                logins.invalidate_if(&key, |current| current.id() == conn.id()).await;
                tracing::info!(session = %self.id(), connection = name, "connscope: login lost: {e}");
                Err(Error::LoginRequired {
                    connection: name.to_owned(),
                    reason: "the connection was found closed; log in again",
                })
            }
        }
    }

    /// Logs out of `name`: closes the connection (after its in-flight users) and forgets it.
    /// Returns whether there was a login.
    pub async fn logout<P: Connection>(&self, name: &str) -> bool {
        match self.logins::<P>() {
            Ok(logins) => logins.invalidate(&Arc::from(name)).await,
            Err(_) => false,
        }
    }
}
