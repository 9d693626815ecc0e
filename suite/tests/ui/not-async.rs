use connscope::cached_resource;

#[cached_resource]
fn report(year: u16) -> u64 {
    year.into()
}

fn main() {}
