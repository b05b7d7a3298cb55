use steadfast::idempotency::IdempotencyError;

struct Payload {
    cents: u64,
}

#[steadfast::idempotent(key = request_id, fingerprint = payload)]
async fn pay(request_id: String, payload: Payload) -> Result<u64, IdempotencyError> {
    Ok(payload.cents)
}

fn main() {}
