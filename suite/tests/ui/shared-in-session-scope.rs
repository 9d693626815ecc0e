use connscope::cached_resource;

#[cached_resource(scope = "session", shared = true)]
async fn my_orders(customer: u64) -> Result<Vec<u64>, connscope::Error> {
    Ok(vec![customer])
}

fn main() {}
