#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(Unavailable)]
    Down,
    #[classify(transparent)]
    Io(std::io::Error, String),
}

fn main() {}
