//! MySQL / MariaDB provider against a real server (enabled by `MYSQL_URL`): a killed
//! connection replaced transparently, load under `KILL`s, wrong password / unknown database /
//! refused with their causes, and a query cache checked by the server's own count.

mod sql_support;

#[cfg(not(feature = "mysql"))]
#[test]
fn mysql_suite_needs_the_mysql_feature() {
    sql_support::loud("SKIPPED sql_mysql: build with `--features mysql` (or --all-features)");
}

#[cfg(feature = "mysql")]
mod my {
    use std::time::{Duration, Instant};

    use connscope::sql::{ConnectCause, MySqlDb, MySqlLogin, SqlError};
    use connscope::{Conn, Runtime};
    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

    use super::sql_support::{
        eventually, free_port, load_under_kills, runtime, server_url, shut_down, statement_timeout_holds,
        unique,
    };

    struct Server {
        url: String,
        host: String,
        port: u16,
        db: String,
    }

    fn server(test: &str) -> Option<Server> {
        let url = server_url("MYSQL_URL", test)?;
        let o: MySqlConnectOptions = url.parse().unwrap();
        Some(Server {
            host: o.get_host().to_owned(),
            port: o.get_port(),
            db: o.get_database().unwrap_or("test").to_owned(),
            url,
        })
    }

    async fn admin(s: &Server) -> MySqlConnection {
        MySqlConnection::connect(&s.url).await.unwrap()
    }

    async fn exec(admin: &mut MySqlConnection, sql: String) {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await.unwrap();
    }

    /// A fresh user with all rights on the test database; the tests find its connections by it.
    async fn user(s: &Server, admin: &mut MySqlConnection, password: &str) -> String {
        let user = unique("cs_my");
        exec(admin, format!("create user '{user}'@'%' identified by '{password}'")).await;
        exec(admin, format!("grant all privileges on `{}`.* to '{user}'@'%'", s.db)).await;
        user
    }

    async fn drop_user(admin: &mut MySqlConnection, user: &str) {
        exec(admin, format!("drop user '{user}'@'%'")).await;
    }

    fn rt(name: &str, s: &Server, user: &str, password: &str, extra: &[(&str, toml::Value)]) -> Runtime {
        let mut settings = vec![
            (name, "url", format!("mysql://{}:{}/{}", s.host, s.port, s.db).into()),
            (name, "user", user.into()),
            (name, "password", password.into()),
        ];
        settings.extend(extra.iter().map(|(f, v)| (name, *f, v.clone())));
        runtime(&settings)
    }

    /// `KILL`s every connection of `user`; returns how many.
    async fn kill_connections(admin: &mut MySqlConnection, user: &str) -> usize {
        let ids: Vec<i64> = sqlx::query_scalar(
            "select cast(id as signed) from information_schema.processlist where user = ?",
        )
        .bind(user)
        .fetch_all(&mut *admin)
        .await
        .unwrap();
        for id in &ids {
            // Text protocol: KILL cannot be prepared. "Unknown thread" just means it is gone.
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("kill {id}"))).execute(&mut *admin).await;
        }
        ids.len()
    }

    async fn connections(admin: &mut MySqlConnection, user: &str) -> i64 {
        sqlx::query_scalar("select count(*) from information_schema.processlist where user = ?")
            .bind(user)
            .fetch_one(admin)
            .await
            .unwrap()
    }

    async fn one(conn: &Conn<MySqlDb>) -> Result<i64, SqlError> {
        Ok(conn.query("select cast(1 as signed)").uncached().fetch_one::<(i64,)>().await?.0)
    }

    #[tokio::test]
    async fn a_statement_past_its_timeout_fails_and_its_connection_is_closed() {
        let Some(s) = server("a_statement_past_its_timeout_fails") else {
            return;
        };
        let mut admin = admin(&s).await;
        let user = user(&s, &mut admin, "pw-slow").await;
        let rt = rt("slow", &s, &user, "pw-slow", &[("statement_timeout", "300ms".into())]);
        let conn = rt.connection::<MySqlDb>("slow").await.unwrap();
        let slow = "select cast(sleep(30) as signed)";
        statement_timeout_holds(&conn, slow, "select cast(1 as signed)", Duration::from_millis(300)).await;
        shut_down(&rt, 1).await;
        kill_connections(&mut admin, &user).await;
        drop_user(&mut admin, &user).await;
    }

    #[tokio::test]
    async fn a_login_forgets_the_password_so_a_killed_connection_is_not_silently_reopened() {
        let Some(s) = server("a_login_forgets_the_password_so_a_killed_connection_is_not_silently_reopened")
        else {
            return;
        };
        let mut admin = admin(&s).await;
        let user = user(&s, &mut admin, "pw-login").await;
        let rt = runtime(&[]);
        let session = rt.session();
        let url = format!("mysql://{}:{}/{}", s.host, s.port, s.db);
        let conn = session.login("mine", MySqlLogin::new(url, user.clone(), "pw-login")).await.unwrap();
        assert!(conn.provider().password.is_empty(), "the settings' password was wiped");
        let q = || conn.query("select cast(1 as signed)").uncached().fetch_one::<(i64,)>();
        assert_eq!(q().await.unwrap().0, 1);
        assert!(kill_connections(&mut admin, &user).await >= 1);
        // The pool no longer holds the password: it cannot reopen the user's connection.
        let err = q().await.expect_err("a killed login connection must not be reopened silently");
        assert!(err.to_string().to_lowercase().contains("access denied"), "{err}");
        shut_down(&rt, 1).await;
        drop_user(&mut admin, &user).await;
    }

    #[tokio::test]
    async fn a_killed_connection_is_replaced_transparently_and_counted() {
        let Some(s) = server("a_killed_connection_is_replaced_transparently_and_counted") else { return };
        let mut admin = admin(&s).await;
        let u = user(&s, &mut admin, "pw").await;
        let rt = rt("my", &s, &u, "pw", &[("check_idle_after", "1h".into())]);
        let conn = rt.connection::<MySqlDb>("my").await.unwrap();
        assert_eq!(one(&conn).await.unwrap(), 1);
        let client = conn.get().await.unwrap();
        assert!(eventually(Duration::from_secs(5), async || client.pool().num_idle() == 1).await);
        assert!(kill_connections(&mut admin, &u).await >= 1);
        assert!(eventually(Duration::from_secs(5), async || connections(&mut admin, &u).await == 0).await);
        assert_eq!(one(&conn).await.unwrap(), 1, "the next query succeeds");
        let st = conn.sql_stats();
        assert_eq!((st.connections_lost, st.retries, st.reconnects), (1, 1, 1), "{st:?}");
        eprintln!("killed-connection stats: {st:?}");
        drop(client);
        shut_down(&rt, 1).await;
        drop_user(&mut admin, &u).await;
    }

    /// The connection is killed between two calls the test makes: a write sent on it may or
    /// may not have applied, so it is not retried; a read is.
    #[tokio::test]
    async fn a_write_sent_on_a_killed_connection_is_not_retried_and_a_read_is() {
        let Some(s) = server("a_write_sent_on_a_killed_connection_is_not_retried") else { return };
        let mut admin = admin(&s).await;
        let u = user(&s, &mut admin, "pw").await;
        let table = unique("cs_writes");
        exec(&mut admin, format!("create table {table} (k bigint not null)")).await;
        let insert: &'static str = Box::leak(format!("insert into {table} (k) values (?)").into_boxed_str());
        let count_sql = format!("select count(*) from {table} where k = ?");
        let count = async |admin: &mut MySqlConnection, k: i64| -> i64 {
            sqlx::query_scalar(AssertSqlSafe(count_sql.clone())).bind(k).fetch_one(admin).await.unwrap()
        };
        let rt = rt(
            "my",
            &s,
            &u,
            "pw",
            &[("check_idle_after", "1h".into()), ("max_connections", toml::Value::Integer(1))],
        );
        let conn = rt.connection::<MySqlDb>("my").await.unwrap();
        let kill = async |admin: &mut MySqlConnection| {
            let client = conn.get().await.unwrap();
            assert!(eventually(Duration::from_secs(5), async || client.pool().num_idle() == 1).await);
            assert_eq!(kill_connections(admin, &u).await, 1);
            assert!(eventually(Duration::from_secs(5), async || connections(admin, &u).await == 0).await);
        };

        assert_eq!(conn.execute(insert).bind(1).await.unwrap(), 1);
        kill(&mut admin).await;
        let err = conn.execute(insert).bind(2).await.expect_err("a sent write must not be retried");
        assert!(matches!(err, SqlError::ConnectionLost { retried: false, .. }), "{err:?}");
        assert_eq!(count(&mut admin, 2).await, 0, "and it ran nowhere else");
        let st = conn.sql_stats();
        assert_eq!((st.connections_lost, st.retries), (1, 0), "{st:?}");

        assert_eq!(conn.execute(insert).bind(3).await.unwrap(), 1, "the next write works");
        kill(&mut admin).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "a read on a killed connection is retried");
        let st = conn.sql_stats();
        assert_eq!((st.connections_lost, st.retries), (2, 1), "{st:?}");
        assert_eq!((count(&mut admin, 1).await, count(&mut admin, 3).await), (1, 1));
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop table {table}")).await;
        drop_user(&mut admin, &u).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_with_connections_killed_three_times_no_query_fails() {
        let Some(s) = server("under_load_with_connections_killed_three_times_no_query_fails") else {
            return;
        };
        let mut admin = admin(&s).await;
        let u = user(&s, &mut admin, "pw").await;
        let rt = rt("my", &s, &u, "pw", &[]);
        let conn = rt.connection::<MySqlDb>("my").await.unwrap();
        let (admin_url, killer_user) = (s.url.clone(), u.clone());
        let figures = load_under_kills(&conn, "select cast(? + 1 as signed)", 8, 100, 3, move || {
            let (url, user) = (admin_url.clone(), killer_user.clone());
            async move {
                let mut admin = MySqlConnection::connect(&url).await.unwrap();
                let n = kill_connections(&mut admin, &user).await;
                let _ = admin.close().await;
                n
            }
        })
        .await;
        assert_eq!(figures.failed, 0);
        assert_eq!(figures.kill_rounds, 3, "{figures:?}");
        assert_eq!(figures.rounds_that_killed, 3, "every round met live backends: {figures:?}");
        assert!(figures.connections_lost > 0, "and met: {figures:?}");
        shut_down(&rt, 1).await;
        drop_user(&mut admin, &u).await;
    }

    async fn expect_cause(conn: &Conn<MySqlDb>, cause: ConnectCause, words: &str) {
        let err = one(conn).await.unwrap_err();
        assert_eq!(err.connect_cause(), Some(cause), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("`{}`", conn.name())) && text.contains(words), "{text}");
        assert!(!conn.is_connected(), "nothing kept from a failed connect");
        eprintln!("{cause:?}: {text}");
    }

    #[tokio::test]
    async fn connect_errors_name_the_connection_and_cause_and_the_next_call_after_a_fix_works() {
        let Some(s) = server("connect_errors_name_the_connection_and_cause") else { return };
        let mut admin = admin(&s).await;

        // Wrong password, then the account's password is the configured one.
        let u = user(&s, &mut admin, "right").await;
        let rt = rt("wrongpw", &s, &u, "wrong-pw", &[]);
        let conn = rt.connection::<MySqlDb>("wrongpw").await.unwrap();
        expect_cause(&conn, ConnectCause::Auth, "authentication failed").await;
        assert!(!format!("{conn:?} {:?}", conn.provider()).contains("wrong-pw"), "the password never shows");
        let cached = conn.sql_stats();
        assert_eq!((cached.statements, cached.cache_hits), (0, 0));
        exec(&mut admin, format!("alter user '{u}'@'%' identified by 'wrong-pw'")).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "the next call after the fix works");
        shut_down(&rt, 1).await;
        drop_user(&mut admin, &u).await;

        // Unknown database, then created.
        let db = unique("cs_db");
        let url = format!("mysql://{}:{}/{db}", s.host, s.port);
        let root: MySqlConnectOptions = s.url.parse().unwrap();
        let rt = runtime(&[("nodb", "url", url.into()), ("nodb", "user", root.get_username().into())]);
        let conn = rt.connection::<MySqlDb>("nodb").await.unwrap();
        expect_cause(&conn, ConnectCause::UnknownDatabase, "unknown database").await;
        exec(&mut admin, format!("create database {db}")).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "the next call after the database exists works");
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop database {db}")).await;

        // Nothing listening.
        let port = free_port();
        let rt = runtime(&[
            ("down", "url", format!("mysql://root@127.0.0.1:{port}/test").into()),
            ("down", "connect_timeout", "60s".into()),
        ]);
        let conn = rt.connection::<MySqlDb>("down").await.unwrap();
        let t = Instant::now();
        expect_cause(&conn, ConnectCause::Refused, "connection refused").await;
        // connect_timeout is 60 s here: far from that bound, however slow the machine.
        assert!(t.elapsed() < Duration::from_secs(30), "refused fails fast, not after the pool's timeout");
        shut_down(&rt, 1).await;
    }

    #[derive(Debug, sqlx::FromRow)]
    struct Hit {
        k: i64,
    }

    #[tokio::test]
    async fn the_query_cache_is_checked_by_the_servers_own_count() {
        let Some(s) = server("the_query_cache_is_checked_by_the_servers_own_count") else { return };
        let mut admin = admin(&s).await;
        let table = unique("cs_hits");
        exec(
            &mut admin,
            format!("create table {table} (id int auto_increment primary key, k bigint not null)"),
        )
        .await;
        // Every execution of the probe leaves a row: the server's count of how often it ran.
        let probe_sql: &'static str =
            Box::leak(format!("insert into {table} (k) values (?) returning k").into_boxed_str());
        let count_sql = format!("select count(*) from {table} where k = ?");
        let mut count = async |k: i64| -> i64 {
            sqlx::query_scalar(AssertSqlSafe(count_sql.clone())).bind(k).fetch_one(&mut admin).await.unwrap()
        };
        let rt = runtime(&[("my", "url", s.url.clone().into())]);
        let conn = rt.connection::<MySqlDb>("my").await.unwrap();
        // No assertion depends on the machine's speed: a long ttl for the hits, and a short one
        // the test sleeps past (a sleep lasts at least its duration) for the expiry.
        let (long, short) = (Duration::from_secs(600), Duration::from_millis(50));
        let probe = |k: i64, ttl: Duration| conn.query(probe_sql).bind(k).ttl(ttl).fetch_all::<Hit>();
        assert_eq!(probe(1, long).await.unwrap()[0].k, 1);
        assert_eq!(probe(1, long).await.unwrap()[0].k, 1);
        assert_eq!(count(1).await, 1, "the second identical query within ttl did not reach the server");
        probe(2, long).await.unwrap();
        assert_eq!((count(1).await, count(2).await), (1, 1), "different binds are different entries");
        probe(4, short).await.unwrap();
        tokio::time::sleep(short * 2).await;
        probe(4, short).await.unwrap();
        assert_eq!(count(4).await, 2, "after the ttl it reaches the server again");

        let err = conn.query("selec 1").fetch_all::<(i64,)>().await.unwrap_err();
        assert!(matches!(err, SqlError::Database { .. }) && err.to_string().contains("SQL syntax"), "{err}");
        assert_eq!(conn.sql_stats().retries, 0, "a rejected statement is not retried");
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop table {table}")).await;
    }
}

/// The quickstart (`cargo run --example quickstart --features mysql` with `url = "mysql://…"` in
/// `examples/secrets.toml`) against MariaDB: the same output as the README's, on MySQL.
#[cfg(all(feature = "mysql", feature = "sqlite"))]
#[allow(dead_code)]
#[path = "../../examples/quickstart.rs"]
mod quickstart;

#[cfg(all(feature = "mysql", feature = "sqlite"))]
#[tokio::test]
async fn the_quickstart_runs_on_mysql() {
    let Some(url) = sql_support::server_url("MYSQL_URL", "the_quickstart_runs_on_mysql") else { return };
    let builder = connscope::Runtime::builder()
        .secrets_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/secrets.toml"))
        .connection_setting("shop", "url", url);
    let mut out = Vec::new();
    quickstart::quickstart_on(builder, &mut out).await.expect("the quickstart runs on MySQL");
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert_eq!(lines[0], "connected to mysql");
    assert!(lines[1].starts_with("call 1: 2 rows in "), "{text}");
    assert_eq!(lines[2], "  amer  2 orders   409.90");
    assert_eq!(lines[3], "  emea  2 orders   200.50");
    assert!(lines[4].starts_with("call 2: 2 rows in "), "{text}");
    assert!(
        lines[5].starts_with("cache: 1 hit(s), 1 miss(es); 8 statement(s) sent to the database, "),
        "{text}"
    );
    // One more than on SQLite: the handle the quickstart reads the URL through (a `SqliteDb`,
    // never connected) is a type of its own here.
    assert_eq!(lines[6], "runtime shut down: 3 cached value(s) released, connections closed");
}
