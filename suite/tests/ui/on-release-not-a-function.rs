use connscope::cached_resource;

const CLOSE: u32 = 3;

#[cached_resource(on_release = CLOSE)]
async fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
