use connscope::cached_resource;

#[cached_resource(ttl = 30)]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
