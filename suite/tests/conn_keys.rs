//! A `Conn<P>` argument of a `#[cached_resource]` function: keyed by the connection's identity
//! (two connections never share results), or left out of the key when named `_conn`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use connscope::{Conn, Connection, Provider, Runtime, cached_resource};

/// A database whose rows depend on which one it is.
#[derive(Connection, serde::Deserialize)]
struct Region {
    label: String,
}

impl Provider for Region {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.label.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

static KEYED_LOADS: AtomicUsize = AtomicUsize::new(0);
static SHARED_LOADS: AtomicUsize = AtomicUsize::new(0);

/// The connection is part of the key.
#[cached_resource(ttl = "5m")]
async fn total(conn: &Conn<Region>, product: u32) -> Result<String, connscope::Error> {
    KEYED_LOADS.fetch_add(1, SeqCst);
    Ok(format!("{}:{product}", *conn.get().await?))
}

/// `_conn`: left out of the key, so every connection shares one result per product.
#[cached_resource(ttl = "5m")]
async fn shared_total(_conn: Conn<Region>, product: u32) -> Result<String, connscope::Error> {
    SHARED_LOADS.fetch_add(1, SeqCst);
    Ok(format!("{}:{product}", *_conn.get().await?))
}

fn runtime() -> Runtime {
    Runtime::builder()
        .secrets_file("/nonexistent/connscope-test-secrets.toml")
        .env_vars(Vec::<(String, String)>::new())
        .connection_setting("emea", "label", "emea")
        .connection_setting("apac", "label", "apac")
        .build()
}

#[tokio::test]
async fn two_connections_never_share_a_cached_result() {
    let rt = runtime();
    let emea = rt.connection::<Region>("emea").await.unwrap();
    let apac = rt.connection::<Region>("apac").await.unwrap();
    assert_ne!(emea.id(), apac.id());

    assert_eq!(total(&emea, 1).await.unwrap(), "emea:1");
    assert_eq!(total(&apac, 1).await.unwrap(), "apac:1", "not emea's result");
    assert_eq!(KEYED_LOADS.load(SeqCst), 2);

    // The same cached connection, asked for again by name, is the same key.
    let again = rt.connection::<Region>("emea").await.unwrap();
    assert_eq!(again.id(), emea.id());
    assert_eq!(total(&again, 1).await.unwrap(), "emea:1");
    assert_eq!(total(&emea.clone(), 1).await.unwrap(), "emea:1");
    assert_eq!(KEYED_LOADS.load(SeqCst), 2, "hits");

    // The companion takes the same arguments.
    assert!(total::invalidate(&emea, 1).await);
    assert!(!total::invalidate(&emea, 1).await);
    assert_eq!(total(&emea, 1).await.unwrap(), "emea:1");
    assert_eq!(total(&apac, 1).await.unwrap(), "apac:1");
    assert_eq!(KEYED_LOADS.load(SeqCst), 3, "only emea's entry was invalidated");
    assert!(rt.shutdown().await.is_ok());
}

#[tokio::test]
async fn an_underscored_connection_is_left_out_of_the_key() {
    let rt = runtime();
    let emea = rt.connection::<Region>("emea").await.unwrap();
    let apac = rt.connection::<Region>("apac").await.unwrap();
    assert_eq!(shared_total(emea.clone(), 7).await.unwrap(), "emea:7");
    assert_eq!(shared_total(apac.clone(), 7).await.unwrap(), "emea:7", "shared, as asked");
    assert_eq!(SHARED_LOADS.load(SeqCst), 1);
    assert!(shared_total::invalidate(7).await, "invalidate takes the key arguments only");
    assert!(rt.shutdown().await.is_ok());
}

/// A connection that is replaced after a minute.
#[derive(Connection, serde::Deserialize)]
#[connection(ttl = "1m")]
struct Recycled {
    label: String,
}

impl Provider for Recycled {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.label.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

static RECYCLED_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached_resource]
async fn recycled_total(conn: &Conn<Recycled>, product: u32) -> Result<String, connscope::Error> {
    RECYCLED_LOADS.fetch_add(1, SeqCst);
    Ok(format!("{}:{product}", *conn.get().await?))
}

#[tokio::test(start_paused = true)]
async fn a_named_connection_keeps_its_identity_when_it_is_replaced() {
    let build = |label: &str| {
        Runtime::builder()
            .secrets_file("/nonexistent/connscope-test-secrets.toml")
            .env_vars(Vec::<(String, String)>::new())
            .connection_setting("emea", "label", label)
            .build()
    };
    let rt = build("emea");
    let first = rt.connection::<Recycled>("emea").await.unwrap();
    assert_eq!(recycled_total(&first, 1).await.unwrap(), "emea:1");
    let first_id = first.id();

    // Past its ttl the connection is closed and released; asking again builds a new handle.
    tokio::time::sleep(std::time::Duration::from_secs(90)).await;
    for _ in 0..100 {
        if first.counters().closes == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(first.counters().closes, 1, "the first handle was released and closed");
    let second = rt.connection::<Recycled>("emea").await.unwrap();
    assert_eq!(second.counters().connects, 0, "a new handle, not the first one");
    assert_eq!(second.id(), first_id, "same type, name and settings: same identity");
    assert_eq!(recycled_total(&second, 1).await.unwrap(), "emea:1");
    assert_eq!(RECYCLED_LOADS.load(SeqCst), 1, "the cached result survived the replacement");

    // Other settings under the same name are another connection.
    let other = build("elsewhere");
    let third = other.connection::<Recycled>("emea").await.unwrap();
    assert_ne!(third.id(), first_id);
    assert!(rt.shutdown().await.is_ok());
    assert!(other.shutdown().await.is_ok());
}
