use connscope::Connection;

#[derive(Connection)]
union Raw {
    port: u16,
    flags: u32,
}

fn main() {}
