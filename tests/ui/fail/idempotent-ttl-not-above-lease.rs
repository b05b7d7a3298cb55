use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request_id, ttl = "1s", lease = "2s")]
async fn pay(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

// The default lease is 30s.
#[steadfast::idempotent(key = request_id, ttl = "10s")]
async fn refund(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
