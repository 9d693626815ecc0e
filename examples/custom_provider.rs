//! A provider written from scratch: a settings struct with `#[derive(Connection)]`, the two
//! `Provider` methods, a per-user login built from the derived form, and a cached function.
//! The "metrics service" is simulated in memory, so no server is needed.
//!
//! `cargo run --example custom_provider`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connscope::{Conn, Connection, FieldKind, FormValues, Provider, Runtime, Secret, cached_resource};

/// The settings of a metrics service. Each user logs in with their own token, so the
/// connection is per session; the host is fixed by the app, not typed by the user.
#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", ttl = "30m", name = "metrics", health_check = "on_error")]
struct MetricsService {
    #[connection(fixed, default = "metrics.internal")]
    host: String,
    #[connection(default = 9100)]
    port: u16,
    #[connection(label = "User name")]
    user: String,
    /// A `Secret` field is a password input, never printed, and wiped once connected.
    token: Secret,
}

/// The live client: what `connect` returns and every user of the connection shares.
struct MetricsClient {
    endpoint: String,
    open: AtomicBool,
    queries: AtomicU64,
}

#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the metrics service refused the token")
    }
}

impl std::error::Error for Unauthorized {}

impl Provider for MetricsService {
    type Raw = MetricsClient;
    type Error = Unauthorized;

    async fn connect(&self) -> Result<MetricsClient, Unauthorized> {
        tokio::time::sleep(Duration::from_millis(50)).await; // a handshake
        if self.token.expose() == "wrong" {
            return Err(Unauthorized);
        }
        let endpoint = format!("{}@{}:{}", self.user, self.host, self.port);
        println!("  [provider] connected to {endpoint}");
        Ok(MetricsClient { endpoint, open: AtomicBool::new(true), queries: AtomicU64::new(0) })
    }

    async fn is_open(&self, raw: &MetricsClient) -> bool {
        raw.open.load(Ordering::Acquire)
    }

    async fn close(&self, raw: &MetricsClient) {
        raw.open.store(false, Ordering::Release);
        println!(
            "  [provider] closed {} after {} queries",
            raw.endpoint,
            raw.queries.load(Ordering::Relaxed)
        );
    }
}

/// Runs once per (session, host, minutes) for a minute; the connection is an argument, not
/// part of the key (`#[not_key]`). Each cached series is announced when it leaves the cache.
#[cached_resource(scope = "session", ttl = "1m", max_entries = 100, on_release = series_released)]
async fn cpu_series(
    #[not_key] conn: &Conn<MetricsService>,
    host: &str,
    minutes: u32,
) -> Result<Arc<Vec<f64>>, connscope::Error> {
    let client = conn.get().await?;
    client.queries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await; // an expensive query
    let seed = host.len() as f64;
    Ok(Arc::new((0..minutes).map(|m| (seed * 7.0 + f64::from(m) * 3.0) % 100.0).collect()))
}

async fn series_released(series: Arc<Vec<f64>>) {
    println!("  [cache] released a series of {} points", series.len());
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Login form of `{}`:", MetricsService::NAME);
    for field in MetricsService::FORM {
        let kind = match field.kind {
            FieldKind::Text => "text",
            FieldKind::Password => "password",
        };
        let default = field.default.map(|d| format!(", default {d}")).unwrap_or_default();
        let required = if field.required { ", required" } else { "" };
        println!("  {:<6} \"{}\" ({kind}{default}{required})", field.name, field.label);
    }

    // A submission with mistakes: every one is named, no value is echoed.
    let bad = FormValues::submitted([("user", "ada"), ("port", "ninety-one")]);
    if let Err(e) = MetricsService::from_form(&bad) {
        println!("\nBad submission: {e}");
    }

    let rt = Runtime::builder().build();
    let alice = rt.session();
    let submitted = FormValues::submitted([("user", "ada"), ("token", "t0k3n")]).fix("host", "metrics.eu");
    let settings = MetricsService::from_form(&submitted)?;
    println!("\nLogging alice in:");
    let conn = alice.login(MetricsService::NAME, settings).await?;
    println!(
        "  token after connecting: {:?} (wiped: {})",
        conn.provider().token,
        conn.provider().token.is_empty()
    );

    alice
        .run(async {
            for call in 1..=2 {
                let t = Instant::now();
                let series = cpu_series(&conn, "web-1", 5).await?;
                println!("  call {call}: {} points ({:.0?})", series.len(), t.elapsed());
            }
            let stats = cpu_series::stats();
            println!("  cache: {} hit(s), {} load(s)", stats.hits, stats.loads);
            let removed = cpu_series::invalidate("web-1", 5).await;
            println!("  invalidated web-1: {removed}");
            cpu_series(&conn, "web-2", 3).await?;
            Ok::<_, connscope::Error>(())
        })
        .await?;

    // Another user has no login: the app shows them the form.
    let bob = rt.session();
    if let Err(e) = bob.logged_in::<MetricsService>(MetricsService::NAME).await {
        println!("\nbob: {e}");
    }

    println!("\nalice logs out (her session ends):");
    let report = alice.end().await;
    println!("  released {} value(s)", report.released);
    let _ = rt.shutdown().await;
    Ok(())
}
