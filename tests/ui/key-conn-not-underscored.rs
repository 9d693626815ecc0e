// A connection passed as a key argument: the fix is to name it `_conn`.
use connscope::{Conn, Connection, Provider, cached_resource};

#[derive(Connection)]
struct Prices {
    url: String,
}

impl Provider for Prices {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.url.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[cached_resource]
async fn price(conn: &Conn<Prices>, product: &str) -> Result<u64, connscope::Error> {
    let _ = (conn, product);
    Ok(1)
}

fn main() {}
