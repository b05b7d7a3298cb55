#[steadfast::retry]
struct Client {
    url: String,
}

fn main() {}
