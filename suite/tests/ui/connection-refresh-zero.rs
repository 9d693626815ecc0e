use connscope::{Connection, Provider};

#[derive(Connection)]
#[connection(refresh = "0m")]
struct Warehouse {
    url: String,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.url.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
