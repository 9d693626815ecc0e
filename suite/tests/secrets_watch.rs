//! Secrets that change while the app runs: the secrets file and a `password_file` credential
//! source are polled; a named connection whose settings changed is replaced (new lookups get
//! the new settings, the old connection is drained and closed exactly once); a file that
//! becomes invalid keeps the last good settings and logs one warning that quotes no value.

mod rotation_support;
mod sql_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use connscope::{Conn, Connection, Provider, Runtime, Secret};
use rotation_support::{log_text, logs};

/// What every `Watched` client did, by the settings it was made with (`host`).
#[derive(Default)]
struct Journal {
    connects: Vec<String>,
    closes: Vec<String>,
}

fn journal() -> &'static Mutex<Journal> {
    static J: OnceLock<Mutex<Journal>> = OnceLock::new();
    J.get_or_init(Default::default)
}

/// The hosts of `tag` (each test uses hosts of its own) that connected / closed.
fn connects(tag: &str) -> Vec<String> {
    journal().lock().unwrap().connects.iter().filter(|h| h.starts_with(tag)).cloned().collect()
}
fn closes(tag: &str) -> Vec<String> {
    journal().lock().unwrap().closes.iter().filter(|h| h.starts_with(tag)).cloned().collect()
}

#[derive(Connection, serde::Deserialize)]
#[connection(name = "watched")]
struct Watched {
    host: String,
    #[serde(default)]
    password: Option<Secret>,
}

impl Provider for Watched {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        journal().lock().unwrap().connects.push(self.host.clone());
        Ok(self.host.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
    async fn close(&self, raw: &String) {
        journal().lock().unwrap().closes.push(raw.clone());
    }
}

fn secrets_file(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(sql_support::unique(tag));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("secrets.toml")
}

/// Replaces the file's content in one step (a write to a temporary file, then a rename), as
/// an editor, a deploy tool or a Kubernetes mount does: a poll never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp{}", sql_support::unique("w")));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn section(name: &str, host: &str, password: &str) -> String {
    format!("[connections.{name}]\nhost = \"{host}\"\npassword = \"{password}\"\n")
}

/// Polls `cond` (letting paused time move) until it holds, for at most 10 s of real time.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets background tasks (closes, polls) run.
async fn settle() {
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn changed_settings_replace_the_connection_and_the_old_one_is_closed_once_after_its_last_user() {
    let _ = logs();
    let path = secrets_file("watch-change");
    let (one, two) = (sql_support::unique("chg-one"), sql_support::unique("chg-two"));
    // Same length on purpose: only the content digest tells them apart.
    assert_eq!(one.len(), two.len());
    write_atomically(&path, &section("watched", &one, "pw-change-1"));
    let rt = Runtime::builder()
        .secrets_file(&path)
        .secrets_poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(50))
        .build();
    let old = rt.connection::<Watched>("watched").await.unwrap();
    let in_flight = old.get().await.unwrap();
    assert_eq!(*in_flight, one);

    write_atomically(&path, &section("watched", &two, "pw-change-2"));
    until("a lookup gets the new settings", async || {
        rt.connection::<Watched>("watched").await.unwrap().provider().host == two
    })
    .await;
    let new = rt.connection::<Watched>("watched").await.unwrap();
    assert_ne!(new.id(), old.id());
    // Connected before it was handed out: the first request does not pay the connect.
    assert!(new.is_connected(), "the replacement is connected before lookups see it");
    assert_eq!(*new.get().await.unwrap(), two);
    assert_eq!(new.counters().connects, 1);

    // The old client waits for its in-flight user.
    settle().await;
    assert!(closes(&one).is_empty(), "closed under an in-flight user");
    // A caller still holding the old handle is served by the new connection.
    until("the old handle is released", async || *old.get().await.unwrap() == two).await;
    drop(in_flight);
    until("the old client closes", async || !closes(&one).is_empty()).await;
    settle().await;
    assert_eq!(closes(&one), vec![one.clone()], "closed exactly once");
    assert!(closes(&two).is_empty(), "the new client stays open");
    assert_eq!(connects(&one), vec![one.clone()]);
    assert_eq!(connects(&two), vec![two.clone()], "new connects use the new settings, once");
    assert_eq!(old.counters().closes, 1);

    // Nothing changes when the file does not.
    settle().await;
    assert_eq!(rt.connection::<Watched>("watched").await.unwrap().id(), new.id());
    let report = rt.shutdown().await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(closes(&two), vec![two.clone()], "the new one closes once at shutdown");
    assert_eq!(closes(&one).len(), 1);
    let text = log_text();
    assert!(!text.contains("pw-change-1") && !text.contains("pw-change-2"), "a password was logged");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_file_keeps_the_last_good_settings_and_warns_once_without_quoting_secrets() {
    let _ = logs();
    let path = secrets_file("watch-invalid");
    let shown = path.display().to_string();
    let good = sql_support::unique("inv-good");
    write_atomically(&path, &section("watched", &good, "pw-inv-good-7"));
    let rt = Runtime::builder()
        .secrets_file(&path)
        .secrets_poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(50))
        .build();
    let conn = rt.connection::<Watched>("watched").await.unwrap();
    assert_eq!(*conn.get().await.unwrap(), good);
    let warnings = |what: &str| {
        log_text().lines().filter(|l| l.contains("WARN") && l.contains(&shown) && l.contains(what)).count()
    };

    // Bad TOML: an unterminated string, on the line of a password.
    write_atomically(
        &path,
        &format!("[connections.watched]\nhost = \"{good}\"\npassword = \"pw-inv-leak-1\n"),
    );
    until("a warning about the file", async || warnings("is invalid") == 1).await;
    settle().await;
    assert_eq!(warnings("is invalid"), 1, "one warning per change, not per poll");
    let same = rt.connection::<Watched>("watched").await.unwrap();
    assert_eq!((same.id(), same.provider().host.as_str()), (conn.id(), good.as_str()), "last good kept");
    let line =
        log_text().lines().find(|l| l.contains(&shown) && l.contains("is invalid")).unwrap().to_owned();
    assert!(line.contains("line 3"), "says where: {line}");

    // Valid TOML, but a setting the provider rejects (a number for a string).
    write_atomically(&path, "[connections.watched]\nhost = 42\npassword = \"pw-inv-leak-2\"\n");
    until("a warning about the settings", async || warnings("new settings are invalid") == 1).await;
    settle().await;
    assert_eq!(warnings("new settings are invalid"), 1);
    let same = rt.connection::<Watched>("watched").await.unwrap();
    assert_eq!((same.id(), same.provider().host.as_str()), (conn.id(), good.as_str()), "last good kept");
    assert!(closes(&good).is_empty(), "the connection in use was left alone");

    // Fixed: the new settings are taken, the old connection closed once.
    let fixed = sql_support::unique("inv-fixd");
    write_atomically(&path, &section("watched", &fixed, "pw-inv-fixed-3"));
    until("the fixed settings", async || {
        rt.connection::<Watched>("watched").await.unwrap().provider().host == fixed
    })
    .await;
    until("the old client closes", async || !closes(&good).is_empty()).await;
    settle().await;
    assert_eq!(closes(&good).len(), 1);
    rt.shutdown().await;
    let text = log_text();
    for secret in ["pw-inv-good-7", "pw-inv-leak-1", "pw-inv-leak-2", "pw-inv-fixed-3"] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_file_renews_the_pool_in_place() {
    use connscope::sql::SqliteDb;
    let _ = logs();
    let path = secrets_file("watch-pwfile");
    let password = path.with_file_name("password");
    std::fs::write(&password, "pw-file-one\n").unwrap();
    let db = path.with_file_name("app.db");
    std::fs::write(
        &path,
        format!(
            "[connections.pwfile]\nurl = \"sqlite://{}?mode=rwc\"\npassword_file = \"{}\"\n",
            db.display(),
            password.display()
        ),
    )
    .unwrap();
    let rt = Runtime::builder().secrets_file(&path).secrets_poll_interval(Duration::from_millis(20)).build();
    let conn = rt.connection::<SqliteDb>("pwfile").await.unwrap();
    let one = conn.query("select 1").uncached().fetch_one::<(i64,)>().await.unwrap();
    assert_eq!(one.0, 1);
    assert_eq!(conn.counters().rebuilds, 0);

    write_atomically(&password, "pw-file-two\n");
    until("the credentials are renewed", async || conn.counters().renewals == 1).await;
    conn.query("select 1").uncached().fetch_one::<(i64,)>().await.unwrap();
    // The renewal stamped the file anew: no further change, no further renewal (20 polls).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = conn.counters();
    assert_eq!((c.renewals, c.rebuilds, c.connects, c.closes), (1, 0, 1, 0), "{c:?}");
    // A second change is seen against the renewed stamp.
    write_atomically(&password, "pw-file-three\n");
    until("renewed again", async || conn.counters().renewals == 2).await;
    rt.shutdown().await;
    assert_eq!(conn.counters().closes, 1, "the one pool closed exactly once");
    let text = log_text();
    assert!(text.contains("because its credentials file changed"), "logged why");
    for secret in ["pw-file-one", "pw-file-two", "pw-file-three"] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

/// The secrets file of a server soak: connection `name` at `url` (as the user, without
/// password) with `password` and a pool of 8 opened up front.
fn server_config(name: &str, url: &str, password: &str) -> String {
    format!(
        "[connections.{name}]\nurl = \"{url}\"\npassword = \"{password}\"\nmax_connections = 8\nmin_connections = 8\n"
    )
}

/// 8 tasks look connection `name` up in a runtime reading the secrets file `path` (polled
/// every 100 ms) and run `sql` (one row: 1) through it for `ROTATION_SOAK_SECS` (default 8) seconds while,
/// every second, `rotate` changes the password on the server and then in the file: zero failed
/// queries, a connection per password, and every replaced pool closed exactly once. Returns
/// the secrets written, for the caller's check of the log.
async fn watch_soak<P, R, RF>(
    label: &str,
    path: &Path,
    name: &'static str,
    sql: &'static str,
    first: String,
    mut rotate: R,
) -> Vec<String>
where
    P: Connection + connscope::sql::SqlProvider + serde::de::DeserializeOwned,
    (i64,): for<'r> sqlx::FromRow<'r, <P::Db as sqlx::Database>::Row>,
    R: FnMut(String) -> RF + Send + 'static,
    RF: std::future::Future<Output = ()> + Send,
{
    let rt = Runtime::builder().secrets_file(path).secrets_poll_interval(Duration::from_millis(100)).build();
    let first_conn = rt.connection::<P>(name).await.unwrap();
    first_conn.query(sql).uncached().fetch_one::<(i64,)>().await.unwrap();

    let secs = std::env::var("ROTATION_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let passwords = Arc::new(Mutex::new(vec![first]));
    let rotator = {
        let passwords = Arc::clone(&passwords);
        tokio::spawn(async move {
            let mut rotations = 0u64;
            while std::time::Instant::now() + Duration::from_secs(1) < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let next = sql_support::unique("tok-watch");
                // The server first, then the file: the running pool keeps its open
                // connections, the replacement connects with the new password.
                rotate(next.clone()).await;
                passwords.lock().unwrap().push(next);
                rotations += 1;
            }
            rotations
        })
    };
    let mut workers = Vec::new();
    for _ in 0..8 {
        let rt = rt.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut handles) = (0u64, Vec::new(), Vec::new());
            while std::time::Instant::now() < deadline {
                let result = async {
                    let conn = rt.connection::<P>(name).await?;
                    let row = conn.query(sql).uncached().fetch_one::<(i64,)>().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((conn, row.0))
                }
                .await;
                match result {
                    Ok((conn, 1)) => {
                        ok += 1;
                        if !handles.iter().any(|h: &Conn<P>| h.id() == conn.id()) {
                            handles.push(conn);
                        }
                    }
                    Ok((_, other)) => failed.push(format!("wrong row {other}")),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (ok, failed, handles)
        }));
    }
    let (mut ok, mut failed, mut handles) = (0, Vec::new(), Vec::new());
    for w in workers {
        let (o, f, h) = w.await.unwrap();
        ok += o;
        failed.extend(f);
        for conn in h {
            if !handles.iter().any(|c: &Conn<P>| c.id() == conn.id()) {
                handles.push(conn);
            }
        }
    }
    let rotations = rotator.await.unwrap();
    let report = rt.shutdown().await;
    let all_closed = sql_support::eventually(Duration::from_secs(10), async || {
        handles.iter().all(|c| c.counters().closes == c.counters().connects)
    })
    .await;
    let per_handle: Vec<_> = handles.iter().map(|c| (c.counters().connects, c.counters().closes)).collect();
    // Per pool: connections opened, found lost, reopened, failed calls.
    let pools: Vec<_> = handles
        .iter()
        .map(|c| {
            let s = c.sql_stats();
            (s.connections_opened, s.connections_lost, s.reconnects, s.errors)
        })
        .collect();
    let note = format!(
        "secrets file watch, {label}, {secs} s: {ok} queries ok, {} failed; {rotations} rotations; {} \
         connections used (connects, closes each: {per_handle:?}; pool connections opened, lost, reopened, \
         errors each: {pools:?}); shutdown {report:?}",
        failed.len(),
        handles.len(),
    );
    sql_support::loud(&note);
    assert!(failed.is_empty(), "{} failed queries, first: {:?}", failed.len(), failed.first());
    assert!(rotations >= secs.saturating_sub(2), "{note}");
    assert!(handles.len() as u64 >= rotations, "a connection per password: {note}");
    assert!(all_closed, "every pool closed: {note}");
    for c in &handles {
        assert_eq!((c.counters().connects, c.counters().closes), (1, 1), "each exactly once: {note}");
    }
    let passwords = passwords.lock().unwrap().clone();
    rotation_support::no_secret_logged(&passwords);
    passwords
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_secrets_watch_needs_the_postgres_feature() {
    sql_support::loud("*** SKIPPED secrets watch against PostgreSQL: build with --features postgres");
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use connscope::sql::PostgresDb;
    use rotation_support::pg;
    use sqlx::{Connection, PgConnection};

    /// The role's password changes every second on the server and then in the secrets file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queries_never_fail_while_the_secrets_file_password_changes() {
        let Some(url) = sql_support::server_url("DATABASE_URL", "secrets file watch (PostgreSQL)") else {
            return;
        };
        let _ = logs();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let role = sql_support::unique("connscope_rot_watch");
        let first = sql_support::unique("tok-watch");
        let enforced = pg::role_with_password("secrets watch", &mut admin, &url, &role, &first).await;
        let app = sql_support::unique("watch");
        let role_url = pg::url_as(&url, &role, &app);
        let path = secrets_file("watch-pg");
        write_atomically(&path, &server_config("pg_watched", &role_url, &first));
        let rotate = {
            let (url, role, path) = (url.clone(), role.clone(), path.clone());
            move |next: String| {
                let (url, role, role_url, path) = (url.clone(), role.clone(), role_url.clone(), path.clone());
                async move {
                    let mut admin = PgConnection::connect(&url).await.unwrap();
                    pg::exec(&mut admin, format!("alter role {role} password '{next}'")).await;
                    let _ = admin.close().await;
                    write_atomically(&path, &server_config("pg_watched", &role_url, &next));
                }
            }
        };
        let label = format!("PostgreSQL (password enforced: {enforced})");
        watch_soak::<PostgresDb, _, _>(&label, &path, "pg_watched", "select 1::int8", first, rotate).await;
        let none_left = sql_support::eventually(Duration::from_secs(5), async || {
            pg::backends_of(&mut admin, &app).await == 0
        })
        .await;
        assert!(none_left, "no backend left open");
        pg::exec(&mut admin, format!("drop role if exists {role}")).await;
    }
}

#[cfg(feature = "mysql")]
mod mariadb {
    use super::*;
    use connscope::sql::MySqlDb;
    use rotation_support::my;
    use sqlx::{Connection, MySqlConnection};

    /// The user's password changes every second on the server and then in the secrets file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mariadb_queries_never_fail_while_the_secrets_file_password_changes() {
        let Some(url) = sql_support::server_url("MYSQL_URL", "secrets file watch (MariaDB)") else {
            return;
        };
        let _ = logs();
        let mut admin = MySqlConnection::connect(&url).await.unwrap();
        // MariaDB user names are at most 80 characters (MySQL: 32): short and unique.
        let user = format!("cs_watch_{}", std::process::id());
        let first = sql_support::unique("tok-watch");
        let user_url = my::user_with_password(&mut admin, &url, &user, &first).await;
        let path = secrets_file("watch-my");
        write_atomically(&path, &server_config("my_watched", &user_url, &first));
        let rotate = {
            let (url, user, path) = (url.clone(), user.clone(), path.clone());
            move |next: String| {
                let (url, user, user_url, path) = (url.clone(), user.clone(), user_url.clone(), path.clone());
                async move {
                    let mut admin = MySqlConnection::connect(&url).await.unwrap();
                    my::set_password(&mut admin, &user, &next).await;
                    let _ = admin.close().await;
                    write_atomically(&path, &server_config("my_watched", &user_url, &next));
                }
            }
        };
        watch_soak::<MySqlDb, _, _>("MariaDB", &path, "my_watched", "select 1", first, rotate).await;
        let none_left = sql_support::eventually(Duration::from_secs(5), async || {
            my::connections_of(&mut admin, &user).await == 0
        })
        .await;
        assert!(none_left, "no connection left open");
        my::drop_user(&mut admin, &user).await;
    }
}

#[derive(Connection, serde::Deserialize)]
#[connection(name = "watched_session", scope = "session")]
struct WatchedSession {
    host: String,
}

impl Provider for WatchedSession {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        journal().lock().unwrap().connects.push(self.host.clone());
        Ok(self.host.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
    async fn close(&self, raw: &String) {
        journal().lock().unwrap().closes.push(raw.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_connection_is_made_again_with_the_new_settings_and_the_old_one_closed_once() {
    let _ = logs();
    let path = secrets_file("watch-session");
    let (one, two) = (sql_support::unique("ses-one"), sql_support::unique("ses-two"));
    write_atomically(&path, &format!("[connections.watched_session]\nhost = \"{one}\"\n"));
    // Paused time runs fast: only the settings change may end the old connection.
    let rt = Runtime::builder()
        .no_idle_timeout()
        .no_session_lifetime()
        .secrets_file(&path)
        .secrets_poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(50))
        .build();
    let session = rt.session();
    let lookup = || {
        let (rt, session) = (rt.clone(), session.clone());
        async move {
            session
                .run(async move { rt.connection::<WatchedSession>("watched_session").await })
                .await
                .unwrap()
        }
    };
    let old = lookup().await;
    assert_eq!(*old.get().await.unwrap(), one);
    write_atomically(&path, &format!("[connections.watched_session]\nhost = \"{two}\"\n"));
    until("the session's lookup gets the new settings", async || lookup().await.provider().host == two).await;
    assert_eq!(*lookup().await.get().await.unwrap(), two);
    until("the old client closes", async || !closes(&one).is_empty()).await;
    settle().await;
    assert_eq!(closes(&one), vec![one.clone()], "closed exactly once");
    session.end().await;
    assert_eq!(closes(&two), vec![two.clone()], "the new one closes once at the session's end");
    assert_eq!(closes(&one).len(), 1);
    rt.shutdown().await;
}

/// Session connections are not connected ahead with the new settings: with many live
/// sessions that would be a connect storm on the database the moment the file changes. Each
/// session's old connection is drained and closed at once; a session connects with the new
/// settings at its next lookup, and a session that never looks its connection up again never
/// connects.
#[tokio::test(start_paused = true)]
async fn session_connections_reconnect_at_their_next_lookup_not_all_at_once() {
    let _ = logs();
    let path = secrets_file("watch-sessions");
    let (one, two) = (sql_support::unique("many-one"), sql_support::unique("many-two"));
    write_atomically(&path, &format!("[connections.watched_session]\nhost = \"{one}\"\n"));
    let rt = Runtime::builder()
        .no_idle_timeout()
        .no_session_lifetime()
        .secrets_file(&path)
        .secrets_poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(50))
        .build();
    let sessions: Vec<_> = (0..200).map(|_| rt.session()).collect();
    let lookup = |session: &connscope::Session| {
        let (rt, session) = (rt.clone(), session.clone());
        async move {
            session
                .run(async move {
                    rt.connection::<WatchedSession>("watched_session").await?.get().await.map(|c| c.clone())
                })
                .await
                .unwrap()
        }
    };
    for s in &sessions {
        assert_eq!(lookup(s).await, one);
    }
    assert_eq!(connects(&one).len(), 200);
    write_atomically(&path, &format!("[connections.watched_session]\nhost = \"{two}\"\n"));
    until("every old connection closes", async || closes(&one).len() == 200).await;
    settle().await;
    assert_eq!(closes(&one).len(), 200, "each closed exactly once");
    assert!(connects(&two).is_empty(), "nothing connected ahead of the sessions' lookups");
    for s in &sessions[..3] {
        assert_eq!(lookup(s).await, two);
    }
    assert_eq!(connects(&two).len(), 3, "one connect per session that looked its connection up");
    rt.shutdown().await;
    assert_eq!(closes(&two).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_file_invalid_at_start_is_taken_once_it_is_fixed() {
    let _ = logs();
    let path = secrets_file("watch-late");
    write_atomically(&path, "[connections.watched\nhost = \"broken\"\n");
    let rt = Runtime::builder()
        .secrets_file(&path)
        .secrets_poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(50))
        .build();
    let err = rt.connection::<Watched>("watched").await.unwrap_err().to_string();
    assert!(err.contains("not valid TOML"), "{err}");
    let fixed = sql_support::unique("late-fixed");
    write_atomically(&path, &section("watched", &fixed, "pw-late-1"));
    until("the fixed file is taken", async || {
        rt.connection::<Watched>("watched").await.is_ok_and(|c| c.provider().host == fixed)
    })
    .await;
    rt.shutdown().await;
}
