use connscope::{Connection, Provider};

#[derive(Connection)]
struct Vault {
    #[connection(secret)]
    pin: u32,
}

impl Provider for Vault {
    type Raw = u32;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u32, std::io::Error> {
        Ok(self.pin)
    }
    async fn is_open(&self, _raw: &u32) -> bool {
        true
    }
}

fn main() {}
