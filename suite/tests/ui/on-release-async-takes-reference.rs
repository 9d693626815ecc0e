use std::sync::Arc;

use connscope::cached_resource;

// An `async fn` hook cannot borrow the value: its future outlives the borrow.
async fn close(report: &Arc<String>) {
    let _ = report.len();
}

#[cached_resource(on_release = close)]
async fn report(year: u16) -> Arc<String> {
    Arc::new(year.to_string())
}

fn main() {}
