//! connscope's statistics through the `metrics` facade, scraped from a Prometheus recorder:
//! names and labels, counters that move with the caches, session caches that keep counting
//! after their sessions ended, connections, live sessions.
#![cfg(feature = "metrics")]

use std::sync::{Arc, LazyLock};

use connscope::{Connection, Provider, Runtime, cached_resource};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// One recorder for the process (the facade takes one); every test exports its own runtime and
/// reads only its own cache and connection names.
static PROMETHEUS: LazyLock<PrometheusHandle> = LazyLock::new(|| {
    PrometheusBuilder::new().install_recorder().expect("the only recorder of this test binary")
});

/// The tests take turns: they share the recorder, and `connscope_sessions_live` (a gauge
/// without labels) is set by whichever runtime exported last.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Exports `rt` and renders the scrape.
fn scrape(rt: &Runtime) -> String {
    let handle = &*PROMETHEUS;
    rt.export_metrics();
    handle.render()
}

/// The value of the sample with exactly this name and these labels (in the order rendered).
fn sample(scrape: &str, series: &str) -> Option<u64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cached_resource(scope = "global", ttl = "10m")]
async fn top_customers(region: String) -> Arc<Vec<String>> {
    Arc::new(vec![format!("{region}-1")])
}

#[cached_resource(scope = "session", ttl = "10m")]
async fn my_orders(user: String) -> Result<Arc<String>, connscope::Error> {
    Ok(Arc::new(format!("orders of {user}")))
}

#[tokio::test]
async fn cache_counters_are_exported_with_prometheus_names_and_labels() {
    let _turn = TURN.lock().await;
    let rt = Runtime::builder().build();
    let session = rt.session();
    let labels = r#"{cache="top_customers",scope="global",module="metrics"}"#;
    session
        .run(async {
            top_customers("emea".into()).await;
            top_customers("emea".into()).await;
            top_customers("amer".into()).await;
        })
        .await;
    let first = scrape(&rt);
    assert_eq!(sample(&first, &format!("connscope_cache_hits_total{labels}")), Some(1), "{first}");
    assert_eq!(sample(&first, &format!("connscope_cache_misses_total{labels}")), Some(2));
    assert_eq!(sample(&first, &format!("connscope_cache_loads_total{labels}")), Some(2));
    assert_eq!(sample(&first, &format!("connscope_cache_load_failures_total{labels}")), Some(0));
    assert!(first.contains("# TYPE connscope_cache_hits_total counter"), "{first}");
    assert!(first.contains("# HELP connscope_cache_hits_total Calls answered from the cache."));

    // The counters move with the cache.
    session
        .run(async {
            top_customers("emea".into()).await;
            top_customers::invalidate("amer".into()).await;
        })
        .await;
    let second = scrape(&rt);
    assert_eq!(sample(&second, &format!("connscope_cache_hits_total{labels}")), Some(2), "{second}");
    let explicit = r#"{cache="top_customers",scope="global",module="metrics",cause="explicit"}"#;
    assert_eq!(sample(&second, &format!("connscope_cache_evictions_total{explicit}")), Some(1), "{second}");
    assert_eq!(sample(&second, "connscope_sessions_live"), Some(1), "{second}");

    session.end().await;
    let report = rt.shutdown().await;
    assert!(report.is_ok());
    let last = scrape(&rt);
    let shutdown = r#"{cache="top_customers",scope="global",module="metrics",cause="shutdown"}"#;
    assert_eq!(sample(&last, &format!("connscope_cache_evictions_total{shutdown}")), Some(1), "{last}");
    assert_eq!(sample(&last, &format!("connscope_cache_releases_total{labels}")), Some(2));
    assert_eq!(sample(&last, &format!("connscope_cache_release_failures_total{labels}")), Some(0));
    assert_eq!(sample(&last, "connscope_sessions_live"), Some(0));
}

#[tokio::test]
async fn session_caches_sum_over_sessions_and_keep_counting_after_they_end() {
    let _turn = TURN.lock().await;
    let rt = Runtime::builder().build();
    let labels = r#"{cache="my_orders",scope="session",module="metrics"}"#;
    let (ada, bo) = (rt.session(), rt.session());
    for (s, user) in [(&ada, "ada"), (&bo, "bo")] {
        s.run(async {
            my_orders(user.into()).await.unwrap();
            my_orders(user.into()).await.unwrap();
        })
        .await;
    }
    let before = scrape(&rt);
    assert_eq!(sample(&before, &format!("connscope_cache_loads_total{labels}")), Some(2), "{before}");
    assert_eq!(sample(&before, &format!("connscope_cache_hits_total{labels}")), Some(2));
    assert_eq!(sample(&before, "connscope_sessions_live"), Some(2));

    // Ada's session ends: her counts stay in the totals (a counter never goes down), and the
    // release of her value at the end is counted.
    ada.end().await;
    let after = scrape(&rt);
    assert_eq!(sample(&after, &format!("connscope_cache_loads_total{labels}")), Some(2), "{after}");
    assert_eq!(sample(&after, &format!("connscope_cache_hits_total{labels}")), Some(2));
    let ended = r#"{cache="my_orders",scope="session",module="metrics",cause="session_end"}"#;
    assert_eq!(sample(&after, &format!("connscope_cache_evictions_total{ended}")), Some(1), "{after}");
    assert_eq!(sample(&after, "connscope_sessions_live"), Some(1));

    bo.run(async { my_orders("bo".into()).await.unwrap() }).await;
    let later = scrape(&rt);
    assert_eq!(sample(&later, &format!("connscope_cache_hits_total{labels}")), Some(3), "{later}");
    rt.shutdown().await;
    let last = scrape(&rt);
    assert_eq!(sample(&last, &format!("connscope_cache_evictions_total{ended}")), Some(2), "{last}");
    assert_eq!(sample(&last, &format!("connscope_cache_loads_total{labels}")), Some(2));
}

/// A provider whose client says it is closed when told to.
#[derive(Connection, serde::Deserialize)]
#[connection(name = "metered", health_check = "every_use")]
struct Metered {
    host: String,
}

static OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

impl Provider for Metered {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.host.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        OPEN.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn connection_counters_are_exported_per_connection() {
    let _turn = TURN.lock().await;
    let rt = Runtime::builder().connection_setting("metered", "host", "db.example").build();
    let labels = r#"{connection="metered",provider="Metered",scope="global"}"#;
    let conn = rt.connection::<Metered>("metered").await.unwrap();
    drop(conn.get().await.unwrap());
    drop(conn.get().await.unwrap());
    let first = scrape(&rt);
    assert_eq!(sample(&first, &format!("connscope_connection_connects_total{labels}")), Some(1), "{first}");
    assert_eq!(
        sample(&first, &format!("connscope_connection_health_checks_total{labels}")),
        Some(1),
        "a fresh client is not checked"
    );
    assert_eq!(sample(&first, &format!("connscope_connection_reconnects_total{labels}")), Some(0));

    // Found closed: closed and reconnected.
    OPEN.store(false, std::sync::atomic::Ordering::SeqCst);
    drop(conn.get().await.unwrap());
    let second = scrape(&rt);
    assert_eq!(sample(&second, &format!("connscope_connection_connects_total{labels}")), Some(2), "{second}");
    assert_eq!(sample(&second, &format!("connscope_connection_reconnects_total{labels}")), Some(1));
    assert_eq!(sample(&second, &format!("connscope_connection_closes_total{labels}")), Some(1));

    // After shutdown the handle is released and folded into the totals: nothing goes down.
    rt.shutdown().await;
    let last = scrape(&rt);
    assert_eq!(sample(&last, &format!("connscope_connection_connects_total{labels}")), Some(2), "{last}");
    assert_eq!(sample(&last, &format!("connscope_connection_closes_total{labels}")), Some(2));
    let conn_cache = r#"{cache="connection<Metered>",scope="global"}"#;
    assert_eq!(sample(&last, &format!("connscope_cache_loads_total{conn_cache}")), Some(1), "{last}");
}

/// A provider whose clients are rebuilt every minute (`refresh`).
#[derive(Connection, serde::Deserialize)]
#[connection(name = "refreshed", refresh = "1m")]
struct Refreshed {
    host: String,
}

impl Provider for Refreshed {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.host.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn rebuild_counters_are_exported_per_connection() {
    let _turn = TURN.lock().await;
    let rt = Runtime::builder().connection_setting("refreshed", "host", "db.example").build();
    let labels = r#"{connection="refreshed",provider="Refreshed",scope="global"}"#;
    let conn = rt.connection::<Refreshed>("refreshed").await.unwrap();
    drop(conn.get().await.unwrap());
    let before = scrape(&rt);
    assert_eq!(sample(&before, &format!("connscope_connection_rebuilds_total{labels}")), Some(0), "{before}");
    // Three refresh periods (paused time: the timers fire in order, at once).
    for n in 1..=3 {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        for _ in 0..50 {
            if conn.counters().rebuilds == n {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    let c = conn.counters();
    let after = scrape(&rt);
    assert_eq!(sample(&after, &format!("connscope_connection_rebuilds_total{labels}")), Some(3), "{after}");
    assert_eq!(sample(&after, &format!("connscope_connection_rebuild_failures_total{labels}")), Some(0));
    assert_eq!(sample(&after, &format!("connscope_connection_connects_total{labels}")), Some(c.connects));
    assert_eq!(c.connects, 4, "{c:?}");
    rt.shutdown().await;
}

/// The shared tier's counters and state, per key prefix (feature `redis`, needs `REDIS_URL`).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_tier_is_exported_per_prefix() {
    use connscope::redis::RedisSettings;
    use connscope::{Resource, Scope, SharedSpec};
    static SHARED: Resource<u64, u64> =
        Resource::new("metrics_shared", Scope::Global, None, None, None).shared(SharedSpec::new("1"));
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("\n*** SKIPPED the_shared_tier_is_exported_per_prefix: set REDIS_URL to run it ***");
        return;
    };
    let _turn = TURN.lock().await;
    let prefix = format!("connscope-test:metrics-{}", std::process::id());
    let rt = Runtime::builder().redis(RedisSettings::new(url).prefix(prefix.as_str())).build();
    assert!(!scrape(&rt).contains(&format!("prefix=\"{prefix}\"")), "nothing before the tier started");
    let session = rt.session();
    session.run(SHARED.get_or_run(1, async { 7 })).await;
    let labels = format!("{{prefix=\"{prefix}\"}}");
    let s = scrape(&rt);
    assert_eq!(sample(&s, &format!("connscope_redis_computed_total{labels}")), Some(1), "{s}");
    assert_eq!(sample(&s, &format!("connscope_redis_stored_total{labels}")), Some(1));
    assert_eq!(sample(&s, &format!("connscope_redis_failures_total{labels}")), Some(0));
    assert_eq!(sample(&s, &format!("connscope_redis_up{labels}")), Some(1));
    rt.shutdown().await;
}
