#[derive(Debug)]
enum PayError {
    Declined,
}

#[steadfast::idempotent(key = request_id)]
async fn pay(request_id: String, cents: u64) -> Result<u64, PayError> {
    if cents == 0 { Err(PayError::Declined) } else { Ok(cents) }
}

fn main() {}
