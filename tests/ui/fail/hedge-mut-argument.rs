use steadfast::{Code, retry};

struct Connection;

#[retry(max = 2, hedge = "50ms")]
async fn fetch(connection: &mut Connection, id: u32) -> Result<u32, Code> {
    let _ = connection;
    Ok(id)
}

fn main() {}
