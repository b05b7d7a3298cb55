#[steadfast::retry(max = 3, backoff = "exp(400ms)", jitter = "equal", deadline = "1s")]
async fn fetch() -> Result<u32, std::io::Error> {
    Ok(1)
}

fn main() {}
