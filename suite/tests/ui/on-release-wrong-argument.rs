use std::sync::Arc;

use connscope::cached_resource;

async fn close(_report: String) {}

#[cached_resource(on_release = close)]
async fn report(year: u16) -> Arc<String> {
    Arc::new(year.to_string())
}

fn main() {}
