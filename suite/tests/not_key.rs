//! `#[not_key]` leaves an argument out of a cached function's key, whatever its name: calls
//! that differ only in that argument share one value. The leading-underscore rule still holds.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use connscope::{Runtime, cached_resource};

fn runtime() -> Runtime {
    support::runtime().build()
}

/// A stand-in for a connection or a request context: not `Hash`, so it could not be in the key.
struct Client {
    name: &'static str,
    calls: AtomicUsize,
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached_resource(ttl = "1m")]
async fn region_total(#[not_key] client: &Client, region: String, #[not_key] trace_id: u64) -> String {
    LOADS.fetch_add(1, SeqCst);
    client.calls.fetch_add(1, SeqCst);
    format!("{region} via {} (trace {trace_id})", client.name)
}

#[tokio::test]
async fn a_not_key_argument_does_not_split_the_cache() {
    let rt = runtime();
    let s = rt.session();
    let (a, b) =
        (Client { name: "a", calls: AtomicUsize::new(0) }, Client { name: "b", calls: AtomicUsize::new(0) });
    s.run(async {
        assert_eq!(region_total(&a, "emea".into(), 1).await, "emea via a (trace 1)");
        // Another client, another trace id, same region: the value cached by the first call.
        assert_eq!(region_total(&b, "emea".into(), 2).await, "emea via a (trace 1)");
        assert_eq!(LOADS.load(SeqCst), 1, "`#[not_key]` arguments are not part of the key");
        assert_eq!(b.calls.load(SeqCst), 0);
        // The key argument still splits it.
        assert_eq!(region_total(&b, "apac".into(), 3).await, "apac via b (trace 3)");
        assert_eq!(LOADS.load(SeqCst), 2);
        // `invalidate` takes the key arguments only.
        assert!(region_total::invalidate("emea".into()).await);
        assert_eq!(region_total(&b, "emea".into(), 4).await, "emea via b (trace 4)");
        let stats = region_total::stats();
        assert_eq!((stats.loads, stats.hits), (3, 1), "{stats:?}");
    })
    .await;
}

static UNDERSCORE_LOADS: AtomicUsize = AtomicUsize::new(0);

/// The underscore rule is unchanged: `_tag` is not in the key.
#[cached_resource(scope = "session")]
async fn tagged(id: u32, _tag: &str) -> Result<u32, connscope::Error> {
    UNDERSCORE_LOADS.fetch_add(1, SeqCst);
    Ok(id)
}

#[tokio::test]
async fn a_leading_underscore_still_leaves_an_argument_out() {
    let rt = runtime();
    let s = rt.session();
    s.run(async {
        assert_eq!(tagged(1, "x").await.unwrap(), 1);
        assert_eq!(tagged(1, "y").await.unwrap(), 1);
    })
    .await;
    assert_eq!(UNDERSCORE_LOADS.load(SeqCst), 1);
}
