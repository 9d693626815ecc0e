use connscope::cached_resource;

#[cached_resource(max_entires = 5)]
async fn report(year: u16) -> u64 {
    year.into()
}

#[cached_resource(colour = "blue")]
async fn other(year: u16) -> u64 {
    year.into()
}

fn main() {}
