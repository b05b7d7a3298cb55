use steadfast::Code;

#[steadfast::retry]
async fn send((id, name): (u64, String)) -> Result<u64, Code> {
    let _ = name;
    Ok(id)
}

fn main() {}
