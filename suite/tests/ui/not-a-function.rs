use connscope::cached_resource;

#[cached_resource(ttl = "5m")]
struct Report {
    year: u16,
}

fn main() {}
