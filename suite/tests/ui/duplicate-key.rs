use connscope::cached_resource;

#[cached_resource(ttl = "5m", scope = "global", ttl = "10m")]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
