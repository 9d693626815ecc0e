use connscope::cached_resource;

struct Reports;

impl Reports {
    #[cached_resource]
    async fn report(#[not_key] &self, year: u16) -> u64 {
        year.into()
    }
}

fn main() {}
