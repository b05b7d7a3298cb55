//! Generic fns, native `async fn` in a trait impl, and `#[async_trait]`
//! impls (whose futures must be `Send`).

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use steadfast::Code;

#[steadfast::retry(backoff = "none")]
async fn send_twice<C: Clone + Send>(conn: C, calls: &mut u32) -> Result<C, Code> {
    *calls += 1;
    if *calls < 2 {
        Err(Code::Unavailable)
    } else {
        Ok(conn)
    }
}

#[steadfast::retry(backoff = "none")]
async fn longest<'a, T>(items: &'a [T], calls: &mut u32) -> Result<&'a T, Code>
where
    T: PartialOrd + Sync,
{
    *calls += 1;
    if *calls < 2 {
        return Err(Code::Unavailable);
    }
    items
        .iter()
        .fold(None, |best: Option<&T>, item| match best {
            Some(best) if best >= item => Some(best),
            _ => Some(item),
        })
        .ok_or(Code::InvalidArgument)
}

struct Memory {
    values: Vec<u32>,
}

trait Store {
    async fn load(&self, index: usize, calls: &mut u32) -> Result<u32, Code>;
}

impl Store for Memory {
    #[steadfast::retry(backoff = "none")]
    async fn load(&self, index: usize, calls: &mut u32) -> Result<u32, Code> {
        *calls += 1;
        if *calls < 2 {
            return Err(Code::Unavailable);
        }
        self.values.get(index).copied().ok_or(Code::NotFound)
    }
}

#[async_trait::async_trait]
trait Remote {
    async fn fetch(&self, id: String, calls: &mut u32) -> Result<String, Code>;
}

#[async_trait::async_trait]
impl Remote for Memory {
    #[steadfast::retry(max = 2, backoff = "const(1ms)")]
    async fn fetch(&self, id: String, calls: &mut u32) -> Result<String, Code> {
        *calls += 1;
        if *calls < 3 {
            return Err(Code::DeadlineExceeded);
        }
        Ok(format!("{id}={}", self.values.len()))
    }
}

const fn assert_send<F: std::future::Future + Send>(future: F) -> F {
    future
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let mut calls = 0;
    assert_eq!(
        send_twice(String::from("conn"), &mut calls).await,
        Ok("conn".to_owned())
    );
    assert_eq!(calls, 2);

    let mut calls = 0;
    assert_eq!(longest(&[3, 9, 4], &mut calls).await, Ok(&9));

    let memory = Memory { values: vec![7, 8] };
    let mut calls = 0;
    assert_eq!(assert_send(memory.load(1, &mut calls)).await, Ok(8));
    let mut calls = 1;
    assert_eq!(memory.load(5, &mut calls).await, Err(Code::NotFound));

    let remote: &(dyn Remote + Sync) = &memory;
    let mut calls = 0;
    assert_eq!(
        assert_send(remote.fetch("n".into(), &mut calls)).await,
        Ok("n=2".to_owned())
    );
    assert_eq!(calls, 3);
}
