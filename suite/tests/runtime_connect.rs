//! Connections from settings given at run time (`Runtime::connect`), named connections with
//! per-call overrides (`Runtime::connection_with`), providers that need no section, and
//! "did you mean" for a misspelled connection name.

mod sql_support;
mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use connscope::sql::SqliteDb;
use connscope::{Connection, Error, Provider, Runtime};
use support::{Client, Refused, probe, secrets};

/// A session-scoped provider whose settings are given at run time (field `label` picks the
/// probe that counts its connects and closes).
#[derive(Connection, Hash, serde::Deserialize)]
#[connection(scope = "session")]
struct PerUser {
    label: String,
    #[serde(default)]
    database: String,
}

/// A global one with a ttl.
#[derive(Connection, Hash, serde::Deserialize)]
#[connection(ttl = "1m")]
struct Tenant {
    label: String,
    #[serde(default)]
    database: String,
}

/// Every field has a default: no section needed.
#[derive(Connection, serde::Deserialize)]
#[connection(name = "fake")]
struct Fake {
    #[serde(default = "fake_label")]
    label: String,
    #[serde(default)]
    latency_ms: u64,
}

fn fake_label() -> String {
    "fake-default".into()
}

macro_rules! probe_provider {
    ($($ty:ty),*) => {$(
        impl Provider for $ty {
            type Raw = Client;
            type Error = Refused;
            async fn connect(&self) -> Result<Client, Refused> {
                probe_connect(&self.label).await
            }
            async fn is_open(&self, _raw: &Client) -> bool {
                probe(&self.label).open.load(SeqCst)
            }
            async fn close(&self, _raw: &Client) {
                probe(&self.label).closes.fetch_add(1, SeqCst);
            }
        }
    )*};
}

async fn probe_connect(label: &str) -> Result<Client, Refused> {
    let serial = probe(label).connects.fetch_add(1, SeqCst) + 1;
    Ok(Client { serial })
}

probe_provider!(PerUser, Tenant, Fake);

fn tenant(label: &str, database: &str) -> Tenant {
    Tenant { label: label.into(), database: database.into() }
}

/// Waits (Tokio time: a paused clock auto-advances) until `label`'s probe counted `n` closes.
async fn closes_reach(label: &str, n: u64) -> bool {
    let wait = async {
        while probe(label).closes() < n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.is_ok()
}

#[tokio::test]
async fn same_settings_same_connection_connected_once() {
    let rt = support::runtime().build();
    let a = rt.connect(tenant("rc-same", "acme")).await.unwrap();
    let b = rt.connect(tenant("rc-same", "acme")).await.unwrap();
    assert_eq!(a.id(), b.id(), "equal settings: one identity");
    assert_eq!(a.get().await.unwrap().serial, 1);
    assert_eq!(b.get().await.unwrap().serial, 1, "and one live client");
    assert_eq!(probe("rc-same").connects(), 1);

    let c = rt.connect(tenant("rc-same", "globex")).await.unwrap();
    assert_ne!(a.id(), c.id(), "other settings: another connection");
    assert_eq!(c.get().await.unwrap().serial, 2);
    assert_eq!((c.name(), Tenant::NAME), ("tenant", "tenant"));

    let report = rt.shutdown().await;
    assert_eq!(report.released, 2);
    assert_eq!(probe("rc-same").closes(), 2, "shutdown closed each client once");
    assert!(matches!(rt.connect(tenant("rc-same", "acme")).await, Err(Error::RuntimeShutDown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_with_equal_settings_share_one_connect() {
    let rt = support::runtime().build();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let conn = rt.connect(tenant("rc-concurrent", "acme")).await.unwrap();
                let serial = conn.get().await.unwrap().serial;
                (conn.id(), serial)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "one identity, one client: {seen:?}");
    assert_eq!(probe("rc-concurrent").connects(), 1);
    assert_eq!(rt.connection_stats::<Tenant>().loads, 1, "one handle made");
    assert_eq!(rt.shutdown().await.released, 1);
    assert_eq!(probe("rc-concurrent").closes(), 1);
}

#[tokio::test]
async fn a_session_provider_needs_a_session_and_is_released_when_it_ends() {
    let rt = support::runtime().build();
    let settings = || PerUser { label: "rc-session".into(), database: "db".into() };
    let err = rt.connect(settings()).await.unwrap_err();
    assert!(matches!(err, Error::NoActiveSession { .. }), "{err}");

    let (alice, bob) = (rt.session(), rt.session());
    let ca = alice.run(rt.connect(settings())).await.unwrap();
    let ca2 = alice.run(rt.connect(settings())).await.unwrap();
    let cb = bob.run(rt.connect(settings())).await.unwrap();
    assert_eq!(ca.get().await.unwrap().serial, ca2.get().await.unwrap().serial, "cached in alice's session");
    assert_ne!(ca.get().await.unwrap().serial, cb.get().await.unwrap().serial, "bob has his own");
    assert_eq!(probe("rc-session").connects(), 2);

    assert_eq!(alice.end().await.released, 1);
    assert_eq!(probe("rc-session").closes(), 1, "only alice's client closed, once");
    assert!(ca.get().await.is_err(), "a released handle does not reconnect");
    assert!(cb.get().await.is_ok());
    rt.shutdown().await;
    assert_eq!(probe("rc-session").closes(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_ttl_releases_it_and_the_identity_survives_the_replacement() {
    let rt = support::runtime().build();
    let a = rt.connect(tenant("rc-ttl", "acme")).await.unwrap();
    a.get().await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    rt.run_maintenance().await;
    assert!(closes_reach("rc-ttl", 1).await, "released after its ttl");
    let b = rt.connect(tenant("rc-ttl", "acme")).await.unwrap();
    assert_eq!(b.get().await.unwrap().serial, 2, "a fresh connection");
    assert_eq!(a.id(), b.id(), "the same identity: results cached by `Conn::id` stay valid");
    rt.shutdown().await;
    assert_eq!(probe("rc-ttl").closes(), 2);
}

#[tokio::test]
async fn a_named_connection_with_overrides_from_the_request() {
    let file = secrets("[connections.tenants]\nlabel = \"rc-with\"\ndatabase = \"default\"\n");
    let rt = Runtime::builder().secrets_file(&*file).env_vars(Vec::<(String, String)>::new()).build();
    let acme = rt.connection_with::<Tenant>("tenants", |s| s.database = "acme".into()).await.unwrap();
    let acme2 = rt.connection_with::<Tenant>("tenants", |s| s.database = "acme".into()).await.unwrap();
    let globex = rt.connection_with::<Tenant>("tenants", |s| s.database = "globex".into()).await.unwrap();
    assert_eq!((acme.provider().label.as_str(), acme.provider().database.as_str()), ("rc-with", "acme"));
    assert_eq!(acme.id(), acme2.id());
    assert_ne!(acme.id(), globex.id(), "overridden settings: another cached connection");
    assert_eq!(acme.name(), "tenants");
    acme.get().await.unwrap();
    acme2.get().await.unwrap();
    globex.get().await.unwrap();
    assert_eq!(probe("rc-with").connects(), 2);

    let plain = rt.connection::<Tenant>("tenants").await.unwrap();
    assert_eq!(plain.provider().database, "default", "the section alone is untouched");
    assert!(plain.id() != acme.id() && plain.id() != globex.id());

    let err = rt.connection_with::<Tenant>("tenant", |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("Did you mean `tenants`?"), "{err}");
    let err = rt.connection_with::<PerUser>("tenants", |_| {}).await.unwrap_err();
    assert!(matches!(err, Error::NoActiveSession { .. }), "{err}");
    assert_eq!(rt.shutdown().await.released, 3, "acme, globex and the plain one");
    assert_eq!(probe("rc-with").closes(), 2, "each connected client closed once (`plain` never connected)");
}

#[tokio::test]
async fn sqlite_connections_from_run_time_settings() {
    let dir = std::env::temp_dir().join(format!("connscope-rc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = |tenant: &str| format!("sqlite://{}?mode=rwc", dir.join(format!("{tenant}.db")).display());
    let rt = sql_support::runtime(&[
        ("shop", "url", "sqlite::memory:".into()),
        ("shop", "query_ttl", "5m".into()),
    ]);

    // One database per tenant, chosen by the request: `[connections.shop]` plus a url.
    for (tenant, n) in [("acme", 1), ("globex", 2)] {
        let db = rt.connection_with::<SqliteDb>("shop", |s| s.url = url(tenant)).await.unwrap();
        db.execute("create table if not exists orders (id integer)").await.unwrap();
        for i in 0..n {
            db.execute("insert into orders values (?)").bind(i).await.unwrap();
        }
    }
    let count = |tenant: &'static str| {
        let rt = rt.clone();
        let url = url(tenant);
        async move {
            let db = rt.connection_with::<SqliteDb>("shop", |s| s.url = url).await.unwrap();
            assert_eq!(db.provider().query_ttl, Duration::from_secs(300), "the section's settings apply");
            db.query("select count(*) from orders").uncached().fetch_one::<(i64,)>().await.unwrap().0
        }
    };
    assert_eq!((count("acme").await, count("globex").await), (1, 2));
    let acme = rt.connection_with::<SqliteDb>("shop", |s| s.url = url("acme")).await.unwrap();
    assert_eq!(acme.counters().connects, 1, "cached: connected once for all those calls");

    // The same settings given whole, in code: one more connection (keyed by its own name), cached.
    let a = rt.connect(SqliteDb::new(url("acme"))).await.unwrap();
    let b = rt.connect(SqliteDb::new(url("acme"))).await.unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(a.query("select count(*) from orders").uncached().fetch_one::<(i64,)>().await.unwrap().0, 1);
    assert_eq!(b.query("select count(*) from orders").uncached().fetch_one::<(i64,)>().await.unwrap().0, 1);
    assert_eq!((a.counters().connects, b.counters().connects), (1, 1), "one handle, one connect");
    let mem = rt.connect(SqliteDb::new("sqlite::memory:")).await.unwrap();
    assert_ne!(mem.id(), a.id());
    assert!(mem.query("select count(*) from orders").uncached().fetch_one::<(i64,)>().await.is_err());

    let report = sql_support::shut_down(&rt, 4).await;
    assert!(report.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_connections_from_run_time_settings() {
    use connscope::sql::PostgresDb;
    let Some(url) = sql_support::server_url("DATABASE_URL", "postgres_connections_from_run_time_settings")
    else {
        return;
    };
    let rt = sql_support::runtime(&[]);
    let mut settings = PostgresDb::new(&url);
    settings.max_connections = 2;
    let a = rt.connect(settings).await.unwrap();
    let mut settings = PostgresDb::new(&url);
    settings.max_connections = 2;
    let b = rt.connect(settings).await.unwrap();
    let c = rt.connect(PostgresDb::new(&url)).await.unwrap();
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), c.id(), "another pool size: other settings");
    for conn in [&a, &b, &c] {
        let one = conn.query("select 1").uncached().fetch_one::<(i32,)>().await.unwrap();
        assert_eq!(one.0, 1);
    }
    assert_eq!((a.counters().connects, c.counters().connects), (1, 1));
    sql_support::shut_down(&rt, 2).await;
}

#[tokio::test]
async fn a_provider_with_every_field_defaulted_needs_no_section() {
    let rt = support::runtime().build();
    let fake = rt.connection::<Fake>("fake").await.unwrap();
    assert_eq!((fake.provider().label.as_str(), fake.provider().latency_ms), ("fake-default", 0));
    assert_eq!(fake.get().await.unwrap().serial, 1);
    let again = rt.connection::<Fake>("fake").await.unwrap();
    assert_eq!(again.id(), fake.id(), "cached like any named connection");
    assert_eq!(probe("fake-default").connects(), 1);

    // A section, when there is one, still applies.
    let file = secrets("[connections.fake]\nlatency_ms = 5\n");
    let rt2 = Runtime::builder().secrets_file(&*file).env_vars(Vec::<(String, String)>::new()).build();
    assert_eq!(rt2.connection::<Fake>("fake").await.unwrap().provider().latency_ms, 5);
    rt.shutdown().await;
    rt2.shutdown().await;
}

#[tokio::test]
async fn a_misspelled_connection_name_gets_a_suggestion() {
    let file = secrets("[connections.warehouse]\nlabel = \"rc-typo\"\n[connections.shop]\nlabel = \"x\"\n");
    let env = [("CONNSCOPE__ANALYTICS__LABEL", "y")];
    let rt = Runtime::builder()
        .secrets_file(&*file)
        .env_vars(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .build();
    let err = rt.connection::<Tenant>("warehose").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { .. }), "{msg}");
    assert!(msg.contains("no [connections.warehose] table"), "{msg}");
    assert!(msg.contains("Did you mean `warehouse`?"), "{msg}");
    let msg = rt.connection::<Tenant>("analytcs").await.unwrap_err().to_string();
    assert!(msg.contains("Did you mean `analytics`?"), "names set by the environment count: {msg}");
    let msg = rt.connection::<Tenant>("billing").await.unwrap_err().to_string();
    assert!(msg.contains("no [connections.billing] table") && !msg.contains("Did you mean"), "{msg}");
    assert!(rt.connection::<Tenant>("warehouse").await.is_ok());
    assert_eq!(probe("rc-typo").connects(), 0, "nothing connected: a handle is lazy");
}
