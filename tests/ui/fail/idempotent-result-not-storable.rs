use steadfast::idempotency::IdempotencyError;

#[derive(Debug)]
struct Receipt {
    cents: u64,
}

#[steadfast::idempotent(key = request_id)]
async fn pay(request_id: String, cents: u64) -> Result<Receipt, IdempotencyError> {
    Ok(Receipt { cents })
}

fn main() {}
