#[steadfast::idempotent(key = request_id)]
struct PayRequest {
    request_id: String,
}

fn main() {}
