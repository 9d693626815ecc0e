//! Quickstart: a SQL connection by name and a cached query — no server needed (SQLite in
//! memory). It creates sample data, runs the same query twice and prints the result, the time
//! of each call and the cache statistics.
//!
//! `cargo run --example quickstart`
//!
//! The connection comes from `[connections.shop]` in `examples/secrets.toml`. Change its `url`
//! line to `postgres://…` (and add `--features postgres`) to run the same against PostgreSQL.

use std::time::{Duration, Instant};

use connscope::Runtime;
use connscope::sql::{SqlDb, SqlError};

#[derive(Debug, sqlx::FromRow)]
struct RegionSales {
    region: String,
    orders: i64,
    total: f64,
}

const SECRETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/secrets.toml");

#[tokio::main]
async fn main() -> Result<(), SqlError> {
    let rt = Runtime::builder().secrets_file(SECRETS).build();
    // Which database? Read the resolved settings (file < environment < code); nothing
    // connects until a statement runs.
    let url = rt.connection::<connscope::sql::SqliteDb>("shop").await?.provider().url.clone();
    // The provider type follows the URL's scheme; everything below is the same for each.
    match url.split(':').next() {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => run::<sqlx::Postgres>(&rt).await?,
        #[cfg(feature = "mysql")]
        Some("mysql" | "mariadb") => {
            eprintln!("(MySQL takes `?` placeholders; this quickstart's SQL uses `$1`: see the README)");
        }
        Some("sqlite") => run::<sqlx::Sqlite>(&rt).await?,
        Some(other) => eprintln!("`{other}:` URLs need the matching cargo feature (postgres, mysql)"),
        None => eprintln!("no url"),
    }
    let report = rt.shutdown().await;
    println!("runtime shut down: {} cached value(s) released, connections closed", report.released);
    Ok(())
}

async fn run<DB>(rt: &Runtime) -> Result<(), SqlError>
where
    DB: connscope::sql::Backend,
    RegionSales: for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let shop = rt.connection::<SqlDb<DB>>("shop").await?; // [connections.shop]
    println!("connected to {}", <DB as connscope::sql::Backend>::KIND);

    // Sample data (writes are never cached).
    shop.execute("drop table if exists quickstart_orders").await?;
    shop.execute("create table quickstart_orders (region text not null, amount double precision not null)")
        .await?;
    let orders = [("emea", 120.0), ("emea", 80.5), ("apac", 42.0), ("amer", 310.0), ("amer", 99.9)];
    for (region, amount) in orders {
        shop.execute("insert into quickstart_orders (region, amount) values ($1, $2)")
            .bind(region)
            .bind(amount)
            .await?;
    }

    // The same query twice: the first reaches the database, the second is a cache hit.
    for call in 1..=2 {
        let t = Instant::now();
        let rows = shop
            .query(
                "select region, count(*) as orders, sum(amount) as total \
                 from quickstart_orders where amount >= $1 group by region order by total desc",
            )
            .bind(50.0)
            .ttl(Duration::from_secs(60))
            .fetch_all::<RegionSales>()
            .await?;
        println!("call {call}: {} rows in {:.1?}", rows.len(), t.elapsed());
        if call == 1 {
            for r in rows.iter() {
                println!("  {:<5} {} orders  {:>7.2}", r.region, r.orders, r.total);
            }
        }
    }
    let s = shop.sql_stats();
    println!(
        "cache: {} hit(s), {} miss(es); {} statement(s) sent to the database, {} connection(s) opened",
        s.cache_hits, s.cache_misses, s.statements, s.connections_opened
    );
    shop.execute("drop table quickstart_orders").await?;
    Ok(())
}
