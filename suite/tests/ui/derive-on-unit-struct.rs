use connscope::Connection;

#[derive(Connection)]
struct Memory;

fn main() {}
