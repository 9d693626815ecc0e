//! Sessions across instances, against a real Redis (`REDIS_URL`): three app instances as
//! separate processes (`session-instance`) on loopback, sharing one `[redis]` prefix. A login on
//! one resolves on the others, a login connection does not cross (the login page asks for it
//! again, with a notice), and a logout on one closes that session's connection on every other
//! instance exactly once, after which the cookie resolves nowhere.
#![cfg(all(feature = "redis", feature = "axum"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

struct Instance {
    child: Child,
    base: String,
}

impl Instance {
    fn start(secrets: &std::path::Path, redis_url: &str) -> Instance {
        Instance::start_with(secrets, redis_url, &[])
    }

    /// With environment variables (`IDLE_MS`, `LIFETIME_MS`).
    fn start_with(secrets: &std::path::Path, redis_url: &str, env: &[(&str, u64)]) -> Instance {
        let mut command = Command::new(env!("CARGO_BIN_EXE_session-instance"));
        for (k, v) in env {
            command.env(k, v.to_string());
        }
        Instance::spawn(command.arg(secrets).env("REDIS_URL", redis_url).stderr(Stdio::inherit()))
    }

    /// Logging everything at `debug` to `log`.
    fn start_logging(secrets: &std::path::Path, redis_url: &str, log: &std::path::Path) -> Instance {
        let file = std::fs::File::create(log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_session-instance"));
        command.arg(secrets).env("REDIS_URL", redis_url).env("RUST_LOG", "debug").stderr(file);
        Instance::spawn(&mut command)
    }

    fn spawn(command: &mut Command) -> Instance {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("start session-instance");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its port");
        let port: u16 = line.trim().strip_prefix("port=").and_then(|p| p.parse().ok()).expect("port=N");
        Instance { child, base: format!("http://127.0.0.1:{port}") }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `(connects, closes)` of its session-scoped `counted` connection.
    async fn counts(&self, client: &reqwest::Client) -> (u64, u64) {
        let text = client.get(self.url("/counts")).send().await.unwrap().text().await.unwrap();
        let field = |name: &str| -> u64 {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text:?}"))
        };
        (field("connects"), field("closes"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn csrf(html: &str) -> String {
    let at = html.find(r#"name="_csrf" value=""#).unwrap_or_else(|| panic!("a CSRF field in {html}"));
    let rest = &html[at + r#"name="_csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn new_browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Logs in on `at` through the form; returns the session cookie's value.
async fn log_in(b: &reqwest::Client, at: &Instance, user: &str) -> String {
    let form = b.get(at.url("/login")).send().await.unwrap().text().await.unwrap();
    let password = format!("{user}-pw");
    let response = b
        .post(at.url("/login"))
        .form(&[("_csrf", csrf(&form).as_str()), ("user", user), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "logged in");
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("connscope_session=")?.split(';').next().map(str::to_owned))
        .expect("a session cookie");
    assert_eq!(cookie.len(), 64);
    cookie
}

/// Polls `f` until it holds, failing at the deadline.
async fn until<F, Fut>(what: &str, deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `REDIS_URL`, or `None` after saying loudly that the test is skipped.
fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").ok().filter(|u| !u.trim().is_empty());
    if url.is_none() {
        // Straight to stderr (not captured by the test harness), as the other suites skip.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED redis_sessions: set REDIS_URL=redis://127.0.0.1:6379 to run ***"
        );
    }
    url
}

/// A secrets file with a `[redis]` prefix unique to this run (in a directory removed on drop).
struct Secrets(std::path::PathBuf, String);

impl Secrets {
    fn new(test: &str) -> Secrets {
        let unique = format!(
            "{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let dir = std::env::temp_dir().join(format!("connscope-redis-sessions-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = format!("connscope-test-sessions-{unique}");
        std::fs::write(
            dir.join("secrets.toml"),
            format!("[redis]\nprefix = \"{prefix}\"\n\n[connections.counted]\nlabel = \"counted\"\n"),
        )
        .unwrap();
        Secrets(dir, prefix)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("secrets.toml")
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The shared CSRF key has no expiry (session records expire on their own).
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.contains('@')
            && let Ok(mut redis) = std::net::TcpStream::connect(redis_address(&url))
        {
            use std::io::{Read, Write};
            let key = format!("{}:session-csrf-key", self.1);
            let _ = write!(redis, "*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len());
            let _ = redis.read(&mut [0u8; 64]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resolves_everywhere_and_a_logout_ends_it_everywhere_once() {
    let Some(redis_url) = redis_url() else { return };
    let secrets_file = Secrets::new("everywhere");
    let secrets = secrets_file.path();
    let records = format!("{}:session:*", secrets_file.1);
    let (a, b, c) = (
        Instance::start(&secrets, &redis_url),
        Instance::start(&secrets, &redis_url),
        Instance::start(&secrets, &redis_url),
    );
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let with_cookie = |at: &Instance, path: &str, cookie: &str| {
        plain.get(at.url(path)).header(COOKIE, format!("connscope_session={cookie}"))
    };

    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    const TRIES: u64 = 20;
    for round in 0..TRIES {
        let user = format!("ada{round}");
        let browser = new_browser();
        let cookie = log_in(&browser, &a, &user).await;
        for at in [&a, &b, &c] {
            let page = browser.get(at.url("/")).send().await.unwrap();
            assert_eq!(page.status(), StatusCode::OK, "the session resolves on {}", at.base);
            assert!(page.text().await.unwrap().contains("session ok"));
        }
        for at in [&b, &c] {
            assert_eq!(
                at.counts(&plain).await,
                (round + 1, round),
                "one connection per session on {}",
                at.base
            );
        }

        if round == 0
            && let Some(redis) = Resp::connect(&redis_url).await
        {
            // Redis holds a record under a digest of the cookie, never the cookie itself.
            let mut redis = redis;
            let keys = redis.keys(&records).await;
            assert_eq!(keys.len(), 1, "{keys:?}");
            let digest = keys[0].rsplit(':').next().unwrap();
            assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
            assert_ne!(digest, cookie, "not the cookie id");
            let value = redis.command(&["GET", &keys[0]]).await;
            assert!(
                !String::from_utf8_lossy(&value).contains(&cookie),
                "the record does not hold the cookie id"
            );
            let ttl: u64 = String::from_utf8_lossy(&redis.command(&["PTTL", &keys[0]]).await)
                .trim_start_matches(':')
                .trim()
                .parse()
                .unwrap();
            assert!(
                ttl > 0 && ttl <= 33 * 60 * 1000,
                "expires with the idle timeout (30 min + a tenth): {ttl} ms"
            );
        }

        if round == 0 {
            // The login connection was made on A: there it is, elsewhere the login page asks for it.
            let here = browser.get(a.url("/warehouse")).send().await.unwrap();
            assert_eq!(here.status(), StatusCode::OK);
            assert_eq!(here.text().await.unwrap(), "warehouse of ada0");
            let there = browser.get(b.url("/warehouse")).send().await.unwrap();
            assert_eq!(there.status(), StatusCode::SEE_OTHER);
            assert_eq!(there.headers()[LOCATION], "/login?login_here");
            let page = browser.get(b.url("/login?login_here")).send().await.unwrap().text().await.unwrap();
            assert!(
                page.contains(&format!(
                    "<p class=\"notice\" role=\"status\">{}</p>",
                    connscope::web::LOG_IN_HERE
                )),
                "{page}"
            );
            // The session is still the same one on B (it was not ended by the refusal).
            assert_eq!(browser.get(b.url("/")).send().await.unwrap().status(), StatusCode::OK);
        }

        // Log out on A (the logout form of a page of A).
        let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
        let token = csrf(&home);
        let started = Instant::now();
        let out = browser.post(a.url("/logout")).form(&[("_csrf", token.as_str())]).send().await.unwrap();
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert_eq!(out.headers()[LOCATION], "/login?logged_out");
        let mut closed_at = [Duration::ZERO; 2];
        for (i, at) in [&b, &c].into_iter().enumerate() {
            until("the other instance closed the session's connection", Duration::from_secs(10), || async {
                at.counts(&plain).await.1 == round + 1
            })
            .await;
            closed_at[i] = started.elapsed();
        }
        let took = closed_at[0].max(closed_at[1]);
        worst = worst.max(took);
        total += took;

        // The cookie resolves nowhere now, and nothing was made or closed twice.
        for at in [&a, &b, &c] {
            let page = with_cookie(at, "/", &cookie).send().await.unwrap();
            assert_eq!(
                page.status(),
                StatusCode::UNAUTHORIZED,
                "the old cookie is no session on {}",
                at.base
            );
            let cleared = page.headers().get_all(SET_COOKIE).iter().any(|v| {
                v.to_str().is_ok_and(|v| v.starts_with("connscope_session=;") && v.contains("Max-Age=0"))
            });
            assert!(cleared, "and it is deleted on {}", at.base);
        }
        for at in [&a, &b, &c] {
            assert_eq!(at.counts(&plain).await, (round + 1, round + 1), "closed exactly once on {}", at.base);
        }
        if let Some(mut redis) = Resp::connect(&redis_url).await {
            assert_eq!(redis.keys(&records).await, Vec::<String>::new(), "the logout deleted the record");
        }
    }
    println!(
        "logout on A until B and C closed the session's connection: worst {worst:?}, mean {:?} over {TRIES} tries",
        total / TRIES as u32
    );
}

/// A minimal RESP client for looking at what the instances stored (no AUTH: `None` for a URL
/// with credentials, and the checks are skipped).
struct Resp(tokio::net::TcpStream);

impl Resp {
    async fn connect(url: &str) -> Option<Resp> {
        if url.contains('@') {
            return None;
        }
        tokio::net::TcpStream::connect(redis_address(url)).await.ok().map(Resp)
    }

    /// Sends one command; returns the raw reply (whole, read until it parses).
    async fn command(&mut self, args: &[&str]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.0.write_all(&out).await.unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.0.read(&mut buf).await.unwrap();
            assert!(n > 0, "Redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
            if let Some(value) = parse(&reply).map(|(v, _)| v) {
                return value;
            }
        }
    }

    async fn keys(&mut self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).await;
        let mut keys: Vec<String> = String::from_utf8_lossy(&reply)
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }
}

/// Parses one RESP reply: bulk strings as their bytes, an array as its elements joined by
/// newlines, anything else as its line. `None`: incomplete.
fn parse(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = &bytes[1..end];
    let rest = end + 2;
    match bytes.first()? {
        b'$' => {
            let len: i64 = std::str::from_utf8(line).ok()?.parse().ok()?;
            if len < 0 {
                return Some((Vec::new(), rest));
            }
            let len = len as usize;
            (bytes.len() >= rest + len + 2).then(|| (bytes[rest..rest + len].to_vec(), rest + len + 2))
        }
        b'*' => {
            let n: i64 = std::str::from_utf8(line).ok()?.parse().ok()?;
            let (mut out, mut at) = (Vec::new(), rest);
            for i in 0..n.max(0) {
                let (item, used) = parse(&bytes[at..])?;
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(&item);
                at += used;
            }
            Some((out, at))
        }
        _ => Some((bytes[..end].to_vec(), rest)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_served_by_one_instance_are_accepted_by_another() {
    let Some(redis_url) = redis_url() else { return };
    let secrets = Secrets::new("form");
    let (a, b) = (Instance::start(&secrets.path(), &redis_url), Instance::start(&secrets.path(), &redis_url));
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The login form of A posted to B (a balancer without affinity): the instances share the
    // key of pre-session tokens through Redis, loaded on their first request.
    let browser = new_browser();
    until("a login form of A is accepted by B", Duration::from_secs(10), || async {
        let form = browser.get(a.url("/login")).send().await.unwrap().text().await.unwrap();
        let fields =
            [("_csrf", csrf(&form)), ("user", "hopper".to_owned()), ("password", "hopper-pw".to_owned())];
        let status = browser.post(b.url("/login")).form(&fields).send().await.unwrap().status();
        assert!(matches!(status, StatusCode::SEE_OTHER | StatusCode::FORBIDDEN), "{status}");
        status == StatusCode::SEE_OTHER
    })
    .await;
    let warehouse = browser.get(b.url("/warehouse")).send().await.unwrap();
    assert_eq!(warehouse.text().await.unwrap(), "warehouse of hopper", "logged in on B");
    assert_eq!(browser.get(b.url("/")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        browser.get(a.url("/")).send().await.unwrap().status(),
        StatusCode::OK,
        "the session resolves on A"
    );
    let forged = browser
        .post(b.url("/login"))
        .form(&[("_csrf", "1.00"), ("user", "hopper"), ("password", "hopper-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a forged token is still refused");
    let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    let out = browser.post(a.url("/logout")).form(&[("_csrf", csrf(&home).as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    until("B closed its copy", Duration::from_secs(10), || async { b.counts(&plain).await == (1, 1) }).await;
    assert_eq!(a.counts(&plain).await, (1, 1));

    let browser = new_browser();
    log_in(&browser, &a, "hopper").await;
    let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(browser.get(b.url("/")).send().await.unwrap().status(), StatusCode::OK);
    // A page of A, its logout button posted to B (a balancer without affinity).
    let out = browser.post(b.url("/logout")).form(&[("_csrf", csrf(&home).as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER, "the session's token checks on B");
    assert_eq!(out.headers()[LOCATION], "/login?logged_out");
    until("A closed its copy", Duration::from_secs(10), || async { a.counts(&plain).await == (2, 2) }).await;
    assert_eq!(b.counts(&plain).await, (2, 2));
    // A forged token is refused on B as on A.
    log_in(&browser, &a, "hopper").await;
    assert_eq!(browser.get(b.url("/")).send().await.unwrap().status(), StatusCode::OK);
    let forged = browser.post(b.url("/logout")).form(&[("_csrf", "1.00")]).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

/// A TCP proxy in front of Redis that can be cut (every connection closed, new ones refused)
/// and restored: Redis "goes away" for one instance only, without disturbing anyone else.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (c, cs) = (Arc::clone(&cut), Arc::clone(&conns));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let copy = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                cs.lock().unwrap().push(copy.abort_handle());
            }
        });
        Proxy { port, cut, conns, task }
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let auth = authority.rsplit_once('@').map_or(String::new(), |(auth, _)| format!("{auth}@"));
        let path = if path.is_empty() { String::new() } else { format!("/{path}") };
        format!("{scheme}://{auth}127.0.0.1:{}{path}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// `host:port` of a Redis URL.
fn redis_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') { host.to_owned() } else { format!("{host}:6379") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_made_while_redis_is_away_reaches_the_others_when_it_is_back() {
    let Some(redis_url) = redis_url() else { return };
    let secrets = Secrets::new("away");
    let proxy = Proxy::start(redis_address(&redis_url)).await;
    // A reaches Redis through the proxy, B directly.
    let a = Instance::start(&secrets.path(), &proxy.url(&redis_url));
    let b = Instance::start(&secrets.path(), &redis_url);
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let browser = new_browser();
    let cookie = log_in(&browser, &a, "grace").await;
    for at in [&a, &b] {
        assert_eq!(browser.get(at.url("/")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(at.counts(&plain).await, (1, 0));
    }
    let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    let token = csrf(&home);

    proxy.cut();
    until("A sees Redis as away", Duration::from_secs(15), || async {
        plain.get(a.url("/redis")).send().await.unwrap().text().await.unwrap() == "Some(Down)"
    })
    .await;
    // The logout works (locally) while Redis is away, without waiting on it.
    let started = Instant::now();
    let out = browser.post(a.url("/logout")).form(&[("_csrf", token.as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[LOCATION], "/login?logged_out");
    let logout_took = started.elapsed();
    assert_eq!(a.counts(&plain).await, (1, 1), "A closed its own copy");
    // B could not hear of it yet: it still serves the session.
    let page =
        plain.get(b.url("/")).header(COOKIE, format!("connscope_session={cookie}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "B still serves it while A cannot tell anyone");
    assert_eq!(b.counts(&plain).await, (1, 0));

    proxy.restore();
    let back = Instant::now();
    until("B ended the session once A reached Redis again", Duration::from_secs(15), || async {
        b.counts(&plain).await.1 == 1
    })
    .await;
    let reached = back.elapsed();
    for at in [&a, &b] {
        let page = plain
            .get(at.url("/"))
            .header(COOKIE, format!("connscope_session={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED, "the old cookie is no session on {}", at.base);
        assert_eq!(at.counts(&plain).await, (1, 1), "closed exactly once on {}", at.base);
    }
    println!(
        "logout while Redis was away took {logout_took:?}; it reached B {reached:?} after Redis was back"
    );

    // The other way round: B logs out while A cannot hear it. Back, A checks the record before
    // serving the session again, finds it gone, and ends its copy.
    let browser = new_browser();
    let cookie = log_in(&browser, &b, "grace2").await;
    for at in [&a, &b] {
        assert_eq!(browser.get(at.url("/")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(at.counts(&plain).await, (2, 1));
    }
    let home = browser.get(b.url("/")).send().await.unwrap().text().await.unwrap();
    proxy.cut();
    until("A sees Redis as away", Duration::from_secs(15), || async {
        plain.get(a.url("/redis")).send().await.unwrap().text().await.unwrap() == "Some(Down)"
    })
    .await;
    let out = browser.post(b.url("/logout")).form(&[("_csrf", csrf(&home).as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    proxy.restore();
    until("A reaches Redis again", Duration::from_secs(15), || async {
        plain.get(a.url("/redis")).send().await.unwrap().text().await.unwrap() == "Some(Up)"
    })
    .await;
    assert_eq!(a.counts(&plain).await, (2, 1), "A missed the end (it was away)");
    let page =
        plain.get(a.url("/")).header(COOKIE, format!("connscope_session={cookie}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED, "A checked the record first: the session ended");
    until("A closed its copy", Duration::from_secs(10), || async { a.counts(&plain).await == (2, 2) }).await;
    assert_eq!(b.counts(&plain).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_by_the_app_goes_everywhere_and_an_idle_end_stays_local() {
    let Some(redis_url) = redis_url() else { return };
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // `Session::end` on B (not the logout): B ends it everywhere when it next sees the cookie.
    let secrets = Secrets::new("app-end");
    let (a, b) = (Instance::start(&secrets.path(), &redis_url), Instance::start(&secrets.path(), &redis_url));
    let browser = new_browser();
    let cookie = log_in(&browser, &a, "lovelace").await;
    for at in [&a, &b] {
        assert_eq!(browser.get(at.url("/")).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(browser.get(b.url("/end")).send().await.unwrap().text().await.unwrap(), "ended");
    assert_eq!(b.counts(&plain).await, (1, 1));
    let page =
        plain.get(b.url("/")).header(COOKIE, format!("connscope_session={cookie}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED, "ended on B, not taken over again");
    until("A ended its copy", Duration::from_secs(10), || async { a.counts(&plain).await == (1, 1) }).await;
    let page =
        plain.get(a.url("/")).header(COOKIE, format!("connscope_session={cookie}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED, "and on A");

    // Idle timeout 1.5 s on both. The browser stays busy on A only: B ends its copy for being
    // idle (locally), A keeps the session, and B takes it over again on the next request.
    let secrets = Secrets::new("idle");
    let a = Instance::start_with(&secrets.path(), &redis_url, &[("IDLE_MS", 1500)]);
    let b = Instance::start_with(&secrets.path(), &redis_url, &[("IDLE_MS", 1500)]);
    let browser = new_browser();
    log_in(&browser, &a, "babbage").await;
    for at in [&a, &b] {
        assert_eq!(browser.get(at.url("/")).send().await.unwrap().status(), StatusCode::OK);
    }
    until("B ended its idle copy while A is in use", Duration::from_secs(10), || async {
        assert_eq!(
            browser.get(a.url("/")).send().await.unwrap().status(),
            StatusCode::OK,
            "A keeps serving it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.counts(&plain).await == (1, 1)
    })
    .await;
    assert_eq!(a.counts(&plain).await, (1, 0), "A did not end it");
    let page = browser.get(b.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "B takes the session over again");
    assert_eq!(b.counts(&plain).await, (2, 1), "with a connection of its own");
    assert_eq!(a.counts(&plain).await, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_lifetime_counts_from_the_login_on_every_instance() {
    let Some(redis_url) = redis_url() else { return };
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let secrets = Secrets::new("lifetime");
    let env = [("LIFETIME_MS", 3000)];
    let (a, b) = (
        Instance::start_with(&secrets.path(), &redis_url, &env),
        Instance::start_with(&secrets.path(), &redis_url, &env),
    );
    let browser = new_browser();
    let logged_in = Instant::now();
    log_in(&browser, &a, "curie").await;
    // B takes the session over 1.5 s after the login: its own copy would live 3 s from there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(browser.get(b.url("/")).send().await.unwrap().status(), StatusCode::OK);
    until("B refuses the session", Duration::from_secs(10), || async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        browser.get(b.url("/")).send().await.unwrap().status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let ended = logged_in.elapsed();
    assert!(
        ended < Duration::from_millis(4000),
        "B ended it {ended:?} after the login: the lifetime (3 s) counts from the login, not from the take-over"
    );
    until("B closed its copy", Duration::from_secs(10), || async { b.counts(&plain).await == (1, 1) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_made_while_redis_is_away_is_shared_once_it_is_back() {
    let Some(redis_url) = redis_url() else { return };
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let secrets = Secrets::new("login-away");
    let proxy = Proxy::start(redis_address(&redis_url)).await;
    // Idle timeout 3 s: records are refreshed (or written, if missing) at most every 330 ms.
    let env = [("IDLE_MS", 3000)];
    let a = Instance::start_with(&secrets.path(), &proxy.url(&redis_url), &env);
    let b = Instance::start_with(&secrets.path(), &redis_url, &env);
    let state = |at: &Instance| plain.get(at.url("/redis")).send();
    until("A reaches Redis", Duration::from_secs(15), || async {
        state(&a).await.unwrap().text().await.unwrap() == "Some(Up)"
    })
    .await;
    proxy.cut();
    until("A sees Redis as away", Duration::from_secs(15), || async {
        state(&a).await.unwrap().text().await.unwrap() == "Some(Down)"
    })
    .await;

    // The login works on A without Redis; B cannot know of it yet.
    let browser = new_browser();
    let started = Instant::now();
    let cookie = log_in(&browser, &a, "noether").await;
    let login_took = started.elapsed();
    assert_eq!(browser.get(a.url("/")).send().await.unwrap().status(), StatusCode::OK);
    let on_b = || plain.get(b.url("/")).header(COOKIE, format!("connscope_session={cookie}")).send();
    assert_eq!(on_b().await.unwrap().status(), StatusCode::UNAUTHORIZED, "no record yet");

    // Back: A's next requests write the missing record, and B takes the session over.
    proxy.restore();
    until("B resolves the session made while Redis was away", Duration::from_secs(15), || async {
        assert_eq!(browser.get(a.url("/")).send().await.unwrap().status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        on_b().await.unwrap().status() == StatusCode::OK
    })
    .await;
    assert_eq!(b.counts(&plain).await, (1, 0));
    let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    let out = browser.post(a.url("/logout")).form(&[("_csrf", csrf(&home).as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    until("B closed its copy", Duration::from_secs(10), || async { b.counts(&plain).await == (1, 1) }).await;
    println!("login while Redis was away took {login_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cookie_id_or_csrf_secret_in_the_logs() {
    let Some(redis_url) = redis_url() else { return };
    let Some(mut redis) = Resp::connect(&redis_url).await else { return };
    let secrets = Secrets::new("logs");
    let (log_a, log_b) = (secrets.0.join("a.log"), secrets.0.join("b.log"));
    let a = Instance::start_logging(&secrets.path(), &redis_url, &log_a);
    let b = Instance::start_logging(&secrets.path(), &redis_url, &log_b);
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let browser = new_browser();
    let cookie = log_in(&browser, &a, "shannon").await;
    let keys = redis.keys(&format!("{}:session:*", secrets.1)).await;
    assert_eq!(keys.len(), 1);
    let record = redis.command(&["GET", &keys[0]]).await;
    // The CSRF secret: the record's run of 64 hex digits.
    let secret = record
        .windows(64)
        .find(|w| w.iter().all(u8::is_ascii_hexdigit))
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .expect("the secret in the record");
    for at in [&a, &b] {
        assert_eq!(browser.get(at.url("/")).send().await.unwrap().status(), StatusCode::OK);
    }
    assert!(browser.get(b.url("/warehouse")).send().await.unwrap().status().is_redirection());
    let home = browser.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    let out = browser.post(a.url("/logout")).form(&[("_csrf", csrf(&home).as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    until("B closed its copy", Duration::from_secs(10), || async { b.counts(&plain).await == (1, 1) }).await;
    drop((a, b));
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("connscope"), "the instance logged: {text}");
        assert!(!text.contains(&cookie), "a cookie id in {}", log.display());
        assert!(!text.contains(&secret), "a CSRF secret in {}", log.display());
    }
}
