use steadfast::{Code, retry};

#[retry(max = 2, nested = "shared")]
async fn fetch(id: u32) -> Result<u32, Code> {
    Ok(id)
}

fn main() {}
