//! An app instance for the multi-instance tests (`suite/tests/redis_instances.rs`,
//! `suite/tests/redis_sql.rs`): one shared cached function over a "database" (a file holding a
//! generation number), and shared SQL reads of a SQLite file (connection `items`), served over
//! HTTP on a loopback port it prints as `PORT <n>`. Redis and the connection are configured as an
//! app would: `[redis]` and `[connections.items]` in the secrets file that `CONNSCOPE_SECRETS`
//! names. `SOURCE` names the "database" file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::{Json, Router};
use connscope::sql::{SqlError, SqliteDb};
use connscope::{Conn, Runtime, cached_resource};
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

/// A row of `items`, as every instance reads it (serde: it crosses instances).
#[derive(Debug, Serialize, Deserialize, connscope::sql::sqlx::FromRow)]
struct Item {
    k: i64,
    v: String,
}

async fn items() -> Result<Conn<SqliteDb>, String> {
    Runtime::global().connection::<SqliteDb>("items").await.map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct Spin {
    /// Rows a recursive count walks before the row is read (a slow query); part of the key.
    #[serde(default)]
    spin: i64,
}

/// A shared read of one item, tagged `items`.
async fn get_item(Path(k): Path<i64>, Query(s): Query<Spin>) -> Result<Json<Item>, String> {
    let conn = items().await?;
    let item = conn
        .query(
            "select k, v from items where k = ? and \
             (with recursive c(x) as (select 1 union all select x + 1 from c where x < ?) select count(*) from c) > 0",
        )
        .bind(k)
        .bind(s.spin)
        .ttl(Duration::from_secs(600))
        .tag("items")
        .shared()
        .fetch_one::<Item>()
        .await
        .map_err(|e: SqlError| e.to_string())?;
    Ok(Json(Item { k: item.k, v: item.v.clone() }))
}

/// A write that invalidates the `items` tag on every instance.
async fn set_item(Path((k, v)): Path<(i64, String)>) -> Result<Json<u64>, String> {
    let conn = items().await?;
    conn.execute("update items set v = ? where k = ?")
        .bind(v)
        .bind(k)
        .invalidates("items")
        .await
        .map(Json)
        .map_err(|e| e.to_string())
}

/// `update items set v = ? where k = ?` with no tag: the connection and the rows changed.
async fn update_item(k: i64, v: String) -> Result<(Conn<SqliteDb>, u64), String> {
    let conn = items().await?;
    let n = conn
        .execute("update items set v = ? where k = ?")
        .bind(v)
        .bind(k)
        .await
        .map_err(|e| e.to_string())?;
    Ok((conn, n))
}

/// A write with no tag, then `clear_query_cache` (every instance drops this connection's reads).
async fn set_item_and_clear(Path((k, v)): Path<(i64, String)>) -> Result<Json<u64>, String> {
    let (conn, n) = update_item(k, v).await?;
    conn.clear_query_cache();
    Ok(Json(n))
}

/// A write with no tag, then `sql::invalidate("items")` (the free function, from sync code).
async fn set_item_then_invalidate(Path((k, v)): Path<(i64, String)>) -> Result<Json<u64>, String> {
    let (_, n) = update_item(k, v).await?;
    connscope::sql::invalidate("items");
    Ok(Json(n))
}

async fn sql_stats() -> Result<Json<serde_json::Value>, String> {
    let s = items().await?.sql_stats();
    Ok(Json(
        serde_json::json!({ "statements": s.statements, "hits": s.cache_hits, "misses": s.cache_misses }),
    ))
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
        .route("/stats", get(stats))
        .route("/sql/item/{k}", get(get_item))
        .route("/sql/set/{k}/{v}", post(set_item))
        .route("/sql/set-and-clear/{k}/{v}", post(set_item_and_clear))
        .route("/sql/set-then-invalidate/{k}/{v}", post(set_item_then_invalidate))
        .route("/sql/stats", get(sql_stats));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("PORT {}", listener.local_addr().expect("addr").port());
    axum::serve(listener, app).await.expect("serve");
}
