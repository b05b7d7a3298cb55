use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = payment_id, transaction = tx)]
async fn pay(payment_id: String, cents: i64) -> Result<i64, IdempotencyError> {
    Ok(cents)
}

fn main() {}
