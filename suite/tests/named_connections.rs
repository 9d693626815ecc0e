//! Connections by name: secrets file, environment overrides, code wins, cache keys, scopes.

mod support;

use std::path::{Path, PathBuf};

use connscope::{Error, Runtime};
use support::{UserDb, Warehouse, probe, secrets};

fn rt(file: &Path, env: &[(&str, &str)]) -> Runtime {
    Runtime::builder()
        .secrets_file(file)
        .env_vars(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .build()
}

#[tokio::test]
async fn a_named_connection_comes_from_the_secrets_file_and_is_cached() {
    let file = secrets("[connections.warehouse]\nlabel = \"named-1\"\nport = 5432\n");
    let rt = rt(&file, &[]);
    let a = rt.connection::<Warehouse>("warehouse").await.unwrap();
    let b = rt.connection::<Warehouse>("warehouse").await.unwrap();
    assert_eq!(a.get().await.unwrap().serial, 1);
    assert_eq!(b.get().await.unwrap().serial, 1, "the same cached connection");
    assert_eq!(probe("named-1").connects(), 1);
    assert_eq!(a.provider().port, Some(5432));
    let report = rt.shutdown().await;
    assert_eq!(report.released, 1);
    assert_eq!(probe("named-1").closes(), 1, "shutdown closed it, once");
}

#[tokio::test]
async fn environment_overrides_the_file_and_code_overrides_both() {
    let file = secrets("[connections.warehouse]\nlabel = \"file\"\nport = 1\n");
    let env = [("CONNSCOPE__WAREHOUSE__PORT", "2"), ("CONNSCOPE__WAREHOUSE__PASSWORD", "from-env")];
    let rt = rt(&file, &env);
    let c = rt.connection::<Warehouse>("warehouse").await.unwrap();
    assert_eq!(c.provider().port, Some(2), "env wins over the file (and keeps the integer type)");
    assert_eq!(c.provider().password.as_ref().unwrap().expose(), "from-env");

    let rt = Runtime::builder()
        .secrets_file(&*file)
        .env_vars(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .connection_setting("warehouse", "port", 3)
        .build();
    let c = rt.connection::<Warehouse>("warehouse").await.unwrap();
    assert_eq!(c.provider().port, Some(3), "code wins over env and file");
    assert_eq!(c.provider().label, "file");
}

#[tokio::test]
async fn different_settings_never_share_a_connection() {
    let file = secrets("[connections.a]\nlabel = \"diff-a\"\n[connections.b]\nlabel = \"diff-b\"\n");
    let rt = rt(&file, &[]);
    let a = rt.connection::<Warehouse>("a").await.unwrap();
    let b = rt.connection::<Warehouse>("b").await.unwrap();
    a.get().await.unwrap();
    b.get().await.unwrap();
    assert_eq!((probe("diff-a").connects(), probe("diff-b").connects()), (1, 1));

    // Same name, other settings (another runtime layering a different value): another key.
    let rt2 = Runtime::builder()
        .secrets_file(&*file)
        .env_vars(Vec::<(String, String)>::new())
        .connection_setting("a", "port", 7)
        .build();
    let a2 = rt2.connection::<Warehouse>("a").await.unwrap();
    a2.get().await.unwrap();
    assert_eq!(probe("diff-a").connects(), 2);
}

#[tokio::test]
async fn configuration_errors_name_the_file_the_section_and_the_field() {
    let missing = PathBuf::from("/nonexistent/dir/secrets.toml");
    let err = rt(&missing, &[]).connection::<Warehouse>("warehouse").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { .. }));
    assert!(msg.contains("/nonexistent/dir/secrets.toml") && msg.contains("connections.warehouse"), "{msg}");
    assert!(msg.contains("does not exist") && msg.contains("CONNSCOPE__WAREHOUSE__"), "{msg}");

    let file = secrets("[connections.other]\nlabel = \"x\"\n");
    let msg = rt(&file, &[]).connection::<Warehouse>("warehouse").await.unwrap_err().to_string();
    assert!(msg.contains("no [connections.warehouse] table"), "{msg}");

    let file = secrets("[connections.warehouse]\nport = 5432\n");
    let msg = rt(&file, &[]).connection::<Warehouse>("warehouse").await.unwrap_err().to_string();
    assert!(msg.contains(file.to_str().unwrap()) && msg.contains("missing field `label`"), "{msg}");

    let file = secrets("[connections.warehouse]\nlabel = \"x\"\nport = 5432\n");
    let env = [("CONNSCOPE__WAREHOUSE__PORT", "fifty")];
    let msg = rt(&file, &env).connection::<Warehouse>("warehouse").await.unwrap_err().to_string();
    assert!(msg.contains("CONNSCOPE__WAREHOUSE__PORT") && msg.contains("expected an integer"), "{msg}");

    let file = secrets("[connections.warehouse\nlabel = ");
    let msg = rt(&file, &[]).connection::<Warehouse>("warehouse").await.unwrap_err().to_string();
    assert!(msg.contains("not valid TOML"), "{msg}");
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_errors() {
    let file =
        secrets("[connections.warehouse]\nlabel = \"secretive\"\npassword = \"hunter2\"\nport = \"nope\"\n");
    let rt = rt(&file, &[]);
    let err = rt.connection::<Warehouse>("warehouse").await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    let file = secrets("[connections.warehouse]\nlabel = \"secretive\"\npassword = \"hunter2\"\n");
    let c = self::rt(&file, &[]).connection::<Warehouse>("warehouse").await.unwrap();
    assert!(!format!("{c:?} {:?}", c.provider()).contains("hunter2"));
}

#[tokio::test]
async fn a_session_connection_belongs_to_one_session_and_closes_when_it_ends() {
    let file = secrets("[connections.userdb]\nlabel = \"per-user\"\n");
    let rt = rt(&file, &[]);
    let err = rt.connection::<UserDb>("userdb").await.unwrap_err();
    assert!(matches!(err, Error::NoActiveSession { .. }), "{err}");

    let (alice, bob) = (rt.session(), rt.session());
    let ca = alice.run(rt.connection::<UserDb>("userdb")).await.unwrap();
    let cb = bob.run(rt.connection::<UserDb>("userdb")).await.unwrap();
    let (sa, sb) = (ca.get().await.unwrap().serial, cb.get().await.unwrap().serial);
    assert_ne!(sa, sb, "two sessions, two clients");
    assert_eq!(probe("per-user").connects(), 2);

    assert!(alice.end().await.is_ok());
    assert_eq!(probe("per-user").closes(), 1, "only alice's client closed");
    assert!(ca.get().await.is_err(), "a released handle does not silently reconnect");
    assert_eq!(cb.get().await.unwrap().serial, sb, "bob keeps working");
}

#[tokio::test]
async fn a_global_connection_found_closed_reconnects_and_counts_it() {
    let file = secrets("[connections.warehouse]\nlabel = \"flaky\"\n");
    let rt = rt(&file, &[]);
    let c = rt.connection::<Warehouse>("warehouse").await.unwrap();
    c.get().await.unwrap();
    probe("flaky").set_open(false);
    let r = c.get().await;
    probe("flaky").set_open(true);
    assert_eq!(r.unwrap().serial, 2);
    assert_eq!(probe("flaky").closes(), 1);
    let cache_stats = rt.session().run(async { c.counters() }).await;
    assert_eq!(cache_stats.reconnects, 1);
}
