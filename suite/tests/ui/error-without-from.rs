use connscope::cached_resource;

#[derive(Debug)]
struct AppError;

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app error")
    }
}

#[cached_resource(scope = "session")]
async fn report(year: u16) -> Result<u64, AppError> {
    Ok(year.into())
}

fn main() {}
