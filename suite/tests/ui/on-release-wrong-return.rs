use connscope::cached_resource;

async fn close(_report: u64) -> bool {
    true
}

#[cached_resource(on_release = close)]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
