use steadfast::Code;

#[steadfast::retry(max = 0)]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
