#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(Unavailable)]
    Down,
    BadInput,
}

fn main() {}
