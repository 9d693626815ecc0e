// (The UI cases build connscope without features: the `redis` feature is reported too.)
use connscope::cached_resource;

#[derive(Clone)]
struct Model {
    weights: Vec<f32>,
}

#[cached_resource(ttl = "1h", shared = true)]
async fn model(name: String) -> Model {
    Model { weights: vec![name.len() as f32] }
}

fn main() {}
