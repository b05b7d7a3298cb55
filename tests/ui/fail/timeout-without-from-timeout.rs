#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(Unavailable)]
    Down,
    #[code(InvalidArgument)]
    BadInput,
}

#[steadfast::retry(timeout = "5s")]
async fn fetch() -> Result<u32, FetchError> {
    Err(FetchError::Down)
}

fn main() {}
