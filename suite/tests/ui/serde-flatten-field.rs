use connscope::{Connection, Provider};

#[derive(serde::Deserialize)]
struct Pool {
    max_connections: u32,
}

#[derive(Connection, serde::Deserialize)]
struct Warehouse {
    url: String,
    #[serde(flatten)]
    pool: Pool,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}{}", self.url, self.pool.max_connections))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
