use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request_id, ttl = "1h", key = other_id)]
async fn pay(request_id: String, other_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
