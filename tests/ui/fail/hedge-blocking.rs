use steadfast::{Code, retry};

#[retry(max = 2, hedge = "50ms")]
fn fetch(id: u32) -> Result<u32, Code> {
    Ok(id)
}

fn main() {}
