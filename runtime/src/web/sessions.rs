//! Session cookies: a random id (256 bits) per logged-in browser, mapped to a connscope
//! `Session`. A browser gets a session only by logging in, and a new id on every login; the
//! session ends on logout and whenever the runtime ends it (idle timeout, lifetime), after
//! which its cookie means nothing.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderValue;

use super::csrf::{Signer, hex};
use super::handle::{MiddlewareFn, middleware};
use super::page::{DefaultLoginPage, LoginTemplate, Template};
use super::throttle::{LoginThrottle, Throttle};
use crate::provider::Connection;
use crate::runtime::Runtime;
use crate::session::Session;

pub use super::handle::WebSession;

/// The layer returned by [`WebSessions::layer`].
pub type SessionLayer = axum::middleware::FromFnLayer<
    MiddlewareFn,
    WebSessions,
    (axum::extract::State<WebSessions>, axum::extract::Request),
>;

/// Maps session cookies to connscope sessions. Cheap to clone.
///
/// A request without a valid session cookie runs outside any session, and creates none: only
/// a successful login does. Forms carry a signed CSRF token that needs no session.
#[derive(Clone)]
pub struct WebSessions {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    rt: Runtime,
    config: Config,
    registry: Mutex<Registry>,
    signer: Signer,
    throttle: Arc<Throttle>,
    /// The session records in Redis, set on first use (`None`: Redis is not configured).
    #[cfg(feature = "redis")]
    shared: std::sync::OnceLock<Option<super::shared::Shared>>,
}

/// Cookie ids of live sessions.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) ids: HashMap<String, Entry>,
    /// Size at which ended sessions are next swept out.
    sweep_at: usize,
    /// With shared sessions: cookie id by digest, and the digests of sessions ended (here or
    /// elsewhere) that must not be taken over again from a record read before the end.
    #[cfg(feature = "redis")]
    pub(crate) shared: super::shared::Index,
}

impl Registry {
    pub(crate) fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.ids.remove(id)?;
        #[cfg(feature = "redis")]
        if let Some(shared) = &entry.shared {
            self.shared.by_digest.remove(&*shared.digest);
        }
        Some(entry)
    }

    pub(crate) fn insert(&mut self, id: String, entry: Entry) {
        // Sessions the runtime ended (idle, lifetime) leave their ids: sweep them out whenever
        // the map has doubled since the last sweep.
        if self.ids.len() >= self.sweep_at {
            self.ids.retain(|_, e| !e.session.is_ended());
            #[cfg(feature = "redis")]
            {
                let ids = &self.ids;
                self.shared.by_digest.retain(|_, id| ids.contains_key(id));
            }
            self.sweep_at = (self.ids.len() * 2).max(64);
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = &entry.shared {
            self.shared.by_digest.insert(shared.digest.to_string(), id.clone());
        }
        self.ids.insert(id, entry);
    }
}

/// A logged-in browser's session and its CSRF secret (replaced on every login).
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) session: Session,
    pub(crate) secret: Arc<str>,
    /// Connections this browser logged in to, here or on another instance.
    pub(crate) logins: Arc<[Arc<str>]>,
    /// Of those, the ones made on another instance and not yet here (a session taken over
    /// from another instance): asked for again here.
    pub(crate) elsewhere: Arc<[Arc<str>]>,
    /// Its record in Redis, when sessions are shared.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<Arc<super::shared::SharedEntry>>,
}

/// What a session cookie resolved to.
pub(crate) enum Resolved {
    Found(Entry),
    /// It names no live session: the cookie is deleted.
    Gone,
    /// Nothing could be learnt (Redis is away): no session, but the cookie is kept, since
    /// another instance may still serve it.
    Unknown,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cookie: String,
    pub(crate) csrf_cookie: String,
    pub(crate) secure: bool,
    pub(crate) login_path: String,
    pub(crate) logout_path: String,
    pub(crate) home_path: String,
    /// The app's title, on the login page.
    pub(crate) title: String,
    pub(crate) template: Template,
    pub(crate) csrf_lifetime: Duration,
    pub(crate) throttle: LoginThrottle,
    /// Connection names set with [`WebSessions::connection_name`], by provider type.
    names: HashMap<TypeId, Arc<str>>,
}

impl Config {
    /// The name of provider `P`'s login connection: as set, else `P::NAME`.
    pub(crate) fn name_of<P: Connection>(&self) -> &str {
        self.names.get(&TypeId::of::<P>()).map_or(P::NAME, |n| n)
    }
}

impl fmt::Debug for WebSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSessions").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl WebSessions {
    /// Sessions of `rt`, with cookie `connscope_session` (`HttpOnly; SameSite=Lax`, not
    /// `Secure`: call [`secure`](Self::secure) behind HTTPS), login page `/login`, logout
    /// `/logout`, home `/`, connscope's [default login page](super::default_login_page),
    /// CSRF tokens valid for an hour, and the default [`LoginThrottle`].
    pub fn new(rt: Runtime) -> Self {
        let config = Config {
            cookie: "connscope_session".to_owned(),
            csrf_cookie: "connscope_session_csrf".to_owned(),
            secure: false,
            login_path: "/login".to_owned(),
            logout_path: "/logout".to_owned(),
            home_path: "/".to_owned(),
            title: "Log in".to_owned(),
            template: Template(Arc::new(DefaultLoginPage)),
            csrf_lifetime: Duration::from_secs(60 * 60),
            throttle: LoginThrottle::default(),
            names: HashMap::new(),
        };
        Self::with(rt, config)
    }

    fn with(rt: Runtime, config: Config) -> Self {
        WebSessions {
            inner: Arc::new(Inner {
                rt,
                signer: Signer::new(config.csrf_lifetime),
                throttle: Throttle::new(config.throttle.clone()),
                config,
                registry: Mutex::new(Registry::default()),
                #[cfg(feature = "redis")]
                shared: std::sync::OnceLock::new(),
            }),
        }
    }

    fn with_config(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        f(&mut config);
        Self::with(self.inner.rt.clone(), config)
    }

    /// Marks the cookies `Secure` (sent over HTTPS only).
    pub fn secure(self, secure: bool) -> Self {
        self.with_config(|c| c.secure = secure)
    }

    /// The session cookie's name (default `connscope_session`); the pre-session CSRF cookie is
    /// named after it, with `_csrf` appended.
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with_config(|c| {
            c.csrf_cookie = format!("{name}_csrf");
            c.cookie = name;
        })
    }

    /// The login page's path (default `/login`): where [`login_routes`](Self::login_routes)
    /// serves the form and accepts it, where the form posts to, where
    /// [`LoggedIn`](super::LoggedIn) and a logout redirect. A path starts with `/` (axum's rule
    /// for routes).
    pub fn login_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with_config(|c| c.login_path = path)
    }

    /// The logout path (default `/logout`): where [`login_routes`](Self::login_routes) accepts
    /// the logout and where [`logout_button`](super::logout_button) posts to.
    pub fn logout_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with_config(|c| c.logout_path = path)
    }

    /// The app's title, shown on the login page (default: none, the page says `Log in`).
    pub fn title(self, title: impl Into<String>) -> Self {
        let title = title.into();
        self.with_config(|c| c.title = title)
    }

    /// Renders the login page with the app's own template instead of
    /// [`default_login_page`](super::default_login_page): any `Fn(&LoginPage) -> String`, or a
    /// type implementing [`LoginTemplate`]. See [`LoginTemplate`] for an example.
    pub fn login_template(self, template: impl LoginTemplate) -> Self {
        let template = Template(Arc::new(template));
        self.with_config(|c| c.template = template)
    }

    /// The login routes of provider `P` at the configured paths: `GET` and `POST` on the
    /// [login path](Self::login_path) (the form, and its submission), `POST` on the
    /// [logout path](Self::logout_path). Merge them into the app's router, under
    /// [`layer`](Self::layer).
    ///
    /// ```
    /// # use connscope::{Connection, Provider};
    /// # #[derive(Connection, serde::Deserialize)] #[connection(scope = "session")]
    /// # struct Warehouse { user: String, #[connection(secret)] password: connscope::Secret }
    /// # impl Provider for Warehouse { type Raw = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #   async fn is_open(&self, _: &()) -> bool { true } }
    /// # let rt = connscope::Runtime::builder().build();
    /// let web = connscope::web::WebSessions::new(rt).login_path("/signin").logout_path("/signout");
    /// let app: axum::Router = axum::Router::new().merge(web.login_routes::<Warehouse>()).layer(web.layer());
    /// ```
    pub fn login_routes<P: Connection>(&self) -> axum::Router {
        super::form::routes_at::<P>(&self.inner.config.login_path, &self.inner.config.logout_path)
    }

    /// How long a form's CSRF token is accepted after the page was served (default 1 hour).
    pub fn csrf_token_lifetime(self, lifetime: Duration) -> Self {
        self.with_config(|c| c.csrf_lifetime = lifetime)
    }

    /// How repeated login failures back off (see [`LoginThrottle`]; `LoginThrottle::off()`
    /// disables it).
    pub fn login_throttle(self, throttle: LoginThrottle) -> Self {
        self.with_config(|c| c.throttle = throttle)
    }

    /// The connection name under which users of provider `P` log in (default `P::NAME`): the
    /// `[connections.<name>]` section the login form's fixed fields come from, and the name
    /// [`LoggedIn<P>`](super::LoggedIn) looks up. Useful for a provider you did not write, such
    /// as `SqlLogin`:
    ///
    /// ```no_run
    /// # use connscope::{Connection, Provider};
    /// # #[derive(Connection, serde::Deserialize)] #[connection(scope = "session")]
    /// # struct SqlLogin { user: String, #[connection(secret)] password: connscope::Secret }
    /// # impl Provider for SqlLogin { type Raw = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #   async fn is_open(&self, _: &()) -> bool { true } }
    /// # let rt = connscope::Runtime::builder().build();
    /// // Users of `SqlLogin` (named `sql_login` by its author) log in to [connections.warehouse].
    /// let web = connscope::web::WebSessions::new(rt).connection_name::<SqlLogin>("warehouse");
    /// ```
    pub fn connection_name<P: Connection>(self, name: impl Into<String>) -> Self {
        let name: Arc<str> = Arc::from(name.into());
        self.with_config(|c| {
            c.names.insert(TypeId::of::<P>(), name);
        })
    }

    /// Where a successful login redirects (default `/`).
    pub fn home_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with_config(|c| c.home_path = path)
    }

    /// The runtime behind these sessions.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.rt
    }

    /// The tower layer: runs every request of a logged-in browser inside its session.
    pub fn layer(&self) -> SessionLayer {
        let f: MiddlewareFn = |state, req, next| Box::pin(middleware(state, req, next));
        axum::middleware::from_fn_with_state(self.clone(), f)
    }

    /// What a cookie id names: a live session of this instance, or, with shared sessions, one
    /// taken over from its record in Redis. Nothing is created for an id that names nothing.
    pub(crate) async fn resolve(&self, id: &str) -> Resolved {
        let local = {
            let mut registry = self.registry();
            match registry.ids.get(id) {
                Some(entry) if !entry.session.is_ended() => Ok(entry.clone()),
                Some(_) => Err(registry.remove(id)),
                None => Err(None),
            }
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared() {
            return shared.resolve(self, id, local).await;
        }
        match local {
            Ok(entry) => Resolved::Found(entry),
            Err(_) => Resolved::Gone,
        }
    }

    /// Gives `session` a new cookie id and CSRF secret (a login), dropping `old`, with the
    /// connections it is logged in to. With shared sessions, the new record is returned for the
    /// caller to store, and the old id's session ends on the other instances.
    pub(crate) fn register(&self, session: &Session, old: Option<&str>, login: Login) -> (String, Entry) {
        let (id, secret) = (random_id(), Arc::<str>::from(random_id()));
        #[cfg(feature = "redis")]
        let shared = self.shared();
        let mut registry = self.registry();
        let previous = old.and_then(|old| registry.remove(old));
        #[cfg(feature = "redis")]
        if let Some(old) = previous.as_ref().and_then(|p| p.shared.as_ref()) {
            registry.shared.bury_now(&old.digest, &self.inner.rt);
        }
        let entry = Entry {
            session: session.clone(),
            secret,
            logins: login.logins,
            elsewhere: login.elsewhere,
            #[cfg(feature = "redis")]
            shared: shared.map(|shared| {
                let created = previous.as_ref().and_then(|p| p.shared.as_ref()).map(|p| p.created_unix_ms);
                shared.entry(&id, created, &self.inner.rt)
            }),
        };
        registry.insert(id.clone(), entry.clone());
        drop(registry);
        #[cfg(not(feature = "redis"))]
        drop(previous);
        #[cfg(feature = "redis")]
        if let (Some(shared), Some(old)) = (shared, previous.and_then(|p| p.shared)) {
            // The old id is worthless now: the other instances end their copies of it.
            shared.end_everywhere_in_background(self, &old.digest);
        }
        (id, entry)
    }

    /// Forgets a cookie id (a logout); returns its entry.
    pub(crate) fn forget(&self, id: &str) -> Option<Entry> {
        let mut registry = self.registry();
        let entry = registry.remove(id);
        #[cfg(feature = "redis")]
        if let Some(shared) = entry.as_ref().and_then(|e| e.shared.as_ref()) {
            registry.shared.bury_now(&shared.digest, &self.inner.rt);
        }
        entry
    }

    /// The shared sessions of this runtime, started on first use; `None` without Redis.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(&self) -> Option<&super::shared::Shared> {
        self.inner
            .shared
            .get_or_init(|| {
                let tier = self.inner.rt.tier()?;
                Some(super::shared::Shared::new(tier, Arc::downgrade(&self.inner)))
            })
            .as_ref()
    }

    #[cfg(feature = "redis")]
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        WebSessions { inner }
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `Set-Cookie` value: `name=value`, or a deletion when `value` is `None`.
    pub(crate) fn cookie(&self, name: &str, value: Option<&str>) -> HeaderValue {
        let c = &self.inner.config;
        let mut v = format!("{name}={}; Path=/; HttpOnly; SameSite=Lax", value.unwrap_or(""));
        if value.is_none() {
            v.push_str("; Max-Age=0");
        }
        if c.secure {
            v.push_str("; Secure");
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    pub(crate) fn throttle(&self) -> &Arc<Throttle> {
        &self.inner.throttle
    }
}

/// The connections a session is logged in to, for [`WebSessions::register`].
#[derive(Default)]
pub(crate) struct Login {
    pub(crate) logins: Arc<[Arc<str>]>,
    pub(crate) elsewhere: Arc<[Arc<str>]>,
}

/// 256 random bits, hex-encoded.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    hex(&bytes)
}

pub(crate) fn fill_random(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("connscope: the OS random number generator failed");
}

#[cfg(test)]
mod tests {
    use super::random_id;

    /// A session id is 256 random bits: distinct, no counter, every bit position spread evenly
    /// (a length check alone would pass a counter or a constant).
    #[test]
    fn session_ids_are_256_random_bits() {
        const N: usize = 256;
        let ids: Vec<Vec<u8>> = (0..N)
            .map(|_| {
                let id = random_id();
                assert_eq!(id.len(), 64);
                (0..32).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()).collect()
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), N, "every id distinct");
        let ones_at = |bit: usize| ids.iter().filter(|id| id[bit / 8] >> (bit % 8) & 1 == 1).count();
        let mut total = 0;
        for bit in 0..256 {
            let ones = ones_at(bit);
            // Binomial(256, 1/2): mean 128, sd 8; +-5 sd never fails by chance in practice.
            assert!((88..=168).contains(&ones), "bit {bit} set in {ones} of {N} ids");
            total += ones;
        }
        let share = total as f64 / (N * 256) as f64;
        assert!((0.48..=0.52).contains(&share), "share of one bits {share}");
    }
}
