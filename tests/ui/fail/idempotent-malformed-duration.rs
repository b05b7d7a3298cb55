use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request_id, ttl = "1 day")]
async fn pay(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
