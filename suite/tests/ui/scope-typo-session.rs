use connscope::cached_resource;

#[cached_resource(scope = "sesion")]
async fn report(year: u16) -> Result<u64, connscope::Error> {
    Ok(year.into())
}

fn main() {}
