use connscope::cached_resource;

#[cached_resource]
async fn report(rows: &mut Vec<u64>) -> u64 {
    rows.len() as u64
}

fn main() {}
