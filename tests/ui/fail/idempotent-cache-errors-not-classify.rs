use steadfast::idempotency::IdempotencyError;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum PayError {
    Declined,
    Idempotency(String),
}

impl From<IdempotencyError> for PayError {
    fn from(error: IdempotencyError) -> PayError {
        PayError::Idempotency(error.to_string())
    }
}

#[steadfast::idempotent(key = request_id, cache_errors = "FailedPrecondition")]
async fn pay(request_id: String, cents: u64) -> Result<u64, PayError> {
    if cents == 0 { Err(PayError::Declined) } else { Ok(cents) }
}

fn main() {}
