#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(DeadlineExceeded)]
    #[classify(timeout)]
    TimedOut,
    #[code(DeadlineExceeded)]
    #[classify(timeout)]
    Expired,
}

fn main() {}
