//! The axum integration end to end over real HTTP with a cookie-keeping client: login form,
//! gating, wrong password, two users, logout, a connection found closed, CSRF.
#![cfg(feature = "axum")]

mod support;

use std::sync::atomic::Ordering::SeqCst;

use axum::Router;
use axum::routing::get;
use connscope::web::{LoggedIn, WebSession, WebSessions, login_routes, logout_button};
use connscope::{Connection, Provider, Runtime, Secret};
use support::{Client, Refused, probe};

/// A per-user database login: the password must be "<user>-pw".
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "db", health_check = "every_use")]
struct DbLogin {
    user: String,
    #[connection(secret)]
    password: Secret,
}

impl Provider for DbLogin {
    type Raw = Client;
    type Error = Refused;
    async fn connect(&self) -> Result<Client, Refused> {
        if self.password.expose() != format!("{}-pw", self.user) {
            return Err(Refused);
        }
        let p = probe(&format!("web-{}", self.user));
        p.set_open(true);
        let serial = p.connects.fetch_add(1, SeqCst) + 1;
        Ok(Client { serial })
    }
    async fn is_open(&self, _raw: &Client) -> bool {
        probe(&format!("web-{}", self.user)).open.load(SeqCst)
    }
    async fn close(&self, _raw: &Client) {
        probe(&format!("web-{}", self.user)).closes.fetch_add(1, SeqCst);
    }
}

async fn home(web: WebSession, LoggedIn(conn): LoggedIn<DbLogin>) -> axum::response::Html<String> {
    let user = conn.provider().user.clone();
    axum::response::Html(format!(
        "<h1>Dashboard</h1><table><tr><td>user</td><td>{user}</td></tr></table>{}",
        logout_button(&web)
    ))
}

async fn serve() -> (String, Runtime) {
    let rt = support::runtime().build();
    let web = WebSessions::new(rt.clone());
    let app = Router::new().route("/", get(home)).merge(login_routes::<DbLogin>()).layer(web.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rt)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().unwrap()
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn login(client: &reqwest::Client, base: &str, user: &str, password: &str) -> (u16, String) {
    let page = client.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    let form = [("_csrf", csrf(&page)), ("user", user.to_owned()), ("password", password.to_owned())];
    let resp = client.post(format!("{base}/login")).form(&form).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn a_gated_page_redirects_to_the_login_form() {
    let (base, _rt) = serve().await;
    let resp = browser().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/login");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"name="user" type="text""#), "{html}");
    assert!(html.contains(r#"name="password" type="password""#), "secret fields are password inputs: {html}");
}

#[tokio::test]
async fn a_wrong_password_shows_the_error_and_stores_nothing() {
    let (base, _rt) = serve().await;
    let client = browser();
    let (status, html) = login(&client, &base, "mallory", "guess").await;
    assert_eq!(status, 401);
    assert!(html.contains(connscope::web::LOGIN_FAILED), "{html}");
    assert!(!html.contains("guess"), "the typed password is never echoed");
    let resp = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/login", "still gated");
}

#[tokio::test]
async fn two_users_see_their_own_data_and_logout_releases_the_connection() {
    let (base, _rt) = serve().await;
    let (alice, bob) = (browser(), browser());
    let (status, html) = login(&alice, &base, "alice", "alice-pw").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<td>alice</td>"), "login shows the table: {html}");
    let (_, html) = login(&bob, &base, "bob", "bob-pw").await;
    assert!(html.contains("<td>bob</td>") && !html.contains("alice"));
    let html = alice.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<td>alice</td>") && !html.contains("bob"));

    let token = csrf(&html);
    let resp = alice.post(format!("{base}/logout")).form(&[("_csrf", token)]).send().await.unwrap();
    assert_eq!(resp.url().path(), "/login");
    assert_eq!(probe("web-alice").closes(), 1, "logout ended the session and closed its connection");
    let resp = alice.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/login");
    let html = bob.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<td>bob</td>"), "bob is unaffected");
}

#[tokio::test]
async fn a_connection_found_closed_sends_the_user_back_to_the_login_form() {
    let (base, _rt) = serve().await;
    let client = browser();
    let (_, html) = login(&client, &base, "carol", "carol-pw").await;
    assert!(html.contains("<td>carol</td>"));
    probe("web-carol").set_open(false); // the database dropped carol's connection
    let resp = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/login");
    assert_eq!(probe("web-carol").closes(), 1);
}

#[tokio::test]
async fn login_without_the_csrf_token_is_refused_and_the_session_cookie_is_issued_on_login() {
    let (base, rt) = serve().await;
    let client = browser();
    let form = [("user", "dave"), ("password", "dave-pw")];
    let resp = client.post(format!("{base}/login")).form(&form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    let raw = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = raw.get(format!("{base}/login")).send().await.unwrap();
    let cookies: Vec<&str> =
        page.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies.len(), 1, "only the pre-session CSRF cookie, no session: {cookies:?}");
    let first = cookies[0].to_owned();
    assert!(first.starts_with("connscope_session_csrf="), "{first}");
    assert!(first.contains("HttpOnly") && first.contains("SameSite=Lax"), "{first}");
    let cookie = first.split(';').next().unwrap().to_owned();
    let token = csrf(&page.text().await.unwrap());
    let resp = raw
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("_csrf", token.as_str()), ("user", "dave"), ("password", "dave-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let renewed = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(renewed, cookie, "a new session id on login (fixation)");
    assert_eq!(renewed.len(), "connscope_session=".len() + 64, "256-bit id");
    let resp = raw.get(format!("{base}/")).header("cookie", &renewed).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "logged in");
    let resp = raw.get(format!("{base}/")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303, "the pre-session cookie is no session");

    // Logging in again from a logged-in browser: the same connscope session, under a new id.
    let token = csrf(
        &raw.get(format!("{base}/")).header("cookie", &renewed).send().await.unwrap().text().await.unwrap(),
    );
    let sessions = rt.session_count();
    let resp = raw
        .post(format!("{base}/login"))
        .header("cookie", &renewed)
        .form(&[("_csrf", token.as_str()), ("user", "dave"), ("password", "dave-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let again = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(again, renewed, "a new session id on every login (fixation)");
    assert_eq!(rt.session_count(), sessions, "the session survived the rename");
    let resp = raw.get(format!("{base}/")).header("cookie", &again).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = raw.get(format!("{base}/")).header("cookie", &renewed).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303, "the old id no longer works");
}

/// `SqlLogin` (a provider the app did not write) under a connection name the app chooses: the
/// form asks for user and password only, the URL and pool settings come from that section.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sql_login_uses_the_connection_name_the_app_chose() {
    type Login = connscope::sql::SqlLogin<connscope::sql::sqlx::Sqlite>;
    async fn answer(LoggedIn(conn): LoggedIn<Login>) -> String {
        let (n,) = *conn.query("select 6 * 7").uncached().fetch_one::<(i64,)>().await.unwrap();
        format!("{} as {} (pool {}): {n}", conn.name(), conn.provider().user, conn.provider().max_connections)
    }
    let rt = support::runtime()
        .connection_setting("warehouse", "url", "sqlite::memory:")
        .connection_setting("warehouse", "max_connections", 1)
        .build();
    let web = WebSessions::new(rt.clone()).connection_name::<Login>("warehouse");
    let app = Router::new().route("/", get(answer)).merge(login_routes::<Login>()).layer(web.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = browser();
    let page = client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"name="user""#) && page.contains(r#"name="password" type="password""#), "{page}");
    assert!(!page.contains(r#"name="url""#), "the URL is fixed by the app: {page}");
    let (status, html) = login(&client, &base, "ada", "pw").await;
    assert_eq!((status, html.as_str()), (200, "warehouse as ada (pool 1): 42"));
    assert!(rt.shutdown().await.is_ok());
}
