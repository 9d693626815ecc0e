use connscope::Connection;

#[derive(Connection)]
struct Warehouse(String, u16);

fn main() {}
