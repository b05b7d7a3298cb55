use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request_id, in_progres = "wait(5s)")]
async fn pay(request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
