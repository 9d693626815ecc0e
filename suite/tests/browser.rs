//! The dashboard example in a real browser: headless Chromium, driven through chromedriver
//! (WebDriver) with fantoccini, fills in the login form (a wrong password first), sees the
//! table and the charts, and logs out. Saves screenshots under `target/test-artifacts/`:
//! `dashboard-login.png` (the login page), `dashboard-login-error.png` (a wrong password),
//! `dashboard.png` (the logged-in page) and `dashboard-logged-out.png` (after logout).
//!
//! Needs `chromedriver` (env `CHROMEDRIVER`, else `/usr/bin/chromedriver`) and Chromium (env
//! `CHROMIUM`, else `/usr/bin/chromium`, else wherever chromedriver finds it); `.ci/run`
//! installs Debian's `chromium` and `chromium-driver`. Without chromedriver the test says so
//! loudly on stderr and passes.
#![cfg(all(feature = "axum", feature = "sqlite", feature = "metrics"))]

#[allow(dead_code)]
#[path = "../../examples/dashboard/app.rs"]
mod app;

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// How long any one step may take: a browser start, a page load, an element showing up.
const STEP: Duration = Duration::from_secs(30);

/// A running chromedriver, killed on drop (with the browser profile removed). If the test
/// failed, its output is printed.
struct ChromeDriver {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    profile: PathBuf,
}

impl ChromeDriver {
    fn start(path: &Path) -> ChromeDriver {
        let port = free_port();
        let mut child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, ready) = (Arc::clone(&log), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("started successfully") {
                        let _ = ready.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let profile = std::env::temp_dir().join(format!("connscope-chromium-{}-{port}", std::process::id()));
        let driver = ChromeDriver { child, port, log, profile };
        if ready_rx.recv_timeout(STEP).is_err() {
            panic!(
                "chromedriver did not report ready within {STEP:?}:\n{}",
                driver.log.lock().unwrap().join("\n")
            );
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        if std::thread::panicking() {
            eprintln!("--- chromedriver output ---\n{}", self.log.lock().unwrap().join("\n"));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn chromedriver_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new("/usr/bin/chromedriver");
    default.exists().then(|| default.to_owned())
}

fn chromium_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new("/usr/bin/chromium");
    default.exists().then(|| default.to_owned())
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` did not appear within {STEP:?}: {e}"))
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// A computed CSS property of the first element matching `css`.
async fn style(client: &Client, css: &str, property: &str) -> String {
    let script =
        "return getComputedStyle(document.querySelector(arguments[0])).getPropertyValue(arguments[1]);";
    let value = client.execute(script, vec![css.into(), property.into()]).await.unwrap();
    value.as_str().unwrap_or_default().to_owned()
}

async fn path(client: &Client) -> String {
    client.current_url().await.unwrap().path().to_owned()
}

/// Fills in the login form and submits it.
async fn log_in(client: &Client, user: &str, password: &str) {
    let user_input = wait_for(client, r#"input[name="user"]"#).await;
    user_input.clear().await.unwrap();
    user_input.send_keys(user).await.unwrap();
    client.find(Locator::Css(r#"input[name="password"]"#)).await.unwrap().send_keys(password).await.unwrap();
    client
        .find(Locator::Css(r#"form[action="/login"] button[type="submit"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// How long one Chromium start may take (a cold start on a busy 2-core machine can be slow).
const START: Duration = Duration::from_secs(60);

/// A WebDriver session with headless Chromium: up to three starts, each with a fresh profile.
async fn start_chromium(driver: &ChromeDriver) -> Client {
    for attempt in 1..=3 {
        if let Some(client) = try_start_chromium(driver, attempt).await {
            return client;
        }
        eprintln!("Chromium did not start within {START:?} (attempt {attempt} of 3)");
    }
    panic!("Chromium did not start within {START:?}, three times");
}

async fn try_start_chromium(driver: &ChromeDriver, attempt: u32) -> Option<Client> {
    let profile = driver.profile.join(format!("attempt-{attempt}"));
    let mut chrome = serde_json::json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-proxy-server", "--window-size=1000,860",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Some(binary) = chromium_path() {
        chrome["binary"] = binary.display().to_string().into();
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), chrome);
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(capabilities);
    match tokio::time::timeout(START, builder.connect(&driver.url())).await {
        Ok(client) => Some(client.expect("a WebDriver session with headless Chromium")),
        Err(_) => None,
    }
}

#[tokio::test]
async fn log_in_see_the_table_and_log_out_in_chromium() {
    let Some(driver_path) = chromedriver_path() else {
        // Straight to stderr, past the test harness's output capture, so that it shows.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED browser test: install chromium + chromium-driver or set CHROMEDRIVER ***"
        );
        return;
    };
    let driver = ChromeDriver::start(&driver_path);

    let dashboard = app::app(app::Database::Sqlite(None)).await.expect("the dashboard starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = dashboard.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let client = start_chromium(&driver).await;
    // Page loads (goto, refresh, the navigation after a click) are bounded too.
    let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(STEP), Some(STEP), None);
    client.update_timeouts(timeouts).await.unwrap();

    // 1. The dashboard is gated: the browser lands on the login form.
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, r#"input[name="user"]"#).await;
    assert_eq!(path(&client).await, "/login");
    assert_eq!(client.title().await.unwrap(), "Log in · Orders dashboard");
    assert_eq!(text(&client, "h1").await, "Log in");
    assert_eq!(text(&client, "p.app").await.to_lowercase(), "orders dashboard", "the app's title");
    assert!(client.find(Locator::Css("p.error")).await.is_err(), "no error yet");
    assert!(client.find(Locator::Css("p.notice")).await.is_err(), "no notice yet");
    assert_eq!(text(&client, r#"label[for="user"]"#).await, "User name");
    let password = client.find(Locator::Css(r#"input[name="password"]"#)).await.unwrap();
    assert_eq!(password.attr("type").await.unwrap().as_deref(), Some("password"));
    screenshot(&client, "dashboard-login.png").await;

    // 2. A wrong password: the form again, with the error, and the password field empty.
    log_in(&client, "alice", "not-her-password").await;
    let error = wait_for(&client, "p.error").await;
    assert!(error.is_displayed().await.unwrap(), "the error is visible");
    assert_eq!(error.text().await.unwrap(), connscope::web::LOGIN_FAILED);
    // Styled as an error: dark red text on a light red box, not the browser's default.
    assert_eq!(style(&client, "p.error", "color").await, "rgb(155, 28, 28)");
    assert_eq!(style(&client, "p.error", "background-color").await, "rgb(253, 236, 236)");
    assert_eq!(path(&client).await, "/login");
    let kept = client.find(Locator::Css(r#"input[name="user"]"#)).await.unwrap();
    assert_eq!(kept.prop("value").await.unwrap().as_deref(), Some("alice"), "the user name is kept");
    let password = client.find(Locator::Css(r#"input[name="password"]"#)).await.unwrap();
    assert_eq!(password.prop("value").await.unwrap().as_deref(), Some(""), "the password is not");
    screenshot(&client, "dashboard-login-error.png").await;

    // 3. The right password: the dashboard with her orders, the totals and the cache statistics.
    log_in(&client, "alice", "alice-pw").await;
    wait_for(&client, "table#orders").await;
    assert_eq!(path(&client).await, "/");
    assert_eq!(client.title().await.unwrap(), "Orders dashboard");
    assert_eq!(text(&client, "#user").await, "alice");
    let orders = text(&client, "table#orders").await;
    for row in ["Green tea", "Teapot", "Tea towels"] {
        assert!(orders.contains(row), "{row} in her orders: {orders}");
    }
    assert!(!orders.contains("Espresso beans"), "no other user's orders: {orders}");
    let regions = text(&client, "table#regions").await;
    assert!(regions.contains("amer") && regions.contains("emea"), "{regions}");
    assert_eq!(text(&client, "#stats-my_orders .loads").await, "1");
    assert_eq!(text(&client, "#stats-my_orders .hits").await, "0");

    // A reload is served from both caches.
    client.refresh().await.unwrap();
    wait_for(&client, "table#orders").await;
    assert_eq!(text(&client, "#stats-my_orders .hits").await, "1");
    assert_eq!(text(&client, "#stats-region_totals .hits").await, "1");
    assert_eq!(text(&client, "#stats-region_totals .loads").await, "1");
    for chart in ["svg#chart-regions", "svg#chart-cache"] {
        assert!(client.find(Locator::Css(chart)).await.unwrap().is_displayed().await.unwrap(), "{chart}");
    }
    let shot = screenshot(&client, "dashboard.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a real page, not a blank one");

    // 4. Log out: the login form again, saying so, and the dashboard is gated once more.
    client.find(Locator::Css(r#"form[action="/logout"] button"#)).await.unwrap().click().await.unwrap();
    let notice = wait_for(&client, "p.notice").await;
    assert!(notice.is_displayed().await.unwrap());
    assert_eq!(notice.text().await.unwrap(), connscope::web::LOGGED_OUT);
    assert_eq!(path(&client).await, "/login");
    screenshot(&client, "dashboard-logged-out.png").await;
    let connections = dashboard.user_connections().unwrap();
    assert_eq!(
        (connections.opened_count(), connections.closed_count()),
        (1, 1),
        "logout closed her connection"
    );
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, r#"input[name="user"]"#).await;
    assert_eq!(path(&client).await, "/login", "still gated after logout");
    assert!(client.find(Locator::Css("table#orders")).await.is_err());
    assert!(client.find(Locator::Css("p.notice")).await.is_err(), "the notice is for right after a logout");

    client.close().await.unwrap();
    let report = dashboard.shutdown().await;
    assert!(report.is_ok(), "{:?}", report.failures);
    drop(driver);
}
