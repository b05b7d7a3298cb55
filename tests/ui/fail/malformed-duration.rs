use steadfast::Code;

#[steadfast::retry(timeout = "5 sec")]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
