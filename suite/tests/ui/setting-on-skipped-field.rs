use connscope::{Connection, Provider};

#[derive(Connection, serde::Deserialize)]
struct Warehouse {
    url: String,
    #[connection(skip, secret, default = 3)]
    #[serde(skip)]
    retries: u32,
    #[connection(label = "Cache")]
    #[serde(skip)]
    cache: Vec<String>,
    #[connection(state)]
    #[serde(skip)]
    generation: u64,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}{}{:?}{}", self.url, self.retries, self.cache, self.generation))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
