//! The dashboard example end to end over real HTTP, with a cookie-keeping client per user: the
//! gate, a wrong password, the table and both caches, two users side by side, logout, and a
//! user connection killed behind the app's back.
#![cfg(all(feature = "axum", feature = "sqlite", feature = "metrics"))]

// The app of `cargo run --example dashboard`, on its SQLite demo database.
#[allow(dead_code)]
#[path = "../../examples/dashboard/app.rs"]
mod app;

use app::{Dashboard, Database, UserConnections};

/// A served dashboard and its base URL.
struct Served {
    base: String,
    dashboard: Dashboard,
}

impl Served {
    async fn start() -> Served {
        let dashboard = app::app(Database::Sqlite(None)).await.expect("the dashboard starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = dashboard.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Served { base, dashboard }
    }

    fn connections(&self) -> &UserConnections {
        self.dashboard.user_connections().expect("SQLite has the demo registry")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> Page {
        let resp = client.get(self.url(path)).send().await.unwrap();
        Page::read(resp).await
    }

    /// Opens the login page, fills in the form, submits it (following the redirect).
    async fn login(&self, client: &reqwest::Client, user: &str, password: &str) -> Page {
        let form = self.get(client, "/login").await;
        assert_eq!(form.path, "/login");
        let fields = [("_csrf", form.csrf()), ("user", user.to_owned()), ("password", password.to_owned())];
        let resp = client.post(self.url("/login")).form(&fields).send().await.unwrap();
        Page::read(resp).await
    }

    /// Presses the page's logout button.
    async fn logout(&self, client: &reqwest::Client, page: &Page) -> Page {
        let resp = client.post(self.url("/logout")).form(&[("_csrf", page.csrf())]).send().await.unwrap();
        Page::read(resp).await
    }

    async fn stop(self) {
        let report = self.dashboard.shutdown().await;
        assert!(report.is_ok(), "{:?}", report.failures);
    }
}

/// A page as the browser ends up on it (after redirects).
struct Page {
    status: u16,
    path: String,
    html: String,
}

impl Page {
    async fn read(resp: reqwest::Response) -> Page {
        let (status, path) = (resp.status().as_u16(), resp.url().path().to_owned());
        Page { status, path, html: resp.text().await.unwrap() }
    }

    fn is_login_form(&self) -> bool {
        self.path == "/login"
            && self.html.contains("<h1>Log in</h1>")
            && self.html.contains(r#"name="user" type="text""#)
            && self.html.contains(r#"name="password" type="password""#)
    }

    fn is_dashboard_of(&self, user: &str) -> bool {
        self.status == 200
            && self.path == "/"
            && self.html.contains(&format!(r#"Signed in as <strong id="user">{user}</strong>"#))
            && self.html.contains(r#"<table id="orders">"#)
    }

    fn csrf(&self) -> String {
        let at = self.html.find(r#"name="_csrf" value=""#).expect("a form with a CSRF token") + 20;
        self.html[at..].split('"').next().unwrap().to_owned()
    }

    /// A number of the cache statistics table: `stat("my_orders", "hits")`.
    fn stat(&self, cache: &str, column: &str) -> u64 {
        let row_at = self.html.find(&format!(r#"<tr id="stats-{cache}">"#)).expect("a statistics row");
        let row = &self.html[row_at..];
        let row = &row[..row.find("</tr>").unwrap()];
        let cell = format!(r#"<td class="num {column}">"#);
        let at = row.find(&cell).expect("a statistics cell") + cell.len();
        row[at..].split('<').next().unwrap().parse().unwrap()
    }

    fn has_row(&self, product: &str) -> bool {
        self.html.contains(&format!("<td>{product}</td>"))
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().unwrap()
}

const ALICE_ROWS: [&str; 3] = ["Green tea", "Teapot", "Tea towels"];
const BOB_ROWS: [&str; 3] = ["Espresso beans", "Coffee grinder", "Milk jug"];

#[tokio::test]
async fn a_gated_page_redirects_to_the_login_form() {
    let s = Served::start().await;
    let page = s.get(&browser(), "/").await;
    assert!(page.is_login_form(), "the dashboard is gated: {}", page.html);
    assert!(page.html.contains(r#"<label for="user">User name</label>"#), "labels come from the provider");
    assert!(!page.html.contains(r#"name="url""#), "the database URL is fixed by the app, not a form field");
    assert!(!ALICE_ROWS.iter().any(|r| page.has_row(r)));
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_password_shows_the_error_and_stores_nothing() {
    let s = Served::start().await;
    let client = browser();
    for (user, password) in [("alice", "not-her-password"), ("mallory", "mallory-pw")] {
        let page = s.login(&client, user, password).await;
        assert_eq!(page.status, 401);
        assert!(page.is_login_form(), "the form again: {}", page.html);
        assert!(page.html.contains(connscope::web::LOGIN_FAILED), "{}", page.html);
        assert!(!page.html.contains(password), "a typed password is never echoed");
    }
    let c = s.connections();
    assert_eq!((c.refused_count(), c.opened_count()), (2, 0), "refused, and no connection kept");
    assert!(c.live_users().is_empty());
    assert!(s.get(&client, "/").await.is_login_form(), "still gated");
    s.stop().await;
}

#[tokio::test]
async fn login_shows_the_table_and_both_caches() {
    let s = Served::start().await;
    let client = browser();
    let page = s.login(&client, "alice", "alice-pw").await;
    assert!(page.is_dashboard_of("alice"), "{}", page.html);
    assert!(ALICE_ROWS.iter().all(|r| page.has_row(r)), "her orders: {}", page.html);
    assert!(page.html.contains(r#"<table id="regions">"#) && page.has_row("emea"));
    assert_eq!((page.stat("my_orders", "loads"), page.stat("my_orders", "hits")), (1, 0));
    assert_eq!((page.stat("region_totals", "loads"), page.stat("region_totals", "hits")), (1, 0));
    assert!(page.html.contains("Loaded from the database just now."));

    let again = s.get(&client, "/").await;
    assert!(again.is_dashboard_of("alice"));
    assert_eq!((again.stat("my_orders", "loads"), again.stat("my_orders", "hits")), (1, 1), "a cache hit");
    assert_eq!((again.stat("region_totals", "loads"), again.stat("region_totals", "hits")), (1, 1));
    assert!(again.html.contains("Served from the cache."));
    assert_eq!(s.connections().live_users(), ["alice"]);
    s.stop().await;
}

#[tokio::test]
async fn two_users_never_see_each_others_session_data() {
    let s = Served::start().await;
    let (alice, bob) = (browser(), browser());
    let a = s.login(&alice, "alice", "alice-pw").await;
    let b = s.login(&bob, "bob", "bob-pw").await;
    assert!(a.is_dashboard_of("alice") && b.is_dashboard_of("bob"));
    assert!(ALICE_ROWS.iter().all(|r| a.has_row(r)) && !BOB_ROWS.iter().any(|r| a.has_row(r)));
    assert!(BOB_ROWS.iter().all(|r| b.has_row(r)) && !ALICE_ROWS.iter().any(|r| b.has_row(r)));
    assert!(!b.html.contains("alice"), "nothing of alice's on bob's page");
    // Bob's session cache is his own (a load, no hit from alice's); the global one is shared.
    assert_eq!((b.stat("my_orders", "loads"), b.stat("my_orders", "hits")), (1, 0));
    assert_eq!((b.stat("region_totals", "loads"), b.stat("region_totals", "hits")), (1, 1));

    // Back to alice: still only hers, from her own session cache.
    let a = s.get(&alice, "/").await;
    assert!(a.is_dashboard_of("alice") && !BOB_ROWS.iter().any(|r| a.has_row(r)) && !a.html.contains("bob"));
    assert_eq!((a.stat("my_orders", "loads"), a.stat("my_orders", "hits")), (1, 1));
    let mut live = s.connections().live_users();
    live.sort();
    assert_eq!(live, ["alice", "bob"], "one connection per user");
    s.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_releases_its_connection() {
    let s = Served::start().await;
    let (alice, bob) = (browser(), browser());
    let page = s.login(&alice, "alice", "alice-pw").await;
    assert!(s.login(&bob, "bob", "bob-pw").await.is_dashboard_of("bob"));
    assert_eq!(s.connections().closed_count(), 0);

    let after = s.logout(&alice, &page).await;
    assert!(after.is_login_form(), "logout shows the login form: {}", after.html);
    assert_eq!(s.connections().closed_count(), 1, "her connection was closed, once");
    assert_eq!(s.connections().live_users(), ["bob"]);
    assert!(s.get(&alice, "/").await.is_login_form(), "her session is gone");
    let b = s.get(&bob, "/").await;
    assert!(b.is_dashboard_of("bob"), "bob is unaffected");
    assert_eq!(s.connections().closed_count(), 1);

    // A new login gets a fresh session: its session cache starts empty.
    let again = s.login(&alice, "alice", "alice-pw").await;
    assert!(again.is_dashboard_of("alice"));
    assert_eq!((again.stat("my_orders", "loads"), again.stat("my_orders", "hits")), (1, 0));

    let connections = std::sync::Arc::clone(s.dashboard.user_connections().unwrap());
    s.stop().await;
    assert_eq!((connections.opened_count(), connections.closed_count()), (3, 3), "shutdown closed the rest");
}

#[tokio::test]
async fn a_killed_connection_sends_the_user_back_to_the_login_form() {
    let s = Served::start().await;
    let (carol, bob) = (browser(), browser());
    assert!(s.login(&carol, "carol", "carol-pw").await.is_dashboard_of("carol"));
    assert!(s.login(&bob, "bob", "bob-pw").await.is_dashboard_of("bob"));

    assert_eq!(s.connections().kill("carol").await, 1, "the database drops carol's connection");
    let page = s.get(&carol, "/").await;
    assert!(page.is_login_form(), "the next page is the login form: {}", page.html);
    assert_eq!(s.connections().closed_count(), 1, "the dead connection was closed and forgotten");
    assert_eq!(s.connections().live_users(), ["bob"]);
    assert!(s.get(&bob, "/").await.is_dashboard_of("bob"), "bob is unaffected");

    let back = s.login(&carol, "carol", "carol-pw").await;
    assert!(back.is_dashboard_of("carol") && back.has_row("Hot chocolate"), "logging in again works");
    assert_eq!(s.connections().opened_count(), 3);
    s.stop().await;
}

/// The value of the sample with exactly this name and these labels.
fn sample(scrape: &str, series: &str) -> Option<u64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_are_scraped_and_move_with_the_caches() {
    let s = Served::start().await;
    let client = browser();
    let scrape = || async { client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let global = r#"{cache="region_totals",scope="global",module="dashboard::app"}"#;
    let session = r#"{cache="my_orders",scope="session",module="dashboard::app"}"#;
    let login = r#"{connection="dashboard",provider="DemoLogin",scope="session"}"#;

    let page = s.login(&client, "alice", "alice-pw").await;
    assert!(page.is_dashboard_of("alice"));
    let first = scrape().await;
    assert!(first.contains("# TYPE connscope_cache_hits_total counter"), "{first}");
    assert_eq!(sample(&first, &format!("connscope_cache_loads_total{global}")), Some(1), "{first}");
    assert_eq!(sample(&first, &format!("connscope_cache_hits_total{global}")), Some(0));
    assert_eq!(sample(&first, &format!("connscope_cache_hits_total{session}")), Some(0));
    assert_eq!(sample(&first, &format!("connscope_connection_connects_total{login}")), Some(1), "{first}");
    assert_eq!(sample(&first, "connscope_sessions_live"), Some(1));

    // Two more page views: the counters move.
    s.get(&client, "/").await;
    let page = s.get(&client, "/").await;
    let second = scrape().await;
    assert_eq!(sample(&second, &format!("connscope_cache_hits_total{global}")), Some(2), "{second}");
    assert_eq!(sample(&second, &format!("connscope_cache_hits_total{session}")), Some(2));
    assert_eq!(sample(&second, &format!("connscope_cache_loads_total{session}")), Some(1));

    // Logout ends her session: the session cache's counts stay, its release is counted.
    s.logout(&client, &page).await;
    let third = scrape().await;
    assert_eq!(sample(&third, &format!("connscope_cache_hits_total{session}")), Some(2), "{third}");
    let ended = r#"{cache="my_orders",scope="session",module="dashboard::app",cause="session_end"}"#;
    assert_eq!(sample(&third, &format!("connscope_cache_evictions_total{ended}")), Some(1), "{third}");
    assert_eq!(sample(&third, &format!("connscope_connection_closes_total{login}")), Some(1), "{third}");
    assert_eq!(sample(&third, "connscope_sessions_live"), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn the_dashboard_draws_its_charts_without_external_assets() {
    let s = Served::start().await;
    let client = browser();
    let page = s.login(&client, "bob", "bob-pw").await;
    assert!(page.is_dashboard_of("bob"));
    let page = s.get(&client, "/").await;
    for region in ["amer", "apac", "emea"] {
        assert!(page.html.contains(&format!("<title>{region}: ")), "a bar for {region}: {}", page.html);
    }
    assert!(
        page.html.contains(r#"<svg id="chart-regions""#) && page.html.contains(r#"<svg id="chart-cache""#)
    );
    assert!(page.html.contains("hits 2</text>") && page.html.contains("misses 2</text>"), "{}", page.html);
    let points =
        page.html.split(r#"<polyline class="hits" points=""#).nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), 2, "one sample per page view: {points}");
    for external in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!page.html.contains(external), "`{external}` on the page");
    }
    s.stop().await;
}

/// The example binary (`cargo run --example dashboard`), built next to this test by
/// `cargo test --all-features`.
fn example_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("dashboard");
    path.exists().then_some(path)
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_shuts_the_example_down_and_removes_its_database_file() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let Some(binary) = example_binary() else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED ctrl_c test: the dashboard example is not built (run `cargo test --all-features`, which builds it) ***"
        );
        return;
    };
    let mut child = Command::new(binary)
        .env("PORT", "0")
        .env_remove("DASHBOARD_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next =
        |rx: &std::sync::mpsc::Receiver<String>| rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    let mut lines = Vec::new();
    let base = loop {
        let line = next(&rx);
        lines.push(line.clone());
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim_end_matches('/').to_owned();
        }
    };
    let file = lines
        .iter()
        .find_map(|l| l.split(" at ").nth(1))
        .map(std::path::PathBuf::from)
        .expect("the SQLite file is named");
    assert!(file.exists(), "{}", file.display());

    // A logged-in user, so that shutdown has a session and a connection to close.
    let client = browser();
    let form = Page::read(client.get(format!("{base}/login")).send().await.unwrap()).await;
    let fields = [("_csrf", form.csrf()), ("user", "alice".into()), ("password", "alice-pw".into())];
    let page = Page::read(client.post(format!("{base}/login")).form(&fields).send().await.unwrap()).await;
    assert!(page.is_dashboard_of("alice"), "{}", page.html);

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        rest.push(line);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    // Her login, her orders, the totals and the app's own connection.
    assert!(rest.iter().any(|l| l.starts_with("runtime shut down: 4 cached value(s) released")), "{rest:?}");
    assert!(rest.iter().any(|l| l == &format!("removed {}", file.display())), "{rest:?}");
    assert!(!file.exists(), "the SQLite file is gone");
}
