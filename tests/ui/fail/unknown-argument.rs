use steadfast::Code;

#[steadfast::retry(attempts = 3)]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
