use steadfast::Code;

#[steadfast::retry(backoff = "exp(1s, max = 100ms)")]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
