#[steadfast::idempotent(key = request_id)]
async fn pay(request_id: String, cents: u64) -> u64 {
    cents
}

fn main() {}
