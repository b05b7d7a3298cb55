#[derive(Debug)]
struct FetchError;

#[steadfast::retry]
async fn fetch() -> Result<u32, FetchError> {
    Err(FetchError)
}

fn main() {}
