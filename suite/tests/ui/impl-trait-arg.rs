use connscope::cached_resource;

#[cached_resource]
async fn report(key: impl AsRef<str>) -> String {
    key.as_ref().to_owned()
}

fn main() {}
