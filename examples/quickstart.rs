//! Quickstart: a SQL connection by name and a cached query — no server needed (SQLite in
//! memory). It creates sample data, runs the same query twice and prints the result, the time
//! of each call and the cache statistics.
//!
//! `cargo run --example quickstart`
//!
//! The connection comes from `[connections.shop]` in `examples/secrets.toml`. Change its `url`
//! line to `postgres://…` (and add `--features postgres`) to run the same against PostgreSQL,
//! or to `mysql://…` (`--features mysql`) for MySQL / MariaDB.

use std::io::Write;
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
    quickstart(&mut std::io::stdout()).await
}

/// The whole quickstart, printing to `out` (a test checks what it prints).
pub async fn quickstart(out: &mut impl Write) -> Result<(), SqlError> {
    quickstart_on(Runtime::builder().secrets_file(SECRETS), out).await
}

/// The quickstart on a runtime of `builder` (the tests point `shop` at their servers).
pub async fn quickstart_on(builder: connscope::RuntimeBuilder, out: &mut impl Write) -> Result<(), SqlError> {
    let rt = builder.build();
    // Which database? Read the resolved settings (file < environment < code); nothing
    // connects until a statement runs.
    let url = rt.connection::<connscope::sql::SqliteDb>("shop").await?.provider().url.clone();
    // The provider type follows the URL's scheme; everything below is the same for each.
    match url.split(':').next() {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => run::<sqlx::Postgres>(&rt, out).await?,
        #[cfg(feature = "mysql")]
        Some("mysql" | "mariadb") => run::<sqlx::MySql>(&rt, out).await?,
        Some("sqlite") => run::<sqlx::Sqlite>(&rt, out).await?,
        Some(other) => eprintln!("`{other}:` URLs need the matching cargo feature (postgres, mysql)"),
        None => eprintln!("no url"),
    }
    let report = rt.shutdown().await;
    say(
        out,
        format_args!("runtime shut down: {} cached value(s) released, connections closed", report.released),
    );
    Ok(())
}

/// One line of output (a closed stdout is not worth a panic).
fn say(out: &mut impl Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{line}");
}

const INSERT: &str = "insert into quickstart_orders (region, amount) values ($1, $2)";
const INSERT_MYSQL: &str = "insert into quickstart_orders (region, amount) values (?, ?)";
const REPORT: &str = "select region, count(*) as orders, sum(amount) as total \
                      from quickstart_orders where amount >= $1 group by region order by total desc";
const REPORT_MYSQL: &str = "select region, count(*) as orders, sum(amount) as total \
                            from quickstart_orders where amount >= ? group by region order by total desc";

async fn run<DB>(rt: &Runtime, out: &mut impl Write) -> Result<(), SqlError>
where
    DB: connscope::sql::Backend,
    RegionSales: for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let shop = rt.connection::<SqlDb<DB>>("shop").await?; // [connections.shop]
    let kind = <DB as connscope::sql::Backend>::KIND;
    say(out, format_args!("connected to {kind}"));
    // Bind parameters are `$1, $2…` on PostgreSQL and SQLite, `?` on MySQL / MariaDB.
    let (insert, report) = if kind == "mysql" { (INSERT_MYSQL, REPORT_MYSQL) } else { (INSERT, REPORT) };

    // Sample data (writes are never cached).
    shop.execute("drop table if exists quickstart_orders").await?;
    shop.execute("create table quickstart_orders (region text not null, amount double precision not null)")
        .await?;
    let orders = [("emea", 120.0), ("emea", 80.5), ("apac", 42.0), ("amer", 310.0), ("amer", 99.9)];
    for (region, amount) in orders {
        shop.execute(insert).bind(region).bind(amount).await?;
    }

    // The same query twice: the first reaches the database, the second is a cache hit.
    for call in 1..=2 {
        let t = Instant::now();
        let rows =
            shop.query(report).bind(50.0).ttl(Duration::from_secs(60)).fetch_all::<RegionSales>().await?;
        say(out, format_args!("call {call}: {} rows in {:.1?}", rows.len(), t.elapsed()));
        if call == 1 {
            for r in rows.iter() {
                say(out, format_args!("  {:<5} {} orders  {:>7.2}", r.region, r.orders, r.total));
            }
        }
    }
    let s = shop.sql_stats();
    say(
        out,
        format_args!(
            "cache: {} hit(s), {} miss(es); {} statement(s) sent to the database, {} connection(s) opened",
            s.cache_hits, s.cache_misses, s.statements, s.connections_opened
        ),
    );
    shop.execute("drop table quickstart_orders").await?;
    Ok(())
}
