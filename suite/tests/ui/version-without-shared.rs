use connscope::cached_resource;

#[cached_resource(ttl = "5m", version = "2")]
async fn prices(item: u64) -> u64 {
    item * 2
}

fn main() {}
