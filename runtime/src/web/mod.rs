//! The axum/tower integration: a session-cookie layer that runs each request inside the user's
//! [`Session`](crate::Session), a [`LoggedIn`] extractor that redirects to the login page, and login/logout
//! handlers that render and accept a provider's derived login form (with CSRF protection).
//!
//! ```no_run
//! # use connscope::{Connection, Provider};
//! # #[derive(Connection, serde::Deserialize)] #[connection(scope = "session")]
//! # struct Warehouse { user: String, #[connection(secret)] password: connscope::Secret }
//! # impl Provider for Warehouse { type Raw = (); type Error = std::io::Error;
//! #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
//! #   async fn is_open(&self, _: &()) -> bool { true } }
//! use axum::{Router, routing::get};
//! use connscope::web::{LoggedIn, WebSessions, login_routes};
//!
//! async fn home(LoggedIn(conn): LoggedIn<Warehouse>) -> String {
//!     format!("logged in to {}", conn.name())
//! }
//!
//! # async fn run() {
//! let rt = connscope::Runtime::builder().build();
//! let web = WebSessions::new(rt);
//! let app: Router = Router::new()
//!     .route("/", get(home))
//!     .merge(login_routes::<Warehouse>())
//!     .layer(web.layer());
//! # }
//! ```

mod form;
mod sessions;

pub use form::{LoggedIn, escape_html, login_form, login_routes, login_submit, logout, logout_button};
pub use sessions::{SessionLayer, WebSession, WebSessions};
