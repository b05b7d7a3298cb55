use steadfast::Code;

#[steadfast::retry(max = 0, on = "Unavailible", backof = "exp(1s)")]
async fn fetch((id, _name): (u64, String)) -> Result<u64, Code> {
    Ok(id)
}

fn main() {}
