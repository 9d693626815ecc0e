use connscope::cached_resource;

#[cached_resource]
async fn report(#[not_key] (year, _month): (u16, u8), region: String) -> u64 {
    let _ = region;
    year.into()
}

fn main() {}
