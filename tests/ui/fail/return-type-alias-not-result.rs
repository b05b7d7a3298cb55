type Balance = u64;

#[steadfast::retry]
async fn balance() -> Balance {
    42
}

fn main() {}
