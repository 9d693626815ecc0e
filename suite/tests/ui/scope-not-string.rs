use connscope::cached_resource;

#[cached_resource(scope = session)]
async fn report(year: u16) -> Result<u64, connscope::Error> {
    Ok(year.into())
}

#[cached_resource(scope = 1)]
async fn other(year: u16) -> Result<u64, connscope::Error> {
    Ok(year.into())
}

fn main() {}
