use connscope::{Connection, Provider};

#[derive(Connection)]
struct Warehouse {
    #[connection(fixed, label = "Host", secret)]
    host: String,
    #[connection(scope = "session")]
    user: String,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}{}", self.host, self.user))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
