//! Session cookies: a random id (256 bits) per browser, mapped to a connscope `Session`; a new
//! id on login (the `Session` survives: a rename, not an end); the session ends on logout and
//! on the runtime's idle timeout.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ReleaseReport;
use crate::provider::Connection;
use crate::runtime::Runtime;
use crate::session::Session;

type MiddlewareFn = fn(State<WebSessions>, Request, Next) -> crate::cache::BoxFuture<'static, Response>;

/// The layer returned by [`WebSessions::layer`].
pub type SessionLayer =
    axum::middleware::FromFnLayer<MiddlewareFn, WebSessions, (State<WebSessions>, Request)>;

/// Maps session cookies to connscope sessions. Cheap to clone.
#[derive(Clone)]
pub struct WebSessions {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Runtime,
    config: Config,
    ids: Mutex<HashMap<String, Entry>>,
    inserted: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    session: Session,
    csrf: Arc<str>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cookie: String,
    pub(crate) secure: bool,
    pub(crate) login_path: String,
    pub(crate) home_path: String,
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
    /// `Secure`: call [`secure`](Self::secure) behind HTTPS), login page `/login`, home `/`.
    pub fn new(rt: Runtime) -> Self {
        let config = Config {
            cookie: "connscope_session".to_owned(),
            secure: false,
            login_path: "/login".to_owned(),
            home_path: "/".to_owned(),
            names: HashMap::new(),
        };
        WebSessions {
            inner: Arc::new(Inner {
                rt,
                config,
                ids: Mutex::new(HashMap::new()),
                inserted: AtomicU64::new(0),
            }),
        }
    }

    fn with_config(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        f(&mut config);
        WebSessions {
            inner: Arc::new(Inner {
                rt: self.inner.rt.clone(),
                config,
                ids: Mutex::new(HashMap::new()),
                inserted: AtomicU64::new(0),
            }),
        }
    }

    /// Marks the cookie `Secure` (sent over HTTPS only).
    pub fn secure(self, secure: bool) -> Self {
        self.with_config(|c| c.secure = secure)
    }

    /// The cookie's name.
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with_config(|c| c.cookie = name)
    }

    /// Where [`LoggedIn`](super::LoggedIn) redirects when there is no login (default `/login`).
    pub fn login_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with_config(|c| c.login_path = path)
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

    /// The tower layer: runs every request inside its user's session.
    pub fn layer(&self) -> SessionLayer {
        let f: MiddlewareFn = |state, req, next| Box::pin(middleware(state, req, next));
        axum::middleware::from_fn_with_state(self.clone(), f)
    }

    /// The live session behind a cookie value, or a new one (with a new id).
    fn resolve(&self, cookie: Option<&str>) -> (String, Entry, bool) {
        let mut ids = self.inner.ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = cookie
            && let Some(entry) = ids.get(id)
            && !entry.session.is_ended()
        {
            return (id.to_owned(), entry.clone(), false);
        }
        if let Some(id) = cookie {
            ids.remove(id);
        }
        // Forget ended sessions (idle timeout) now and then.
        if self.inner.inserted.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            ids.retain(|_, e| !e.session.is_ended());
        }
        let entry = Entry { session: self.inner.rt.session(), csrf: Arc::from(random_id()) };
        let id = random_id();
        ids.insert(id.clone(), entry.clone());
        (id, entry, true)
    }

    fn rename(&self, old: &str) -> String {
        let mut ids = self.inner.ids.lock().unwrap_or_else(|p| p.into_inner());
        let new = random_id();
        if let Some(entry) = ids.remove(old) {
            ids.insert(new.clone(), entry);
        }
        new
    }

    fn forget(&self, id: &str) {
        self.inner.ids.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn cookie(&self, id: &str, clear: bool) -> HeaderValue {
        let c = &self.inner.config;
        let mut v = format!("{}={}; Path=/; HttpOnly; SameSite=Lax", c.cookie, if clear { "" } else { id });
        if clear {
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
}

/// The current request's session, from the layer: extract it in a handler.
#[derive(Clone)]
pub struct WebSession {
    web: WebSessions,
    session: Session,
    csrf: Arc<str>,
    id: Arc<Mutex<String>>,
    renamed: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession").field("session", &self.session.id()).finish_non_exhaustive()
    }
}

impl WebSession {
    /// The connscope session of this browser.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The token a form of this session must send back as `_csrf`.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn check_csrf(&self, token: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Gives this browser a new cookie id (call on login, against session fixation). The
    /// connscope session, and everything cached in it, stays.
    pub fn renew_id(&self) {
        let mut id = self.id.lock().unwrap_or_else(|p| p.into_inner());
        *id = self.web.rename(&id);
        self.renamed.store(true, Ordering::Release);
    }

    /// Ends the session (releasing its values) and clears the cookie.
    pub async fn end(&self) -> ReleaseReport {
        let id = self.id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.web.forget(&id);
        self.ended.store(true, Ordering::Release);
        self.session.end().await
    }

    pub(crate) fn web(&self) -> &WebSessions {
        &self.web
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<WebSession>().cloned().ok_or_else(|| {
            (StatusCode::INTERNAL_SERVER_ERROR, "connscope: add `WebSessions::layer()` to the router")
                .into_response()
        })
    }
}

async fn middleware(State(web): State<WebSessions>, mut req: Request, next: Next) -> Response {
    let cookie = cookie_value(&req, &web.inner.config.cookie);
    let (id, entry, fresh) = web.resolve(cookie.as_deref());
    let handle = WebSession {
        web: web.clone(),
        session: entry.session.clone(),
        csrf: entry.csrf,
        id: Arc::new(Mutex::new(id)),
        renamed: Arc::new(AtomicBool::new(false)),
        ended: Arc::new(AtomicBool::new(false)),
    };
    req.extensions_mut().insert(handle.clone());
    let mut response = entry.session.run(next.run(req)).await;
    let id = handle.id.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if handle.ended.load(Ordering::Acquire) {
        response.headers_mut().append(SET_COOKIE, web.cookie(&id, true));
    } else if fresh || handle.renamed.load(Ordering::Acquire) {
        response.headers_mut().append(SET_COOKIE, web.cookie(&id, false));
    }
    response
}

fn cookie_value(req: &Request, name: &str) -> Option<String> {
    req.headers().get_all(COOKIE).iter().filter_map(|h| h.to_str().ok()).flat_map(|h| h.split(';')).find_map(
        |kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_owned())
        },
    )
}

/// 256 random bits, hex-encoded.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("connscope: the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
