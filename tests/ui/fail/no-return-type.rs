#[steadfast::retry]
async fn ping() {}

fn main() {}
