#[steadfast::retry(timeout = "5s", deadline = "2s")]
async fn fetch() -> Result<u32, std::io::Error> {
    Ok(1)
}

fn main() {}
