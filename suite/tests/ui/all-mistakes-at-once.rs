// Every mistake of an attribute is reported in one compile, each at its own token.
use connscope::{Connection, Provider, cached_resource};

#[derive(Connection)]
#[connection(scope = "sesion", ttl = "10x", max_entries = 0, max_entires = 5)]
#[connection(ttl = "5m")]
struct Warehouse {
    url: String,
    #[connection(secret, label = 3, passwrd)]
    password: String,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}{}", self.url, self.password))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[cached_resource(scope = "globl", ttl = "0s", max_entries = -1, on_relase = close)]
fn report<T>(year: u16, _filter: impl Fn(u16) -> bool) -> u64 {
    u64::from(year)
}

fn main() {}
