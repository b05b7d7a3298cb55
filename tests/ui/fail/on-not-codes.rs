use steadfast::Code;

#[steadfast::retry(on = 42)]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
