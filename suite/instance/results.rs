//! An app instance for the multi-instance tests (`suite/tests/redis_instances.rs`): one shared
//! cached function over a "database" (a file holding a generation number), served over HTTP
//! on a loopback port it prints as `PORT <n>`. Redis is configured as an app would: `[redis]` in
//! the secrets file that `CONNSCOPE_SECRETS` names. `SOURCE` names the "database" file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::{Json, Router};
use connscope::{Runtime, cached_resource};
use serde::{Deserialize, Serialize};

static BODY_RUNS: AtomicU64 = AtomicU64::new(0);
static RELEASES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Report {
    k: u64,
    generation: u64,
    computed_by: String,
}

fn release(_: &Report) {
    RELEASES.fetch_add(1, Ordering::SeqCst);
}

/// The "query": reads the source's generation after `delay_ms` (a slow database).
#[cached_resource(scope = "global", ttl = "10m", shared = true, on_release = release)]
async fn report(k: u64, #[not_key] delay_ms: u64) -> Result<Report, String> {
    BODY_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let source = std::env::var("SOURCE").map_err(|_| "SOURCE is not set".to_owned())?;
    let text = std::fs::read_to_string(&source).map_err(|e| e.to_string())?;
    let generation = text.trim().parse().map_err(|_| format!("bad generation {text:?}"))?;
    Ok(Report { k, generation, computed_by: std::env::var("NAME").unwrap_or_default() })
}

#[derive(Deserialize)]
struct Delay {
    #[serde(default)]
    delay_ms: u64,
}

async fn get_report(Path(k): Path<u64>, Query(d): Query<Delay>) -> Result<Json<Report>, String> {
    report(k, d.delay_ms).await.map(Json)
}

async fn invalidate(Path(k): Path<u64>) -> Json<bool> {
    Json(report::invalidate(k).await)
}

async fn clear() -> Json<u64> {
    Json(report::clear().await.released as u64)
}

async fn stats() -> Json<serde_json::Value> {
    let s = Runtime::global().redis_stats().unwrap_or_default();
    Json(serde_json::json!({
        "body_runs": BODY_RUNS.load(Ordering::SeqCst),
        "releases": RELEASES.load(Ordering::SeqCst),
        "remote_hits": s.remote_hits,
        "computed": s.computed,
        "waited": s.waited,
        "takeovers": s.takeovers,
        "stored": s.stored,
        "store_refused": s.store_refused,
        "failures": s.failures,
        "outages": s.outages,
        "invalidations_received": s.invalidations_received,
        "state": format!("{:?}", s.state),
    }))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let app = Router::new()
        .route("/report/{k}", get(get_report))
        .route("/invalidate/{k}", post(invalidate))
        .route("/clear", post(clear))
        .route("/stats", get(stats));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("PORT {}", listener.local_addr().expect("addr").port());
    axum::serve(listener, app).await.expect("serve");
}
