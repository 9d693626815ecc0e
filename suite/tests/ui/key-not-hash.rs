use connscope::cached_resource;

#[derive(Clone, PartialEq, Eq)]
pub struct Region(String);

#[cached_resource]
async fn sales(region: Region, year: u16) -> u64 {
    let _ = (region, year);
    1
}

fn main() {}
