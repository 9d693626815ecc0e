use connscope::{Conn, Connection, Provider, cached_resource};

#[derive(Connection)]
struct Warehouse {
    host: String,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.host.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[cached_resource(ttl = "5m", shared = true)]
async fn totals(conn: &Conn<Warehouse>, year: u16) -> Result<u64, connscope::Error> {
    let _ = conn;
    Ok(u64::from(year))
}

fn main() {}
