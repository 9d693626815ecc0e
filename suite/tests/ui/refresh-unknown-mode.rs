use connscope::cached_resource;

#[cached_resource(ttl = "5m", refresh = "bg")]
async fn rates(currency: String) -> f64 {
    currency.len() as f64
}

fn main() {}
