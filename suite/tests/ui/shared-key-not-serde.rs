use connscope::cached_resource;

#[derive(Clone, Hash, PartialEq, Eq)]
struct Region {
    code: u16,
}

#[cached_resource(ttl = "5m", shared = true)]
async fn sales(region: Region, year: u16) -> u64 {
    u64::from(region.code + year)
}

fn main() {}
