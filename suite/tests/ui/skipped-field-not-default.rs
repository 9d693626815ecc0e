use connscope::{Connection, Provider};

/// A handle with no sensible empty value.
struct Handle(std::fs::File);

#[derive(Connection, serde::Deserialize)]
struct Logs {
    path: String,
    #[connection(skip)]
    #[serde(skip)]
    handle: Option<Handle>,
    #[serde(skip)]
    writer: Handle,
}

impl Provider for Logs {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.path.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn main() {}
