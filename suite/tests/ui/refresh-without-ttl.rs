use connscope::cached_resource;

#[cached_resource(refresh = "background")]
async fn rates(currency: String) -> f64 {
    currency.len() as f64
}

fn main() {}
