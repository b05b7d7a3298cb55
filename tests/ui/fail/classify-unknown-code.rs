#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(Unavailble)]
    Down,
}

fn main() {}
