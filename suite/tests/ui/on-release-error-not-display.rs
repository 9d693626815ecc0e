use connscope::cached_resource;

#[derive(Debug)]
struct CloseFailed;

fn close(_report: u64) -> Result<(), CloseFailed> {
    Err(CloseFailed)
}

#[cached_resource(on_release = close)]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
