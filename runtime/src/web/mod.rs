//! The axum/tower integration: a session-cookie layer that runs each request of a logged-in
//! browser inside its [`Session`](crate::Session), a [`LoggedIn`] extractor that redirects to the
//! login page, and login/logout handlers that render and accept a provider's derived login form.
//!
//! What it guarantees against hostile clients:
//!
//! * A request without a valid session cookie creates no session and no server-side state:
//!   only a successful login creates a session. A cookie whose session ended (logout, the
//!   runtime's idle timeout or session lifetime) is deleted and means nothing.
//! * Forms carry a signed CSRF token ([HMAC-SHA256] with a random key per [`WebSessions`]),
//!   bound to the browser (a pre-session cookie, then the session), expiring after an hour,
//!   and replaced on login and on logout.
//! * A failed login reads [`LOGIN_FAILED`] whatever the cause, naming no server, database or
//!   user; the cause is logged with `tracing`.
//! * Repeated failures for one account or from one client back off ([`LoginThrottle`]) without
//!   reaching the provider's `connect`.
//!
//! With several instances sharing a Redis (feature `redis`, when the runtime has a tier), a
//! session cookie resolves on every instance (a record per logged-in browser, under a digest of
//! the cookie id), a logout ends the session on every instance, and a page needing a login
//! connection made on another instance asks for the login again ([`LOG_IN_HERE`]). See the
//! README's "Sessions across instances".
//!
//! [HMAC-SHA256]: https://datatracker.ietf.org/doc/html/rfc2104
//!
//! ```no_run
//! # use connscope::{Connection, Provider};
//! # #[derive(Connection, serde::Deserialize)] #[connection(scope = "session")]
//! # struct Warehouse { user: String, #[connection(secret)] password: connscope::Secret }
//! # impl Provider for Warehouse { type Raw = (); type Error = std::io::Error;
//! #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
//! #   async fn is_open(&self, _: &()) -> bool { true } }
//! use axum::{Router, routing::get};
//! use connscope::web::{LoggedIn, WebSessions};
//!
//! async fn home(LoggedIn(conn): LoggedIn<Warehouse>) -> String {
//!     format!("logged in to {}", conn.name())
//! }
//!
//! # async fn run() {
//! let rt = connscope::Runtime::builder().build();
//! let web = WebSessions::new(rt).title("Warehouse");   // .login_path("/signin")…
//! let app: Router = Router::new()
//!     .route("/", get(home))
//!     .merge(web.login_routes::<Warehouse>())       // the login form, its submission, logout
//!     .layer(web.layer());
//! # }
//! ```

mod csrf;
mod form;
mod handle;
mod page;
mod sessions;
#[cfg(feature = "redis")]
mod shared;
mod throttle;

#[cfg(feature = "redis")]
pub(crate) use csrf::hex;

pub use form::{
    LOGIN_FAILED, LoggedIn, escape_html, login_form, login_routes, login_submit, logout, logout_button,
};
pub use page::{
    DefaultLoginPage, LOG_IN_HERE, LOGGED_OUT, LoginField, LoginPage, LoginTemplate, default_login_page,
};
pub use sessions::{SessionLayer, WebSession, WebSessions};
pub use throttle::{ClientKey, LoginThrottle};
