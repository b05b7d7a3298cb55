use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request_id, lease = "500us")]
async fn pay(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
