use steadfast::idempotency::IdempotencyError;

struct Payments {
    database_url: String,
}

impl Payments {
    #[steadfast::idempotent(key = request_id, store = self.database_url)]
    async fn pay(&self, request_id: String, cents: u64) -> Result<u64, IdempotencyError> {
        Ok(cents)
    }
}

fn main() {}
