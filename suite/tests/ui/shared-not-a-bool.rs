use connscope::cached_resource;

#[cached_resource(ttl = "5m", shared = "redis")]
async fn prices(item: u64) -> u64 {
    item * 2
}

#[cached_resource(ttl = "5m", distributed = true)]
async fn stock(item: u64) -> u64 {
    item * 3
}

fn main() {}
