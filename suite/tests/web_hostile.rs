//! The axum integration against hostile clients, in process (no sockets) so that Tokio's time
//! can be paused: cookie-less floods create no session, CSRF tokens are signed, bound to the
//! browser, expire and rotate, a failed login names no server and reads the same whatever the
//! cause, repeated failures back off without connecting, and the cookie of a session the
//! runtime ended means nothing.
#![cfg(feature = "axum")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use axum::response::Html;
use axum::routing::get;
use connscope::web::{LoggedIn, LoginThrottle, WebSession, WebSessions, login_routes, logout_button};
use connscope::{Connection, Provider, Runtime, Secret};
use tower::ServiceExt;

/// Calls of `PgLikeLogin::connect`, per user name, whatever their outcome.
static ATTEMPTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

fn attempts(user: &str) -> u64 {
    ATTEMPTS.lock().unwrap().get(user).copied().unwrap_or(0)
}

/// A database login whose errors read like PostgreSQL's: they name the server, its address,
/// its port and the role. Users named `nobody…` do not exist; the others' password is
/// `<user>-pw`; user `hang` never gets an answer.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "pg", health_check = "every_use")]
struct PgLikeLogin {
    user: String,
    #[connection(secret)]
    password: Secret,
}

#[derive(Debug, thiserror::Error)]
enum PgLikeError {
    #[error(
        "connection to server at \"db.internal.example\" (10.1.2.3), port 5432 failed: FATAL:  password authentication failed for user \"{0}\""
    )]
    WrongPassword(String),
    #[error(
        "connection to server at \"db.internal.example\" (10.1.2.3), port 5432 failed: FATAL:  role \"{0}\" does not exist"
    )]
    UnknownRole(String),
}

impl Provider for PgLikeLogin {
    type Raw = ();
    type Error = PgLikeError;
    async fn connect(&self) -> Result<(), PgLikeError> {
        *ATTEMPTS.lock().unwrap().entry(self.user.clone()).or_default() += 1;
        if self.user == "hang" {
            std::future::pending::<()>().await;
        }
        if self.user.starts_with("nobody") {
            return Err(PgLikeError::UnknownRole(self.user.clone()));
        }
        if self.password.expose() != format!("{}-pw", self.user) {
            return Err(PgLikeError::WrongPassword(self.user.clone()));
        }
        Ok(())
    }
    async fn is_open(&self, _raw: &()) -> bool {
        true
    }
}

async fn home(web: WebSession, LoggedIn(conn): LoggedIn<PgLikeLogin>) -> Html<String> {
    Html(format!("<h1>Hello {}</h1>{}", conn.provider().user, logout_button(&web)))
}

fn app(rt: &Runtime) -> Router {
    app_with(WebSessions::new(rt.clone()))
}

fn app_with(web: WebSessions) -> Router {
    Router::new().route("/", get(home)).merge(login_routes::<PgLikeLogin>()).layer(web.layer())
}

/// A browser calling the router in process: keeps cookies, follows no redirect.
struct Browser {
    app: Router,
    cookies: HashMap<String, String>,
    peer: Option<SocketAddr>,
    /// An `x-client` header on every request.
    client: Option<&'static str>,
}

/// A response as the browser got it.
struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Vec<String>,
    retry_after: Option<String>,
    html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self.html.find(r#"name="_csrf" value=""#).expect("a form with a CSRF token") + 20;
        self.html[at..].split('"').next().unwrap().to_owned()
    }

    /// The text of the error paragraph.
    fn error(&self) -> &str {
        let at = self.html.find(r#"role="alert">"#).expect("an error paragraph") + 13;
        self.html[at..].split('<').next().unwrap()
    }

    fn redirects_to(&self, path: &str) -> bool {
        self.status == 303 && self.location.as_deref() == Some(path)
    }

    fn sets_cookie(&self, name: &str) -> bool {
        self.set_cookie.iter().any(|c| c.starts_with(&format!("{name}=")))
    }
}

impl Browser {
    fn new(app: &Router) -> Browser {
        Browser { app: app.clone(), cookies: HashMap::new(), peer: None, client: None }
    }

    /// A browser whose requests come from `ip` (as `axum::serve` with connect info reports).
    fn at(app: &Router, ip: [u8; 4]) -> Browser {
        Browser { peer: Some(SocketAddr::from((ip, 40000))), ..Browser::new(app) }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        let req = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(req, Body::from(body.join("&"))).await
    }

    /// Opens the login page and submits it.
    async fn login(&mut self, user: &str, password: &str) -> Page {
        let token = self.get("/login").await.csrf();
        self.submit(&token, user, password).await
    }

    /// Submits the login form with this CSRF token.
    async fn submit(&mut self, token: &str, user: &str, password: &str) -> Page {
        self.post("/login", &[("_csrf", token), ("user", user), ("password", password)]).await
    }

    async fn send(&mut self, mut req: axum::http::request::Builder, body: Body) -> Page {
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, jar.join("; "));
        }
        if let Some(client) = self.client {
            req = req.header("x-client", client);
        }
        let mut req = req.body(body).unwrap();
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let header_str =
            |name| resp.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned());
        let (location, retry_after) = (header_str(header::LOCATION), header_str(header::RETRY_AFTER));
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookie {
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Page { status, location, set_cookie, retry_after, html: String::from_utf8(bytes.to_vec()).unwrap() }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Lets spawned work (a session ended in the background) run, on paused time.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn cookie_less_requests_create_no_session() {
    let rt = support::runtime().build();
    let app = app(&rt);
    for _ in 0..500 {
        let page = Browser::new(&app).get("/").await;
        assert!(page.redirects_to("/login"));
        assert!(!page.sets_cookie("connscope_session"), "{:?}", page.set_cookie);
    }
    for _ in 0..100 {
        let page = Browser::new(&app).get("/login").await;
        assert_eq!(page.status, 200);
        assert!(!page.csrf().is_empty());
        assert!(!page.sets_cookie("connscope_session"), "{:?}", page.set_cookie);
    }
    assert_eq!(rt.session_count(), 0, "600 cookie-less requests, no session");

    // A failed login creates nothing either; a successful one creates exactly one session.
    assert_eq!(Browser::new(&app).login("nobody-fred", "guess").await.status, 401);
    assert_eq!(rt.session_count(), 0);
    let mut ada = Browser::new(&app);
    assert!(ada.login("ada", "ada-pw").await.redirects_to("/"));
    assert_eq!(rt.session_count(), 1);
    assert_eq!(ada.get("/").await.status, 200, "logged in");
    assert_eq!(rt.session_count(), 1);
    let report = rt.shutdown().await;
    assert_eq!((report.released, report.failures.len()), (1, 0));
}

#[tokio::test]
async fn the_csrf_token_rotates_on_login_and_on_logout() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let mut b = Browser::new(&app);
    let before_login = b.get("/login").await.csrf();
    let page = b.submit(&before_login, "rosa", "rosa-pw").await;
    assert!(page.redirects_to("/"), "{}", page.html);
    let logged_in = b.get("/").await.csrf();
    assert_ne!(before_login, logged_in, "a new token on login");
    assert_eq!(b.post("/logout", &[("_csrf", &before_login)]).await.status, 403, "the old one is refused");
    assert_eq!(b.get("/").await.status, 200, "still logged in");

    assert!(b.post("/logout", &[("_csrf", &logged_in)]).await.redirects_to("/login?logged_out"));
    let after_logout = b.get("/login").await.csrf();
    assert_ne!(after_logout, logged_in, "a new token on logout");
    assert_ne!(after_logout, before_login);
    assert_eq!(
        b.submit(&logged_in, "rosa", "rosa-pw").await.status,
        403,
        "the ended session's token is refused"
    );
    assert_eq!(rt.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_csrf_token_is_bound_to_its_browser_and_expires_after_an_hour() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let (mut a, mut b) = (Browser::new(&app), Browser::new(&app));
    let token = a.get("/login").await.csrf();
    b.get("/login").await;
    assert_eq!(b.submit(&token, "tess", "tess-pw").await.status, 403, "another browser's token");
    assert_eq!(attempts("tess"), 0);
    assert_eq!(a.submit("forged.token", "tess", "tess-pw").await.status, 403, "a made-up token");

    tokio::time::advance(Duration::from_secs(3600) + Duration::from_secs(1)).await;
    assert_eq!(a.submit(&token, "tess", "tess-pw").await.status, 403, "expired after an hour");
    assert_eq!(attempts("tess"), 0, "refused before connecting");
    let fresh = a.get("/login").await.csrf();
    assert!(a.submit(&fresh, "tess", "tess-pw").await.redirects_to("/"), "a fresh page works");
    let report = rt.shutdown().await;
    assert_eq!(report.released, 1);
}

#[tokio::test]
async fn a_failed_login_names_no_server_and_reads_the_same_for_any_cause() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let mut b = Browser::new(&app);
    let wrong = b.login("ursula", "guess").await;
    let unknown = b.login("nobody-ursula", "guess").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.error(), unknown.error(), "a wrong password and an unknown user read the same");
    for page in [&wrong, &unknown] {
        for leak in
            ["db.internal.example", "10.1.2.3", "5432", "FATAL", "does not exist", "authentication", "`pg`"]
        {
            assert!(!page.html.contains(leak), "`{leak}` on the page: {}", page.html);
        }
        assert!(!page.error().contains("ursula"), "no user named in the error: {}", page.error());
        assert!(!page.html.contains("guess"), "the password is never echoed");
    }
    // Apart from the token and the user name typed, the two pages are the same page.
    let same = |p: &Page, user: &str| p.html.replace(&p.csrf(), "TOKEN").replace(user, "USER");
    assert_eq!(same(&wrong, "ursula"), same(&unknown, "nobody-ursula"));
    assert_eq!(rt.session_count(), 0);
}

/// The SQLite-backed `SqlLogin`: a database that cannot be opened is not named on the page.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sql_login_failure_names_no_database() {
    type Login = connscope::sql::SqlLogin<connscope::sql::sqlx::Sqlite>;
    let url = "sqlite:///nonexistent-connscope-dir/warehouse_private.db?mode=ro";
    let rt = support::runtime().connection_setting("warehouse", "url", url).build();
    let web = WebSessions::new(rt.clone()).connection_name::<Login>("warehouse");
    let app = Router::new().merge(login_routes::<Login>()).layer(web.layer());
    let mut b = Browser::new(&app);
    let page = b.login("ada", "pw").await;
    assert_eq!(page.status, 401, "{}", page.html);
    for leak in ["nonexistent-connscope-dir", "warehouse_private", "sqlite:", "warehouse", "ada"] {
        assert!(!page.error().contains(leak), "`{leak}` in the error: {}", page.error());
    }
    assert!(!page.html.contains("warehouse_private"), "{}", page.html);
    assert_eq!(rt.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_for_one_user_back_off_without_connecting() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let mut b = Browser::new(&app);
    for n in 1..=5 {
        assert_eq!(b.login("vera", "guess").await.status, 401);
        assert_eq!(attempts("vera"), n);
    }
    // The sixth attempt within a second is refused without connecting, even with the password.
    let page = b.login("vera", "vera-pw").await;
    assert_eq!(page.status, 429, "{}", page.html);
    assert_eq!(page.error(), "too many failed logins: try again in 1s");
    assert_eq!(page.retry_after.as_deref(), Some("1"));
    assert_eq!(attempts("vera"), 5, "refused without a connect");
    assert!(page.html.contains(r#"name="password" type="password""#), "the form again");
    assert_eq!(rt.session_count(), 0);
    // Another user (another browser) is not held back.
    assert!(Browser::new(&app).login("walt", "walt-pw").await.redirects_to("/"));

    // After the window, one more try; its failure doubles the window.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(b.login("vera", "guess").await.status, 429);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.login("vera", "guess").await.status, 401);
    assert_eq!(attempts("vera"), 6);
    let page = b.login("vera", "vera-pw").await;
    assert_eq!((page.status, page.retry_after.as_deref()), (429, Some("2")));
    tokio::time::advance(Duration::from_secs(2)).await;

    // A success resets: five failures are free again.
    assert!(b.login("vera", "vera-pw").await.redirects_to("/"));
    assert_eq!(attempts("vera"), 7);
    let mut other = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(other.login("vera", "guess").await.status, 401);
    }
    assert_eq!(attempts("vera"), 12);
    assert_eq!(other.login("vera", "guess").await.status, 429);
    let report = rt.shutdown().await;
    assert_eq!(report.released, 2, "walt's and vera's logins");
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_from_one_client_back_off_whatever_the_user_name() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let mut spray = Browser::at(&app, [192, 0, 2, 7]);
    for n in 0..20 {
        assert_eq!(spray.login(&format!("spray-{n}"), "guess").await.status, 401);
    }
    let page = spray.login("spray-20", "guess").await;
    assert_eq!(page.status, 429, "the 21st failure in a row from one address: {}", page.html);
    assert_eq!(attempts("spray-20"), 0, "refused without a connect");
    let mut neighbour = Browser::at(&app, [192, 0, 2, 8]);
    assert_eq!(neighbour.login("spray-21", "guess").await.status, 401, "another address is not held back");
    assert_eq!(attempts("spray-21"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_throttle_takes_the_apps_policy_and_client_key() {
    let rt = support::runtime().build();
    let throttle = LoginThrottle::default()
        .max_failures(2)
        .max_failures_per_client(3)
        .first_delay(Duration::from_secs(10))
        .client_key(|parts| parts.headers.get("x-client")?.to_str().ok().map(str::to_owned));
    let app = app_with(WebSessions::new(rt.clone()).login_throttle(throttle));
    let mut b = Browser { client: Some("proxy-says-1"), ..Browser::new(&app) };
    assert_eq!(b.login("yann", "guess").await.status, 401);
    assert_eq!(b.login("YANN ", "guess").await.status, 401, "user names compare without case");
    let page = b.login("yann", "yann-pw").await;
    assert_eq!((page.status, page.retry_after.as_deref()), (429, Some("10")));
    assert_eq!(attempts("yann"), 1);
    assert_eq!(attempts("YANN "), 1);
    assert_eq!(b.login("yuri", "guess").await.status, 401, "the client's third failure");
    assert_eq!(b.login("yves", "yves-pw").await.status, 429, "the client waits now");
    assert_eq!(attempts("yves"), 0);
    let mut other = Browser { client: Some("proxy-says-2"), ..Browser::new(&app) };
    assert!(other.login("yves", "yves-pw").await.redirects_to("/"));

    let app = app_with(WebSessions::new(rt.clone()).login_throttle(LoginThrottle::off()));
    let mut b = Browser::new(&app);
    for _ in 0..30 {
        assert_eq!(b.login("zoe", "guess").await.status, 401);
    }
    assert_eq!(attempts("zoe"), 30, "off: every attempt connects");
    assert_eq!(rt.shutdown().await.released, 1);
}

#[tokio::test]
async fn the_cookie_of_a_session_ended_behind_the_web_layers_back_is_no_session() {
    static GRABBED: Mutex<Option<connscope::Session>> = Mutex::new(None);
    async fn grab(web: WebSession) -> &'static str {
        *GRABBED.lock().unwrap() = web.session();
        "grabbed"
    }
    let rt = support::runtime().build();
    let web = WebSessions::new(rt.clone());
    let app = Router::new()
        .route("/", get(home))
        .route("/grab", get(grab))
        .merge(login_routes::<PgLikeLogin>())
        .layer(web.layer());
    let mut b = Browser::new(&app);
    assert!(b.login("yolanda", "yolanda-pw").await.redirects_to("/"));
    assert_eq!(b.get("/grab").await.html, "grabbed");
    let session = GRABBED.lock().unwrap().take().expect("the logged-in browser's session");
    assert_eq!(session.end().await.released, 1, "ended by the runtime (idle, lifetime, shutdown of it)");

    let page = b.get("/").await;
    assert!(page.redirects_to("/login"), "the cookie means nothing now");
    assert!(page.set_cookie.iter().any(|c| c.starts_with("connscope_session=;") && c.contains("Max-Age=0")));
    assert!(!b.cookies.contains_key("connscope_session"), "deleted");
    assert_eq!(rt.session_count(), 0, "and it created nothing");
    assert!(b.login("yolanda", "yolanda-pw").await.redirects_to("/"), "logging in again works");
    assert_eq!(b.get("/").await.status, 200);
    assert_eq!(rt.session_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_cookie_of_a_session_the_runtime_ended_is_no_session() {
    let rt = support::runtime().idle_timeout(Duration::from_secs(60)).build();
    let app = app(&rt);
    let mut b = Browser::new(&app);
    assert!(b.login("xena", "xena-pw").await.redirects_to("/"));
    assert_eq!(b.get("/").await.status, 200);
    assert_eq!(rt.session_count(), 1);

    tokio::time::advance(Duration::from_secs(120)).await;
    rt.run_maintenance().await;
    until("the idle session ended", || rt.session_count() == 0).await;
    let page = b.get("/").await;
    assert!(page.redirects_to("/login"), "the cookie means nothing now");
    assert!(page.set_cookie.iter().any(|c| c.starts_with("connscope_session=;") && c.contains("Max-Age=0")));
    assert_eq!(rt.session_count(), 0, "and it created nothing");

    // A made-up id creates nothing either.
    let mut forged = Browser::new(&app);
    forged.cookies.insert("connscope_session".into(), "ab".repeat(32));
    assert!(forged.get("/").await.redirects_to("/login"));
    assert_eq!(forged.get("/login").await.status, 200);
    assert_eq!(rt.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_login_whose_request_is_dropped_leaves_no_session() {
    let rt = support::runtime().build();
    let app = app(&rt);
    let mut b = Browser::new(&app);
    let token = b.get("/login").await.csrf();
    let login = b.submit(&token, "hang", "hang-pw");
    assert!(tokio::time::timeout(Duration::from_secs(30), login).await.is_err(), "the client gave up");
    assert_eq!(attempts("hang"), 1);
    until("the abandoned login's session ended", || rt.session_count() == 0).await;
}

/// Home for the custom-path app: the logout button follows the configuration.
async fn home_with_button(web: WebSession, LoggedIn(conn): LoggedIn<PgLikeLogin>) -> Html<String> {
    Html(format!("<h1>Hello {}</h1>{}", conn.provider().user, logout_button(&web)))
}

#[tokio::test(start_paused = true)]
async fn every_login_path_follows_the_configuration() {
    let rt = support::runtime().build();
    let web = WebSessions::new(rt.clone())
        .login_path("/signin")
        .logout_path("/account/signout")
        .title("Sales <dashboard>")
        .login_throttle(LoginThrottle::default().max_failures(2));
    let app = Router::new()
        .route("/", get(home_with_button))
        .merge(web.login_routes::<PgLikeLogin>())
        .layer(web.layer());
    let mut b = Browser::new(&app);

    // The gate sends the browser to the configured page; nothing is served at the defaults.
    assert!(b.get("/").await.redirects_to("/signin"));
    assert_eq!(b.get("/login").await.status, 404);
    assert_eq!(b.post("/logout", &[]).await.status, 404);
    let form = b.get("/signin").await;
    assert_eq!(form.status, 200);
    assert!(form.html.contains(r#"<form method="post" action="/signin">"#), "{}", form.html);
    assert!(form.html.contains("Sales &lt;dashboard&gt;"), "the app's title, escaped: {}", form.html);
    assert!(!form.html.contains("role=\"status\""), "no notice before a logout");

    // CSRF holds on the custom path: a forged token is refused before connecting.
    assert_eq!(
        b.post("/signin", &[("_csrf", "forged"), ("user", "yannick"), ("password", "yannick-pw")])
            .await
            .status,
        403
    );
    assert_eq!(attempts("yannick"), 0);

    // A wrong password: the error, styled as one, on the custom page.
    let failed =
        b.post("/signin", &[("_csrf", &form.csrf()), ("user", "yannick"), ("password", "guess")]).await;
    assert_eq!(failed.status, 401);
    assert_eq!(failed.error(), connscope::web::LOGIN_FAILED);
    assert!(failed.html.contains(r#"<p class="error" role="alert">"#));
    assert!(failed.html.contains(r#"action="/signin""#));

    // Logging in through the custom path works.
    let page = b
        .post("/signin", &[("_csrf", &failed.csrf()), ("user", "yannick"), ("password", "yannick-pw")])
        .await;
    assert!(page.redirects_to("/"), "{} {:?}", page.status, page.location);
    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.html.contains("Hello yannick"));
    assert!(home.html.contains(r#"action="/account/signout""#), "the logout button follows: {}", home.html);
    assert_eq!(rt.session_count(), 1);

    // Logout on the custom path: back to the custom login page, which says so.
    let out = b.post("/account/signout", &[("_csrf", &home.csrf())]).await;
    assert!(out.redirects_to("/signin?logged_out"), "{:?}", out.location);
    assert_eq!(rt.session_count(), 0);
    let notice = b.get("/signin?logged_out").await;
    assert!(
        notice
            .html
            .contains(&format!(r#"<p class="notice" role="status">{}</p>"#, connscope::web::LOGGED_OUT)),
        "{}",
        notice.html
    );
    assert!(b.get("/").await.redirects_to("/signin"), "gated again");

    // The throttle holds on the custom path too: the third failure in a row waits.
    let mut m = Browser::new(&app);
    for _ in 0..2 {
        let token = m.get("/signin").await.csrf();
        assert_eq!(
            m.post("/signin", &[("_csrf", &token), ("user", "wanda"), ("password", "x")]).await.status,
            401
        );
    }
    let token = m.get("/signin").await.csrf();
    let refused = m.post("/signin", &[("_csrf", &token), ("user", "wanda"), ("password", "wanda-pw")]).await;
    assert_eq!(refused.status, 429);
    assert!(refused.html.contains(r#"action="/signin""#));
    assert_eq!(attempts("wanda"), 2, "the throttled attempt never reached connect");
    let report = rt.shutdown().await;
    assert!(report.is_ok());
}

#[tokio::test]
async fn the_login_page_can_be_the_apps_own_template() {
    use connscope::web::{LoginPage, escape_html};
    let rt = support::runtime().build();
    let template = |page: &LoginPage<'_>| {
        let fields: Vec<String> = page
            .fields
            .iter()
            .map(|f| format!("{}:{}:{}", f.field.name, f.input_type(), escape_html(f.value)))
            .collect();
        format!(
            "<html><title>{}</title><div id=\"mine\">{}</div><div id=\"err\">{}</div><form action=\"{}\">{}</form>",
            escape_html(page.title),
            fields.join(","),
            page.error.map(escape_html).unwrap_or_default(),
            escape_html(page.action),
            page.csrf_field(),
        )
    };
    let web = WebSessions::new(rt.clone()).title("Acme").login_path("/in").login_template(template);
    let app = Router::new().route("/", get(home)).merge(web.login_routes::<PgLikeLogin>()).layer(web.layer());
    let mut b = Browser::new(&app);
    let page = b.get("/in").await;
    assert!(page.html.starts_with("<html><title>Acme</title>"), "{}", page.html);
    assert!(page.html.contains(r#"<div id="mine">user:text:,password:password:</div>"#), "{}", page.html);
    assert!(page.html.contains(r#"<form action="/in"><input type="hidden" name="_csrf" value=""#));
    let failed = b.post("/in", &[("_csrf", &page.csrf()), ("user", "<xena>"), ("password", "guess")]).await;
    assert_eq!(failed.status, 401);
    assert!(failed.html.contains(&format!(r#"<div id="err">{}</div>"#, connscope::web::LOGIN_FAILED)));
    assert!(failed.html.contains("user:text:&lt;xena&gt;"), "the typed user name, escaped: {}", failed.html);
    assert!(!failed.html.contains("guess"), "the password is never handed to the template");
    let ok = b.post("/in", &[("_csrf", &failed.csrf()), ("user", "xena"), ("password", "xena-pw")]).await;
    assert!(ok.redirects_to("/"));
    assert_eq!(b.get("/").await.status, 200);
    rt.shutdown().await;
}
