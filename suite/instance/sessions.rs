//! One app instance for the sessions-across-instances test (`suite/tests/redis_sessions.rs`):
//! an axum app on a free loopback port (printed on stdout as `port=N`), its runtime configured
//! from the secrets file given as the first argument (`[redis] prefix`, the URL from
//! `REDIS_URL`). It has a login form (provider `Login`, password `<user>-pw`) and a
//! session-scoped connection `counted` whose connects and closes it counts and shows at
//! `/counts`, and the state of its Redis tier at `/redis`. `/end` ends the session with
//! `Session::end`; `IDLE_MS` sets the idle timeout, `LIFETIME_MS` the session lifetime.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use connscope::web::{LoggedIn, WebSession, WebSessions, logout_button};
use connscope::{Connection, Provider, Secret};

static CONNECTS: AtomicU64 = AtomicU64::new(0);
static CLOSES: AtomicU64 = AtomicU64::new(0);

/// A session-scoped connection: one per session, counted.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "counted")]
struct Counted {
    #[serde(default)]
    label: String,
}

impl Provider for Counted {
    type Raw = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(CONNECTS.fetch_add(1, SeqCst) + 1)
    }
    async fn is_open(&self, _: &u64) -> bool {
        true
    }
    async fn close(&self, _: &u64) {
        CLOSES.fetch_add(1, SeqCst);
    }
}

/// The login connection: accepts the password `<user>-pw`.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "warehouse")]
struct Login {
    user: String,
    #[connection(secret)]
    password: Secret,
}

impl Provider for Login {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        if self.password.expose() == format!("{}-pw", self.user) {
            Ok(self.user.clone())
        } else {
            Err(std::io::Error::other("refused"))
        }
    }
    async fn is_open(&self, _: &String) -> bool {
        true
    }
}

/// Needs a session (from any instance): opens this instance's session-scoped `counted`.
async fn home(web: WebSession) -> Response {
    let Some(session) = web.session() else {
        return (StatusCode::UNAUTHORIZED, "no session").into_response();
    };
    let rt = web.runtime().clone();
    match session.run(async move { rt.connection::<Counted>("counted").await }).await {
        Ok(conn) => {
            let serial = conn.get().await.map(|c| *c).unwrap_or(0);
            Html(format!(
                "<p>session ok, connection {serial} ({})</p>{}",
                conn.provider().label,
                logout_button(&web)
            ))
            .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Needs the login connection, made on this instance.
async fn warehouse(LoggedIn(conn): LoggedIn<Login>) -> String {
    let user = conn.get().await.map(|u| (*u).clone()).unwrap_or_default();
    format!("warehouse of {user}")
}

/// Ends the session behind the web layer's back (as an app may, with `Session::end`).
async fn end(web: WebSession) -> &'static str {
    match web.session() {
        Some(session) => {
            session.end().await;
            "ended"
        }
        None => "no session",
    }
}

/// The state of this instance's Redis tier: `Some(Up)`, `Some(Down)`…
async fn redis_state(web: WebSession) -> String {
    format!("{:?}", web.runtime().redis_stats().and_then(|s| s.state))
}

async fn counts() -> String {
    format!("connects={} closes={}", CONNECTS.load(SeqCst), CLOSES.load(SeqCst))
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=connscope=debug` to see what the instance does (on stderr).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let secrets = std::env::args().nth(1).expect("usage: session-instance <secrets.toml>");
    let mut builder = connscope::Runtime::builder().secrets_file(secrets);
    if let Some(ms) = std::env::var("IDLE_MS").ok().and_then(|ms| ms.parse().ok()) {
        builder = builder.idle_timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(ms) = std::env::var("LIFETIME_MS").ok().and_then(|ms| ms.parse().ok()) {
        builder = builder.max_session_lifetime(std::time::Duration::from_millis(ms));
    }
    let rt = builder.build();
    let web = WebSessions::new(rt.clone()).title("Instance");
    let app = Router::new()
        .route("/", get(home))
        .route("/warehouse", get(warehouse))
        .route("/counts", get(counts))
        .route("/redis", get(redis_state))
        .route("/end", get(end))
        .merge(web.login_routes::<Login>())
        .layer(web.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    println!("port={}", listener.local_addr().expect("local address").port());
    axum::serve(listener, app).await.expect("serve");
}
