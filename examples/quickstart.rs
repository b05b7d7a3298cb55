//! The smallest useful retry: a client whose server drops its first two
//! connections. `#[retry]` classifies the connection errors as
//! `Unavailable`, backs off and succeeds on the third attempt.
//!
//! Run: `cargo run --example quickstart`

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

use steadfast::RetryEvent;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

static CONNECTIONS: AtomicU32 = AtomicU32::new(0);

/// A server that resets its first two connections, then answers "pong".
async fn flaky_server(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        if CONNECTIONS.fetch_add(1, Ordering::SeqCst) < 2 {
            drop(socket); // the client sees the connection closed
            continue;
        }
        tokio::spawn(async move {
            let mut request = [0u8; 4];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"pong").await;
            }
        });
    }
}

fn log_retry(error: &std::io::Error, event: RetryEvent) {
    println!(
        "attempt {} failed ({error}, code {:?}); retrying in {:?}",
        event.attempt,
        event.code.map(|code| code.name()),
        event.delay
    );
}

#[steadfast::retry(max = 4, backoff = "exp(50ms)", timeout = "1s", notify = log_retry)]
async fn ping(address: std::net::SocketAddr) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(b"ping").await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?; // EOF on a dropped connection: Unavailable
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(flaky_server(listener));
    let started = Instant::now();
    let reply = ping(address).await?;
    println!(
        "reply {reply:?} after {} connections in {:?}",
        CONNECTIONS.load(Ordering::SeqCst),
        started.elapsed()
    );
    Ok(())
}
