use steadfast::idempotency::IdempotencyError;

// Owned arguments: the handler runs to completion, so its result must be `Send`.
#[steadfast::idempotent(key = request_id)]
async fn pay(request_id: String, cents: u64) -> Result<u64, Box<dyn std::error::Error>> {
    if cents == 0 {
        return Err(Box::new(IdempotencyError::MissingKey));
    }
    Ok(cents)
}

fn main() {}
