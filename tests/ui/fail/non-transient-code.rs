use steadfast::Code;

#[steadfast::retry(on = "Unavailable|NotFound")]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
