use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(ttl = "1h")]
async fn pay(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
