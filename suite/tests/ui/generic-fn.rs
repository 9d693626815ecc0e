use connscope::cached_resource;

#[cached_resource]
async fn report<T: ToString>(key: T) -> String {
    key.to_string()
}

fn main() {}
