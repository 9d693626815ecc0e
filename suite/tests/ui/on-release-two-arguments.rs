use connscope::cached_resource;

fn close(_report: &u64, _reason: &str) {}

#[cached_resource(on_release = close)]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
