use connscope::{Connection, Provider};

#[derive(serde::Deserialize)]
struct Tls {
    ca: String,
}

#[derive(Connection)]
struct Warehouse {
    url: String,
    tls: Tls,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}{}", self.url, self.tls.ca))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
