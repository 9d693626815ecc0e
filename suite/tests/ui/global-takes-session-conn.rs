use connscope::{Conn, Connection, Provider, cached_resource};

#[derive(Connection)]
#[connection(scope = "session")]
struct Warehouse {
    user: String,
}

impl Provider for Warehouse {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.user.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[cached_resource(scope = "global")]
async fn top_customers(_conn: &Conn<Warehouse>, region: String) -> Result<Vec<String>, connscope::Error> {
    Ok(vec![region])
}

fn main() {}
