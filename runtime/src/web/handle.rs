//! One request's view of its browser ([`WebSession`]): the session if the browser is logged in,
//! its CSRF token, logging in (which is what creates a session) and out; and the middleware
//! that finds the session, runs the request inside it and sets the cookies afterwards.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::csrf::Binding;
use super::sessions::{Entry, Login, Resolved, WebSessions, random_id};
use crate::error::{Error, ReleaseReport};
use crate::provider::Connection;
use crate::runtime::Runtime;
use crate::session::Session;

pub(crate) type MiddlewareFn =
    fn(State<WebSessions>, Request, Next) -> crate::cache::BoxFuture<'static, Response>;

/// The current request's browser, from the layer: extract it in a handler.
#[derive(Clone)]
pub struct WebSession {
    web: WebSessions,
    state: Arc<Mutex<RequestState>>,
}

/// What the request knows and what the response must tell the browser.
#[derive(Default)]
struct RequestState {
    /// The logged-in session, and its cookie id and CSRF secret.
    session: Option<Session>,
    id: Option<String>,
    secret: Option<Arc<str>>,
    /// The pre-session CSRF cookie's value: from the request, or made for this response.
    nonce: Option<String>,
    set_nonce: bool,
    /// A new session id to send (a login), or the cookie to delete (logout, a stale id).
    set_id: bool,
    clear_id: bool,
    /// The session's entry (its logins, its shared record).
    entry: Option<Entry>,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session = self.state().session.as_ref().map(Session::id);
        f.debug_struct("WebSession").field("session", &session).finish_non_exhaustive()
    }
}

impl WebSession {
    /// The connscope session of this browser, if it is logged in (and the session has not
    /// ended). A browser that is not gets none: only a login creates a session.
    pub fn session(&self) -> Option<Session> {
        self.state().session.clone().filter(|s| !s.is_ended())
    }

    /// The runtime behind the sessions.
    pub fn runtime(&self) -> &Runtime {
        self.web.runtime()
    }

    /// The configured login path ([`WebSessions::login_path`]): where to send a browser that
    /// must log in (again).
    pub fn login_path(&self) -> &str {
        &self.web.config().login_path
    }

    /// A token a form of this page must send back as `_csrf`: signed, valid for the token
    /// lifetime, and bound to this browser (to its session once logged in, so a login and a
    /// logout each make earlier tokens worthless).
    pub fn csrf_token(&self) -> String {
        let mut state = self.state();
        if let Some((secret, id)) = live_secret(&state) {
            return self.web.signer().issue(Binding::Session { secret: &secret, id: &id });
        }
        if state.nonce.is_none() {
            state.nonce = Some(random_id());
            state.set_nonce = true;
        }
        let nonce = state.nonce.as_deref().unwrap_or_default();
        self.web.signer().issue(Binding::Browser(nonce))
    }

    /// Whether `token` is a current CSRF token of this browser (see
    /// [`csrf_token`](Self::csrf_token)); compared in constant time.
    pub fn check_csrf(&self, token: &str) -> bool {
        let state = self.state();
        if let Some((secret, id)) = live_secret(&state) {
            return self.web.signer().check(Binding::Session { secret: &secret, id: &id }, token);
        }
        state.nonce.as_deref().is_some_and(|nonce| self.web.signer().check(Binding::Browser(nonce), token))
    }

    /// Gives this browser a new cookie id and CSRF secret, if it has a session (done on every
    /// login, against session fixation). The connscope session, and everything cached in it,
    /// stays.
    pub fn renew_id(&self) {
        let entry = {
            let mut state = self.state();
            let Some(session) = state.session.clone().filter(|s| !s.is_ended()) else { return };
            let login = current_login(&state, None);
            self.adopt(&mut state, &session, login)
        };
        #[cfg(feature = "redis")]
        if self.web.shared().is_some() {
            let web = self.web.clone();
            drop(crate::cache::own_runtime().spawn(async move {
                if let Some(shared) = web.shared() {
                    shared.store(&web, &entry).await;
                }
            }));
        }
        #[cfg(not(feature = "redis"))]
        drop(entry);
    }

    /// Ends the session if there is one (releasing its values), deletes the cookie and gives
    /// the browser a new pre-session CSRF cookie. With sessions shared through Redis, the
    /// session ends on every instance (its record is deleted and the end broadcast; kept for
    /// later while Redis is away).
    pub async fn end(&self) -> ReleaseReport {
        let (session, entry) = {
            let mut state = self.state();
            let entry = state.id.take().and_then(|id| self.web.forget(&id)).or_else(|| state.entry.take());
            state.entry = None;
            state.secret = None;
            state.set_id = false;
            state.clear_id = true;
            state.nonce = Some(random_id());
            state.set_nonce = true;
            (state.session.take(), entry)
        };
        #[cfg(feature = "redis")]
        let everywhere = match (self.web.shared(), entry.as_ref().and_then(|e| e.shared.as_ref())) {
            (Some(shared), Some(record)) => {
                Some(shared.end_everywhere_in_background(&self.web, &record.digest))
            }
            _ => None,
        };
        let _ = entry;
        let report = match session {
            Some(session) => session.end().await,
            None => ReleaseReport::default(),
        };
        #[cfg(feature = "redis")]
        if let Some(everywhere) = everywhere {
            // Done (or kept for later) within the tier's command timeout; it goes on if this
            // request is dropped.
            let _ = everywhere.await;
        }
        report
    }

    /// Logs this browser in to connection `name`: in its session if it has one, else in a new
    /// session that is kept only if the login works (ended otherwise, also when this future is
    /// dropped). On success the browser gets a new cookie id and CSRF secret.
    pub(crate) async fn log_in<P: Connection>(&self, name: &str, settings: P) -> Result<(), Error> {
        let (session, fresh) = match self.session() {
            Some(session) => (session, false),
            None => (self.web.runtime().session(), true),
        };
        let mut guard = EndOnDrop(fresh.then(|| session.clone()));
        match session.login(name, settings).await {
            Ok(_) => {
                guard.0 = None;
                let entry = {
                    let mut state = self.state();
                    let login = current_login(&state, Some(name));
                    let entry = self.adopt(&mut state, &session, login);
                    state.session = Some(session);
                    entry
                };
                // Stored before the browser is sent on, so its next request resolves anywhere.
                #[cfg(feature = "redis")]
                if let Some(shared) = self.web.shared() {
                    shared.store(&self.web, &entry).await;
                }
                let _ = entry;
                Ok(())
            }
            Err(e) => {
                if fresh {
                    let _ = session.end().await;
                }
                guard.0 = None;
                Err(e)
            }
        }
    }

    /// Registers `session` under a new id (dropping the current one) with a new CSRF secret.
    fn adopt(&self, state: &mut RequestState, session: &Session, login: Login) -> Entry {
        let (id, entry) = self.web.register(session, state.id.as_deref(), login);
        state.id = Some(id);
        state.secret = Some(Arc::clone(&entry.secret));
        state.entry = Some(entry.clone());
        state.set_id = true;
        state.clear_id = false;
        entry
    }

    /// Whether this browser logged in to connection `name` on another instance only (its
    /// session was taken over from there): the login must be made again here.
    pub(crate) fn logged_in_elsewhere(&self, name: &str) -> bool {
        self.state().entry.as_ref().is_some_and(|e| e.elsewhere.iter().any(|n| &**n == name))
    }

    pub(crate) fn web(&self) -> &WebSessions {
        &self.web
    }

    fn state(&self) -> MutexGuard<'_, RequestState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The logins of the session in `state`, with `name` logged in here now.
fn current_login(state: &RequestState, name: Option<&str>) -> Login {
    let (mut logins, mut elsewhere): (Vec<Arc<str>>, Vec<Arc<str>>) = match &state.entry {
        Some(e) => (e.logins.to_vec(), e.elsewhere.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    if let Some(name) = name {
        elsewhere.retain(|n| &**n != name);
        if !logins.iter().any(|n| &**n == name) {
            logins.push(Arc::from(name));
        }
    }
    Login { logins: logins.into(), elsewhere: elsewhere.into() }
}

/// The CSRF secret and cookie id of the session, while it is live.
fn live_secret(state: &RequestState) -> Option<(Arc<str>, String)> {
    let live = state.session.as_ref().filter(|s| !s.is_ended());
    live.and(state.secret.clone()).zip(state.id.clone())
}

/// Ends a session created for a login attempt if the attempt is dropped half-way.
struct EndOnDrop(Option<Session>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.0.take()
            && let Ok(tokio) = tokio::runtime::Handle::try_current()
        {
            tokio.spawn(async move { session.end().await });
        }
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

pub(crate) async fn middleware(State(web): State<WebSessions>, mut req: Request, next: Next) -> Response {
    let config = web.config();
    // Starts the shared sessions (and loads the shared CSRF key) on the first request.
    #[cfg(feature = "redis")]
    let _ = web.shared();
    let cookie = cookie_value(&req, &config.cookie);
    let resolved = match cookie.as_deref() {
        Some(id) => web.resolve(id).await,
        None => Resolved::Unknown,
    };
    let mut state = RequestState {
        nonce: cookie_value(&req, &config.csrf_cookie).filter(|n| n.len() == 64),
        // A cookie naming no live session (ended, or never issued) is deleted; nothing is made.
        clear_id: matches!(resolved, Resolved::Gone),
        ..RequestState::default()
    };
    if let Resolved::Found(entry) = resolved {
        state.session = Some(entry.session.clone());
        state.secret = Some(Arc::clone(&entry.secret));
        state.entry = Some(entry);
        state.id = cookie;
    }
    let session = state.session.clone();
    let handle = WebSession { web: web.clone(), state: Arc::new(Mutex::new(state)) };
    req.extensions_mut().insert(handle.clone());
    let login_route = req.uri().path() == config.login_path || req.uri().path() == config.logout_path;
    let mut response = match session {
        Some(session) => session.run(next.run(req)).await,
        None => next.run(req).await,
    };
    if login_route && response.status() == StatusCode::NOT_FOUND {
        // The configured paths are not routed: most likely the free `login_routes` (which
        // mounts `/login` and `/logout`) next to a `login_path` / `logout_path` of the app's own.
        tracing::error!(
            login_path = %config.login_path,
            logout_path = %config.logout_path,
            "connscope: nothing is served at the configured login or logout path: merge `web.login_routes::<P>()`, which mounts them where they are configured"
        );
    }
    let state = handle.state();
    let headers = response.headers_mut();
    match (&state.id, state.set_id, state.clear_id) {
        (Some(id), true, _) => headers.append(SET_COOKIE, web.cookie(&config.cookie, Some(id))),
        (_, _, true) => headers.append(SET_COOKIE, web.cookie(&config.cookie, None)),
        _ => false,
    };
    if let (true, Some(nonce)) = (state.set_nonce, &state.nonce) {
        headers.append(SET_COOKIE, web.cookie(&config.csrf_cookie, Some(nonce)));
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
