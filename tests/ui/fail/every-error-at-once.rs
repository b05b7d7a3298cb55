use steadfast::Code;

#[steadfast::retry(max = 0, on = "Unavailible", backof = "exp(1s)")]
async fn fetch() -> Result<u32, Code> {
    Ok(1)
}

fn main() {}
