use connscope::{Connection, Provider, Runtime};

#[derive(Connection)]
struct Tenant {
    database: String,
}

impl Provider for Tenant {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        println!("{}", self.database);
        Ok(())
    }
    async fn is_open(&self, _: &()) -> bool {
        true
    }
}

pub async fn by_request(rt: &Runtime, database: String) {
    let _ = rt.connect(Tenant { database }).await;
}

fn main() {}
