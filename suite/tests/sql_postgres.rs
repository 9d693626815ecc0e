//! PostgreSQL provider against a real server (enabled by `DATABASE_URL`): killed backends
//! replaced transparently, load under kills, two sessions as two roles, connect errors by
//! cause, half-open connections, and a query cache checked by the server's own count.

mod sql_support;

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_suite_needs_the_postgres_feature() {
    sql_support::loud("SKIPPED sql_postgres: build with `--features postgres` (or --all-features)");
}

#[cfg(feature = "postgres")]
mod pg {
    use std::time::{Duration, Instant};

    use connscope::sql::{ConnectCause, PostgresDb, PostgresLogin, SqlError};
    use connscope::{Conn, Runtime};
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    use super::sql_support::{
        Forwarder, eventually, free_port, load_under_kills, runtime, server_url, shut_down,
        statement_timeout_holds, unique,
    };

    /// The URL with `application_name` set, so a test finds exactly its own backends.
    fn tagged(url: &str, app: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={app}")
    }

    /// `url` with another port (and the rest unchanged).
    fn with_port(url: &str, port: u16) -> String {
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        format!(
            "postgres://{}@127.0.0.1:{port}/{}",
            opts.get_username(),
            opts.get_database().unwrap_or("postgres")
        )
    }

    async fn admin(url: &str) -> PgConnection {
        PgConnection::connect(url).await.unwrap()
    }

    async fn exec(admin: &mut PgConnection, sql: String) {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await.unwrap();
    }

    /// Terminates every backend of application `app`; returns how many.
    async fn kill_backends(admin: &mut PgConnection, app: &str) -> usize {
        let killed: Vec<(bool,)> = sqlx::query_as(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = $1 and pid <> pg_backend_pid()",
        )
        .bind(app)
        .fetch_all(admin)
        .await
        .unwrap();
        killed.len()
    }

    async fn backends(admin: &mut PgConnection, app: &str, user: Option<&str>) -> i64 {
        sqlx::query_scalar(
            "select count(*) from pg_stat_activity where application_name = $1 \
             and ($2::text is null or usename = $2)",
        )
        .bind(app)
        .bind(user)
        .fetch_one(admin)
        .await
        .unwrap()
    }

    fn pg_rt(name: &str, url: &str, extra: &[(&str, toml::Value)]) -> Runtime {
        let mut settings = vec![(name, "url", url.into())];
        settings.extend(extra.iter().map(|(f, v)| (name, *f, v.clone())));
        runtime(&settings)
    }

    /// Waits (bounded) until the pool's connection is back in its idle queue (sqlx returns it,
    /// after a ping, in a background task).
    async fn idle_in_pool(conn: &Conn<PostgresDb>) {
        let client = conn.get().await.unwrap();
        assert!(eventually(Duration::from_secs(5), async || client.pool().num_idle() == 1).await);
    }

    async fn one(conn: &Conn<PostgresDb>) -> Result<i64, SqlError> {
        Ok(conn.query("select 1::int8").uncached().fetch_one::<(i64,)>().await?.0)
    }

    #[tokio::test]
    async fn a_killed_backend_is_replaced_transparently_and_counted() {
        let Some(url) = server_url("DATABASE_URL", "a_killed_backend_is_replaced_transparently_and_counted")
        else {
            return;
        };
        let mut admin = admin(&url).await;
        // Never pinged before use: the query itself meets the dead backend and is retried.
        let app = unique("cs_kill");
        let rt = pg_rt("pg", &tagged(&url, &app), &[("check_idle_after", "1h".into())]);
        let conn = rt.connection::<PostgresDb>("pg").await.unwrap();
        assert_eq!(one(&conn).await.unwrap(), 1);
        idle_in_pool(&conn).await;
        assert!(kill_backends(&mut admin, &app).await >= 1);
        assert!(
            eventually(Duration::from_secs(5), async || backends(&mut admin, &app, None).await == 0).await
        );
        assert_eq!(one(&conn).await.unwrap(), 1, "the next query succeeds");
        let s = conn.sql_stats();
        assert_eq!((s.connections_lost, s.retries, s.reconnects), (1, 1, 1), "{s:?}");
        assert_eq!(one(&conn).await.unwrap(), 1);

        // Pinged before use: the dead pooled connection is found and replaced before the query.
        let app = unique("cs_kill_ping");
        let rt2 = pg_rt("pg", &tagged(&url, &app), &[("check_idle_after", "0s".into())]);
        let conn = rt2.connection::<PostgresDb>("pg").await.unwrap();
        assert_eq!(one(&conn).await.unwrap(), 1);
        idle_in_pool(&conn).await;
        kill_backends(&mut admin, &app).await;
        assert!(
            eventually(Duration::from_secs(5), async || backends(&mut admin, &app, None).await == 0).await
        );
        assert_eq!(one(&conn).await.unwrap(), 1);
        let s = conn.sql_stats();
        assert_eq!((s.connections_lost, s.retries, s.reconnects), (1, 0, 1), "{s:?}");
        eprintln!("killed-backend stats: {s:?}");
        shut_down(&rt, 1).await;
        shut_down(&rt2, 1).await;
    }

    /// The backend is killed between two calls the test makes, so what happens is an event, not
    /// a race: a write sent on a dead connection may or may not have applied, so it is not
    /// retried (the caller gets `ConnectionLost { retried: false }`); a read is retried.
    #[tokio::test]
    async fn a_write_sent_on_a_killed_connection_is_not_retried_and_a_read_is() {
        let Some(url) = server_url("DATABASE_URL", "a_write_sent_on_a_killed_connection_is_not_retried")
        else {
            return;
        };
        let mut admin = admin(&url).await;
        let table = unique("cs_writes");
        exec(&mut admin, format!("create table {table} (k int8 not null)")).await;
        let insert: &'static str = Box::leak(format!("insert into {table} (k) values ($1)").into_boxed_str());
        let count_sql = format!("select count(*) from {table} where k = $1");
        let count = async |admin: &mut PgConnection, k: i64| -> i64 {
            sqlx::query_scalar(AssertSqlSafe(count_sql.clone())).bind(k).fetch_one(admin).await.unwrap()
        };
        let app = unique("cs_write");
        let rt = pg_rt(
            "pg",
            &tagged(&url, &app),
            &[("check_idle_after", "1h".into()), ("max_connections", toml::Value::Integer(1))],
        );
        let conn = rt.connection::<PostgresDb>("pg").await.unwrap();
        let kill = async |admin: &mut PgConnection| {
            idle_in_pool(&conn).await;
            assert_eq!(kill_backends(admin, &app).await, 1);
            assert!(
                eventually(Duration::from_secs(5), async || backends(admin, &app, None).await == 0).await
            );
        };

        assert_eq!(conn.execute(insert).bind(1).await.unwrap(), 1);
        kill(&mut admin).await;
        let err = conn.execute(insert).bind(2).await.expect_err("a sent write must not be retried");
        assert!(matches!(err, SqlError::ConnectionLost { retried: false, .. }), "{err:?}");
        assert_eq!(count(&mut admin, 2).await, 0, "and it ran nowhere else");
        let s = conn.sql_stats();
        assert_eq!((s.connections_lost, s.retries), (1, 0), "{s:?}");

        assert_eq!(conn.execute(insert).bind(3).await.unwrap(), 1, "the next write works");
        kill(&mut admin).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "a read on a killed connection is retried");
        let s = conn.sql_stats();
        assert_eq!((s.connections_lost, s.retries), (2, 1), "{s:?}");
        assert_eq!((count(&mut admin, 1).await, count(&mut admin, 3).await), (1, 1));
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop table {table}")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_with_backends_killed_three_times_no_query_fails() {
        let Some(url) =
            server_url("DATABASE_URL", "under_load_with_backends_killed_three_times_no_query_fails")
        else {
            return;
        };
        let app = unique("cs_load");
        let rt = pg_rt("pg", &tagged(&url, &app), &[]);
        let conn = rt.connection::<PostgresDb>("pg").await.unwrap();
        let killer_url = url.clone();
        let killer_app = app.clone();
        let figures = load_under_kills(&conn, "select $1::int8 + 1", 8, 100, 3, move || {
            let (url, app) = (killer_url.clone(), killer_app.clone());
            async move {
                let mut admin = admin(&url).await;
                let n = kill_backends(&mut admin, &app).await;
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
    }

    #[tokio::test]
    async fn two_sessions_as_two_roles_see_their_own_user_and_ending_one_closes_exactly_its_backend() {
        let Some(url) = server_url("DATABASE_URL", "two_sessions_as_two_roles") else {
            return;
        };
        let mut admin = admin(&url).await;
        let (ada, bob) = (unique("cs_ada"), unique("cs_bob"));
        for role in [&ada, &bob] {
            exec(&mut admin, format!("create role {role} login password 'pw-{role}'")).await;
        }
        let app = unique("cs_roles");
        // Each user's credentials: `[connections.<user>]` with the server URL (no credentials),
        // `user` and `password` — what a login supplies.
        let mut settings = Vec::new();
        for role in [&ada, &bob] {
            settings.push((role.as_str(), "url", tagged(&url, &app).into()));
            settings.push((role.as_str(), "user", role.clone().into()));
            settings.push((role.as_str(), "password", format!("pw-{role}").into()));
            settings.push((role.as_str(), "max_connections", toml::Value::Integer(1)));
        }
        let rt = runtime(&settings);
        let (a, b) = (rt.session(), rt.session());
        let ask = |name: String, sql: &'static str| {
            let rt = rt.clone();
            async move {
                let conn = rt.connection::<PostgresLogin>(&name).await?;
                Ok::<_, SqlError>(conn.query(sql).uncached().fetch_one::<(String,)>().await?.0.clone())
            }
        };
        const WHO: &str = "select current_user::text";
        const PID: &str = "select pg_backend_pid()::text";
        assert_eq!(a.run(ask(ada.clone(), WHO)).await.unwrap(), ada);
        assert_eq!(b.run(ask(bob.clone(), WHO)).await.unwrap(), bob);
        let bob_pid = b.run(ask(bob.clone(), PID)).await.unwrap();
        let count = async |admin: &mut PgConnection, role: &str| backends(admin, &app, Some(role)).await;
        assert_eq!((count(&mut admin, &ada).await, count(&mut admin, &bob).await), (1, 1));

        let report = a.end().await;
        assert!(report.released >= 1, "session a's connection was released: {report:?}");
        assert!(
            eventually(Duration::from_secs(5), async || count(&mut admin, &ada).await == 0).await,
            "ending session a closed its backend"
        );
        assert_eq!(count(&mut admin, &bob).await, 1, "session b's backend is untouched");
        assert_eq!(b.run(ask(bob.clone(), WHO)).await.unwrap(), bob, "session b keeps working");
        assert_eq!(b.run(ask(bob.clone(), PID)).await.unwrap(), bob_pid, "on the same backend");
        shut_down(&rt, 1).await;
        for role in [&ada, &bob] {
            exec(&mut admin, format!("drop role {role}")).await;
        }
    }

    async fn expect_cause(conn: &Conn<PostgresDb>, cause: ConnectCause, words: &str) {
        let err = one(conn).await.unwrap_err();
        assert_eq!(err.connect_cause(), Some(cause), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("`{}`", conn.name())) && text.contains(words), "{text}");
        assert!(!conn.is_connected(), "nothing kept from a failed connect");
        eprintln!("{cause:?}: {text}");
    }

    #[tokio::test]
    async fn connect_errors_name_the_connection_and_cause_and_the_next_call_after_a_fix_works() {
        let Some(url) = server_url("DATABASE_URL", "connect_errors_name_the_connection_and_cause") else {
            return;
        };
        let mut admin = admin(&url).await;

        // Server not listening, then listening.
        let port = free_port();
        let rt = pg_rt("down", &with_port(&url, port), &[("connect_timeout", "60s".into())]);
        let conn = rt.connection::<PostgresDb>("down").await.unwrap();
        let t = Instant::now();
        expect_cause(&conn, ConnectCause::Refused, "connection refused").await;
        // connect_timeout is 60 s here: far from that bound, however slow the machine.
        assert!(t.elapsed() < Duration::from_secs(30), "refused fails fast, not after the pool's timeout");
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let _server = Forwarder::start(port, &format!("{}:{}", opts.get_host(), opts.get_port())).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "the next call after the server listens works");
        shut_down(&rt, 1).await;

        // Unknown database, then created.
        let db = unique("cs_db");
        let db_url = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
        let rt = pg_rt("nodb", &db_url, &[]);
        let conn = rt.connection::<PostgresDb>("nodb").await.unwrap();
        expect_cause(&conn, ConnectCause::UnknownDatabase, "unknown database").await;
        exec(&mut admin, format!("create database {db}")).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "the next call after the database exists works");
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop database {db} with (force)")).await;

        // Authentication: this server trusts local connections, so the credential it rejects
        // is an unknown role (the wrong-password case runs on MariaDB, which checks passwords).
        let role = unique("cs_nobody");
        let rt = pg_rt("auth", &url, &[("user", role.clone().into()), ("password", "wrong".into())]);
        let conn = rt.connection::<PostgresDb>("auth").await.unwrap();
        expect_cause(&conn, ConnectCause::Auth, "authentication failed").await;
        assert!(!format!("{conn:?} {:?}", conn.provider()).contains("wrong"), "the password never shows");
        exec(&mut admin, format!("create role {role} login")).await;
        assert_eq!(one(&conn).await.unwrap(), 1, "the next call after the role exists works");
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop role {role}")).await;

        // A server that accepts but never answers: a timeout, after `connect_timeout`.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let rt = pg_rt("silent", &with_port(&url, port), &[("connect_timeout", "300ms".into())]);
        let conn = rt.connection::<PostgresDb>("silent").await.unwrap();
        let t = Instant::now();
        expect_cause(&conn, ConnectCause::Timeout, "timed out").await;
        assert!(t.elapsed() >= Duration::from_millis(300), "not before connect_timeout: {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(30), "after connect_timeout, not never: {:?}", t.elapsed());
        shut_down(&rt, 1).await;
        drop(silent);
    }

    #[tokio::test]
    async fn a_half_open_connection_cannot_hang_the_health_check() {
        let Some(url) = server_url("DATABASE_URL", "a_half_open_connection_cannot_hang_the_health_check")
        else {
            return;
        };
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let proxy = Forwarder::start(0, &format!("{}:{}", opts.get_host(), opts.get_port())).await;
        let rt = pg_rt("partition", &with_port(&url, proxy.port), &[("health_timeout", "300ms".into())]);
        let conn = rt.connection::<PostgresDb>("partition").await.unwrap();
        assert_eq!(one(&conn).await.unwrap(), 1);
        let client = conn.get().await.unwrap();
        use connscope::Provider;
        assert!(conn.provider().is_open(&client).await);
        proxy.freeze(); // sockets stay open, nothing moves
        // health_timeout is 300 ms; without it the check would wait for TCP, i.e. forever here.
        let check = tokio::time::timeout(Duration::from_secs(30), conn.provider().is_open(&client)).await;
        assert_eq!(check, Ok(false), "a half-open pool is not open, and the check returns");
        drop(client);
        drop(conn);
        // Shutdown closes it within its bounds even though the peer is silent.
        let t = Instant::now();
        shut_down(&rt, 1).await;
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_statement_past_its_timeout_fails_and_its_connection_is_closed() {
        let Some(url) = server_url("DATABASE_URL", "a_statement_past_its_timeout_fails") else {
            return;
        };
        let app = unique("cs_slow");
        let rt = pg_rt("slow", &tagged(&url, &app), &[("statement_timeout", "300ms".into())]);
        let conn = rt.connection::<PostgresDb>("slow").await.unwrap();
        let slow = "select 1::int8 from pg_sleep(30)";
        statement_timeout_holds(&conn, slow, "select 1::int8", Duration::from_millis(300)).await;
        shut_down(&rt, 1).await;
        // The server notices the closed connections only when their sleep ends: end them now.
        kill_backends(&mut admin(&url).await, &app).await;
    }

    #[derive(Debug, sqlx::FromRow)]
    struct Hit {
        k: i64,
    }

    #[tokio::test]
    async fn the_query_cache_is_checked_by_the_servers_own_count() {
        let Some(url) = server_url("DATABASE_URL", "the_query_cache_is_checked_by_the_servers_own_count")
        else {
            return;
        };
        let mut admin = admin(&url).await;
        let table = unique("cs_hits");
        exec(&mut admin, format!("create table {table} (id serial primary key, k int8 not null)")).await;
        // Every execution of the probe leaves a row: the server's count of how often it ran.
        let probe_sql: &'static str =
            Box::leak(format!("insert into {table} (k) values ($1) returning k").into_boxed_str());
        let count_sql = format!("select count(*) from {table} where k = $1");
        let mut count = async |k: i64| -> i64 {
            sqlx::query_scalar(AssertSqlSafe(count_sql.clone())).bind(k).fetch_one(&mut admin).await.unwrap()
        };
        let rt = pg_rt("pg", &url, &[]);
        let conn = rt.connection::<PostgresDb>("pg").await.unwrap();
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

        // Session-scoped results are invisible to other sessions (same role, same settings).
        let srt = runtime(&[
            ("mine", "url", url.clone().into()),
            ("mine", "user", url.parse::<sqlx::postgres::PgConnectOptions>().unwrap().get_username().into()),
            ("mine", "password", "unused".into()),
        ]);
        let in_session = |rt: Runtime| async move {
            let conn = rt.connection::<PostgresLogin>("mine").await?;
            conn.query(probe_sql).bind(3).fetch_all::<Hit>().await
        };
        let (a, b) = (srt.session(), srt.session());
        a.run(in_session(srt.clone())).await.unwrap();
        a.run(in_session(srt.clone())).await.unwrap();
        assert_eq!(count(3).await, 1, "session a's second call was a hit");
        b.run(in_session(srt.clone())).await.unwrap();
        assert_eq!(count(3).await, 2, "session b cannot see session a's result");
        shut_down(&srt, 2).await;
        shut_down(&rt, 1).await;
        exec(&mut admin, format!("drop table {table}")).await;
    }

    #[tokio::test]
    async fn a_rejected_statement_is_returned_at_once_with_the_servers_message() {
        let Some(url) = server_url("DATABASE_URL", "a_rejected_statement_is_returned_at_once") else {
            return;
        };
        let rt = pg_rt("pg", &url, &[]);
        let conn = rt.connection::<PostgresDb>("pg").await.unwrap();
        let err = conn.query("selec 1").fetch_all::<(i64,)>().await.unwrap_err();
        assert_eq!(err.code().as_deref(), Some("42601"), "{err}");
        assert!(err.to_string().contains("syntax error"), "{err}");
        let err = conn.query("select 1/0").fetch_all::<(i32,)>().await.unwrap_err();
        assert_eq!(err.code().as_deref(), Some("22012"), "{err}");
        let s = conn.sql_stats();
        assert_eq!((s.statements, s.retries, s.errors), (2, 0, 2), "each ran once, not retried: {s:?}");
        shut_down(&rt, 1).await;
    }
}
