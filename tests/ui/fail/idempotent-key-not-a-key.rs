use steadfast::idempotency::IdempotencyError;

struct PayRequest {
    request_id: u64,
    cents: u64,
}

#[steadfast::idempotent(key = request.request_id)]
async fn pay(request: PayRequest) -> Result<u64, IdempotencyError> {
    Ok(request.cents)
}

fn main() {}
