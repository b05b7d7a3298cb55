use steadfast::Code;

#[steadfast::retry(max = 3, backoff = "exp(100ms)", max = 5)]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
