use steadfast::Code;

/// A retry limit written as a number: not something a call can draw from.
static RETRY_LIMIT: u32 = 10;

#[steadfast::retry(max = 3, budget = RETRY_LIMIT)]
async fn fetch() -> Result<u32, Code> {
    Ok(7)
}

fn main() {}
