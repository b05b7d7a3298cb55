use steadfast::idempotency::{IdempotencyError, MemoryStore};

struct Payments {
    store: MemoryStore,
}

impl Payments {
    #[steadfast::idempotent(key = payment_id, store = self.store, transaction = tx)]
    async fn pay(&self, payment_id: &str, cents: i64) -> Result<i64, IdempotencyError> {
        Ok(cents)
    }
}

fn main() {}
