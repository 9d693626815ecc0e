use connscope::cached_resource;

#[cached_resource(ttl = "5m", refresh = "background")]
async fn rates(currency: &str) -> f64 {
    currency.len() as f64
}

fn main() {}
