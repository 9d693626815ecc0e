use connscope::cached_resource;

struct Reports;

impl Reports {
    #[cached_resource]
    async fn report(&self, year: u16) -> u64 {
        year.into()
    }
}

fn main() {}
