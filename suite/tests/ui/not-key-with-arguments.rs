use connscope::cached_resource;

pub struct Client;

#[cached_resource]
async fn report(#[not_key(client)] client: &Client, year: u16) -> u64 {
    let _ = client;
    year.into()
}

fn main() {}
