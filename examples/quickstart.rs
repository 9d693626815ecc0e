//! Quickstart: a provider, a cached function, sessions — no server needed.
//!
//! `cargo run --example quickstart`

use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope::{Conn, Connection, GlobalScope, Provider, Resource, Runtime, Scope};

/// A provider: settings plus `connect` and `is_open`. (Here an in-memory "price service".)
#[derive(serde::Deserialize)]
struct PriceService {
    currency: String,
}

struct PriceClient {
    currency: String,
}

impl Provider for PriceService {
    type Raw = PriceClient;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<PriceClient, std::io::Error> {
        println!("  (connecting to the price service in {})", self.currency);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(PriceClient { currency: self.currency.clone() })
    }
    async fn is_open(&self, _raw: &PriceClient) -> bool {
        true
    }
}

impl Connection for PriceService {
    type Scope = GlobalScope;
    const NAME: &'static str = "prices";
    const TTL: Option<Duration> = Some(Duration::from_secs(30 * 60));
}

/// A cached function: one load per (session, product) for 5 minutes.
static PRICE: Resource<String, Arc<String>> =
    Resource::new("price", Scope::Session, Some(Duration::from_secs(300)), Some(100), None);

async fn price(conn: &Conn<PriceService>, product: String) -> Result<Arc<String>, connscope::Error> {
    PRICE
        .try_get(product.clone(), async {
            let client = conn.get().await?;
            tokio::time::sleep(Duration::from_millis(200)).await; // an expensive query
            Ok(Arc::new(format!("{product}: 42.00 {}", client.currency)))
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), connscope::Error> {
    let rt = Runtime::builder().connection_setting("prices", "currency", "EUR").build();
    let session = rt.session();
    session
        .run(async {
            let conn = rt.connection::<PriceService>("prices").await?;
            for call in 1..=2 {
                let t = Instant::now();
                let p = price(&conn, "coffee".into()).await?;
                println!("call {call}: {p}  ({:.1?})", t.elapsed());
            }
            let s = PRICE.stats();
            println!("cache: {} hit(s), {} miss(es), {} load(s)", s.hits, s.misses, s.loads);
            Ok::<_, connscope::Error>(())
        })
        .await?;
    let report = session.end().await;
    println!("session ended: {} value(s) released", report.released);
    let report = rt.shutdown().await;
    println!("runtime shut down: {} value(s) released (the price service connection)", report.released);
    Ok(())
}
