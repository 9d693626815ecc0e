use connscope::cached_resource;

pub struct Report {
    pub rows: Vec<String>,
}

#[cached_resource]
async fn report(year: u16) -> Result<Report, connscope::Error> {
    Ok(Report { rows: vec![year.to_string()] })
}

fn main() {}
