use steadfast::Code;

struct Request {
    id: u64,
}

#[steadfast::retry]
async fn send(request: Request) -> Result<u64, Code> {
    Ok(request.id)
}

fn main() {}
