use connscope::Connection;

#[derive(Connection)]
enum Backend {
    Postgres { url: String },
    Sqlite { path: String },
}

fn main() {}
