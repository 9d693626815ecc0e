use connscope::cached_resource;

// A session function must report "no active session" through its error type: `sqlx::Error`
// cannot carry connscope's errors.
#[cached_resource(scope = "session")]
async fn report(year: u16) -> Result<u64, sqlx::Error> {
    Ok(year.into())
}

fn main() {}
