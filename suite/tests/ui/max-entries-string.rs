use connscope::cached_resource;

#[cached_resource(max_entries = "100")]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
