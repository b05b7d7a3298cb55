use steadfast::idempotency::IdempotencyError;

#[steadfast::idempotent(key = request, run_to_completion = true)]
async fn borrowed(request: &str) -> Result<usize, IdempotencyError> {
    Ok(request.len())
}

fn main() {}
