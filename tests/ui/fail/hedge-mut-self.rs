use steadfast::{Code, retry};

struct Client {
    calls: u32,
}

impl Client {
    #[retry(max = 2, hedge = "50ms")]
    async fn fetch(&mut self, id: u32) -> Result<u32, Code> {
        self.calls += 1;
        Ok(id)
    }
}

fn main() {}
