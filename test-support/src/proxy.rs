//! [`FaultProxy`]: a TCP proxy on loopback, between a client and a server
//! (a database, Redis), that cuts every connection on command and refuses
//! new ones for a while, as a network partition or a restarting server
//! would.
//!
//! ```text
//! client ──► 127.0.0.1:<proxy port> ══ one task per connection ══► upstream
//!                  │
//!                  ├─ cut():           every open connection closed at once, both sides, with RST
//!                  └─ refuse_for(d):   cut(), then no listener for d: connect() gets ECONNREFUSED;
//!                                      then the same port is bound again (SO_REUSEADDR)
//! ```
//!
//! Refusing drops the listener rather than accepting and closing at once:
//! a client then sees what it sees when a server is down (`ECONNREFUSED`
//! from the kernel, before any byte), and a pool's "refused, the server is
//! starting: wait and try again" path is the one exercised. The price is
//! that refused connects never reach the proxy, so they cannot be counted;
//! [`ProxyCounters`] counts the refusals instead. To make the re-bind
//! reliable, the proxy listens on a port below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`): a port from port 0 lies in
//! that range, and while its listener is down an outgoing connection (the
//! proxy's own upstream connects among them) may be given it, after which
//! the re-bind would fail.

use std::{
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, oneshot, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// How many times the listener is re-bound, 10 ms apart, before the proxy
/// gives up (2 s): [`FaultProxy::accepting`] then reports the error.
const REBIND_ATTEMPTS: u32 = 200;
/// How many ports below the ephemeral range are tried at start.
const BIND_ATTEMPTS: u32 = 64;
/// How long a cut waits for its connections' tasks to end before aborting
/// them.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// A TCP proxy on 127.0.0.1 to `upstream`, with faults on command.
/// Everything it runs (the listener, one task per connection) ends when it
/// is dropped.
///
/// ```
/// use std::time::Duration;
/// use steadfast_test_support::proxy::FaultProxy;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// // An echo server, and the proxy in front of it.
/// let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let upstream = server.local_addr()?;
/// tokio::spawn(async move {
///     while let Ok((mut socket, _)) = server.accept().await {
///         tokio::spawn(async move {
///             let (mut read, mut write) = socket.split();
///             let _ = tokio::io::copy(&mut read, &mut write).await;
///         });
///     }
/// });
/// let proxy = FaultProxy::start(upstream).await?;
///
/// let mut client = tokio::net::TcpStream::connect(proxy.address()).await?;
/// client.write_all(b"ping").await?;
/// let mut echo = [0; 4];
/// client.read_exact(&mut echo).await?;
/// assert_eq!(&echo, b"ping");
///
/// assert_eq!(proxy.cut().await, 1);
/// assert!(client.read(&mut echo).await.map_or(true, |read| read == 0), "closed");
///
/// proxy.refuse_for(Duration::from_millis(200)).await;
/// assert!(tokio::net::TcpStream::connect(proxy.address()).await.is_err());
/// proxy.accepting().await?;
/// assert!(tokio::net::TcpStream::connect(proxy.address()).await.is_ok());
/// assert_eq!((proxy.counters().cut, proxy.counters().refusals), (1, 1));
/// # Ok(())
/// # }
/// ```
pub struct FaultProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    commands: mpsc::Sender<Command>,
    listening: watch::Receiver<Listening>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// What a [`FaultProxy`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed by a cut (of [`FaultProxy::cut`] or
    /// [`FaultProxy::refuse_for`]) while open.
    pub cut: u64,
    /// Cuts, refusals included.
    pub cuts: u64,
    /// Times the proxy stopped listening ([`FaultProxy::refuse_for`]).
    /// Connects refused meanwhile are refused by the kernel and not seen.
    pub refusals: u64,
    /// Connections whose upstream connect failed (closed at once).
    pub upstream_failures: u64,
}

impl fmt::Display for ProxyCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxy: {} connections accepted, {} cuts ({} of them refusals) closed {} connections, {} upstream connects failed",
            self.accepted, self.cuts, self.refusals, self.cut, self.upstream_failures
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    cut: AtomicU64,
    cuts: AtomicU64,
    refusals: AtomicU64,
    upstream_failures: AtomicU64,
}

/// Whether the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listening {
    Yes,
    /// Refusing, until the window ends and the port is bound again.
    Refusing,
    /// The port could not be bound again: the proxy refuses for good.
    Failed(String),
}

enum Command {
    Cut(oneshot::Sender<u64>),
    Refuse(Duration, oneshot::Sender<u64>),
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port below the ephemeral range, else
    /// any free port) and forwards every connection to `upstream`, which is
    /// connected to once per accepted connection. Needs a tokio runtime
    /// with the I/O and time drivers.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = bind_fresh()?;
        let address = listener.local_addr()?;
        let (commands, receiver) = mpsc::channel(8);
        let (listening_tx, listening) = watch::channel(Listening::Yes);
        let counters = Arc::new(Counters::default());
        let proxy = Proxy {
            address,
            upstream,
            counters: counters.clone(),
            listening: listening_tx,
            connections: JoinSet::new(),
            cut: watch::channel(0).0,
        };
        let task = tokio::spawn(proxy.run(listener, receiver));
        Ok(FaultProxy {
            address,
            upstream,
            commands,
            listening,
            counters,
            task,
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`, the same for the proxy's
    /// whole life.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `url` with its `host:port` (after `scheme://` and any `user@`)
    /// replaced by the proxy's address.
    ///
    /// ```
    /// # use steadfast_test_support::proxy::with_address;
    /// let address = "127.0.0.1:4000".parse().unwrap();
    /// assert_eq!(
    ///     with_address("postgres://postgres@127.0.0.1:5432/test", address),
    ///     "postgres://postgres@127.0.0.1:4000/test"
    /// );
    /// ```
    pub fn url(&self, url: &str) -> String {
        with_address(url, self.address)
    }

    /// Closes every open connection at once, both sides, abruptly (`RST`,
    /// no `FIN`: `SO_LINGER` 0), and returns when they are closed: how
    /// many. New connections are accepted as before.
    ///
    /// # Panics
    /// If the proxy's task has panicked.
    pub async fn cut(&self) -> u64 {
        self.command(Command::Cut).await
    }

    /// Cuts every connection, stops listening, so that connects are
    /// refused (`ECONNREFUSED`), and listens on the same port again after
    /// `duration`; returns once the connections are cut and the listener is
    /// closed, with how many were cut. A refusal during a refusal extends
    /// it. [`accepting`](FaultProxy::accepting) waits for its end.
    ///
    /// # Panics
    /// If the proxy's task has panicked.
    pub async fn refuse_for(&self, duration: Duration) -> u64 {
        self.command(|reply| Command::Refuse(duration, reply)).await
    }

    /// Waits until the proxy listens again after a refusal (at once if it
    /// listens); an error if its port could not be bound again.
    pub async fn accepting(&self) -> io::Result<()> {
        let mut listening = self.listening.clone();
        let state = listening
            .wait_for(|state| *state != Listening::Refusing)
            .await
            .map_err(|_| io::Error::other("the proxy's task ended"))?;
        match &*state {
            Listening::Failed(error) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("the proxy could not listen again: {error}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the proxy is refusing connections now.
    pub fn is_refusing(&self) -> bool {
        *self.listening.borrow() != Listening::Yes
    }

    /// What it did so far.
    pub fn counters(&self) -> ProxyCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &*self.counters;
        ProxyCounters {
            accepted: load(&counters.accepted),
            cut: load(&counters.cut),
            cuts: load(&counters.cuts),
            refusals: load(&counters.refusals),
            upstream_failures: load(&counters.upstream_failures),
        }
    }

    async fn command(&self, command: impl FnOnce(oneshot::Sender<u64>) -> Command) -> u64 {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(command(reply)).await;
        match (sent, answer.await) {
            (Ok(()), Ok(count)) => count,
            _ => panic!("the fault proxy's task ended"),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Its `JoinSet` goes with it: every connection task is aborted.
        self.task.abort();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("address", &self.address)
            .field("upstream", &self.upstream)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// `url` with the `host:port` of its authority (after `scheme://` and any
/// `user[:password]@`, up to the next `/`, `?` or the end) replaced by
/// `address`. A URL without `://` is returned as it is.
pub fn with_address(url: &str, address: SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{user}{address}{tail}")
}

/// The proxy's task: the listener, the connections, the commands.
struct Proxy {
    address: SocketAddr,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    listening: watch::Sender<Listening>,
    connections: JoinSet<bool>,
    /// Bumped by each cut; every connection task watches it.
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// Runs until the [`FaultProxy`] is dropped (its commands end, or its
    /// task is aborted).
    async fn run(mut self, listener: TcpListener, mut commands: mpsc::Receiver<Command>) {
        let mut listener = Some(listener);
        // While refusing: when to bind again, and the attempts left.
        let mut reopen: Option<(Instant, u32)> = None;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Cut(reply)) => {
                        let _ = reply.send(self.cut_all().await);
                    }
                    Some(Command::Refuse(duration, reply)) => {
                        let cut = self.cut_all().await;
                        listener = None;
                        let until = Instant::now() + duration;
                        let until = reopen.map_or(until, |(at, _)| at.max(until));
                        reopen = Some((until, REBIND_ATTEMPTS));
                        self.counters.refusals.fetch_add(1, Ordering::Relaxed);
                        self.listening.send_replace(Listening::Refusing);
                        let _ = reply.send(cut);
                    }
                },
                accepted = accept(listener.as_ref()) => {
                    if let Ok((client, _)) = accepted {
                        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                        let (upstream, counters) = (self.upstream, self.counters.clone());
                        let cut = self.cut.subscribe();
                        self.connections.spawn(forward(client, upstream, cut, counters));
                    }
                }
                () = sleep_until(reopen.map(|(at, _)| at)) => {
                    let Some((_, attempts)) = reopen else { continue };
                    match bind(self.address) {
                        Ok(bound) => {
                            listener = Some(bound);
                            reopen = None;
                            self.listening.send_replace(Listening::Yes);
                        }
                        Err(error) if attempts <= 1 => {
                            reopen = None;
                            self.listening.send_replace(Listening::Failed(error.to_string()));
                        }
                        Err(_) => {
                            reopen = Some((Instant::now() + Duration::from_millis(10), attempts - 1));
                        }
                    }
                }
                Some(_) = self.connections.join_next(), if !self.connections.is_empty() => {}
            }
        }
    }

    /// Closes every open connection and waits for their tasks: how many
    /// were open.
    async fn cut_all(&mut self) -> u64 {
        self.cut.send_modify(|generation| *generation += 1);
        let mut cut = 0;
        let drained = tokio::time::timeout(CUT_GRACE, async {
            while let Some(ended) = self.connections.join_next().await {
                cut += u64::from(ended.unwrap_or(true));
            }
        })
        .await;
        if drained.is_err() {
            // A task that did not see the cut in time: aborted, its sockets dropped.
            cut += self.connections.len() as u64;
            self.connections.shutdown().await;
        }
        self.counters.cuts.fetch_add(1, Ordering::Relaxed);
        self.counters.cut.fetch_add(cut, Ordering::Relaxed);
        cut
    }
}

/// One connection: connect upstream, copy both ways until either side
/// closes or a cut comes. Whether it was cut.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<u64>,
    counters: Arc<Counters>,
) -> bool {
    cut.mark_unchanged();
    let mut server = None;
    let copied = async {
        let _ = client.set_nodelay(true);
        let Ok(connected) = TcpStream::connect(upstream).await else {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let _ = connected.set_nodelay(true);
        let server = server.insert(connected);
        let _ = tokio::io::copy_bidirectional(&mut client, server).await;
    };
    tokio::select! {
        () = copied => false,
        _ = cut.changed() => {
            // Abruptly: RST, not FIN, on both sides; buffered bytes are dropped.
            let _ = client.set_zero_linger();
            if let Some(server) = &server {
                let _ = server.set_zero_linger();
            }
            true
        }
    }
}

/// The next connection, or never while there is no listener.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A listener on `address` with `SO_REUSEADDR`, so that the port can be
/// bound again while connections of the last listener linger in
/// `TIME_WAIT`.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// A listener on a free port of 127.0.0.1 below the ephemeral range, or on
/// any free port if none is found.
fn bind_fresh() -> io::Result<TcpListener> {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if first_ephemeral > 12_000 {
        for _ in 0..BIND_ATTEMPTS {
            let port = fastrand::u16(10_000..first_ephemeral);
            if let Ok(listener) = bind(SocketAddr::from(([127, 0, 0, 1], port))) {
                return Ok(listener);
            }
        }
    }
    bind(SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server on loopback, until the runtime ends.
    async fn echo_server() -> SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(client: &mut TcpStream, bytes: &[u8]) -> io::Result<Vec<u8>> {
        client.write_all(bytes).await?;
        let mut echo = vec![0; bytes.len()];
        client.read_exact(&mut echo).await?;
        Ok(echo)
    }

    /// Whether the peer closed `client`: a read ends (EOF or reset) within 1 s.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        let payload: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut client, &payload).await.unwrap(), payload);
        assert_eq!(round_trip(&mut client, b"again").await.unwrap(), b"again");
        assert_eq!(proxy.counters().accepted, 1);
        assert_eq!(proxy.counters().cut, 0);
    }

    #[tokio::test]
    async fn a_cut_closes_every_connection_and_new_ones_are_accepted() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut first = TcpStream::connect(proxy.address()).await.unwrap();
        let mut second = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut first, b"1").await.unwrap();
        round_trip(&mut second, b"2").await.unwrap();

        assert_eq!(proxy.cut().await, 2);
        assert!(closed(&mut first).await, "the first client is cut");
        assert!(closed(&mut second).await, "the second client is cut");
        assert!(!proxy.is_refusing());

        let mut third = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut third, b"3").await.unwrap(), b"3");
        let counters = proxy.counters();
        assert_eq!((counters.accepted, counters.cut, counters.cuts), (3, 2, 1));
        assert_eq!(counters.refusals, 0);
    }

    #[tokio::test]
    async fn the_upstream_side_is_cut_too() {
        // An upstream that reports when its side of the connection ends.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        let (ended_tx, ended) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = server.accept().await.unwrap();
            let mut buffer = [0; 16];
            let read = socket.read(&mut buffer).await;
            let _ = ended_tx.send(read.map(|read| read == 0).unwrap_or(true));
        });
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let _client = TcpStream::connect(proxy.address()).await.unwrap();
        // The upstream connection exists once the proxy has connected.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.cut().await, 1);
        let ended = tokio::time::timeout(Duration::from_secs(1), ended).await;
        assert!(matches!(ended, Ok(Ok(true))), "{ended:?}");
    }

    #[tokio::test]
    async fn refused_connects_fail_then_the_same_port_accepts_again() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let address = proxy.address();
        let mut open = TcpStream::connect(address).await.unwrap();
        round_trip(&mut open, b"x").await.unwrap();

        let started = Instant::now();
        assert_eq!(proxy.refuse_for(Duration::from_millis(300)).await, 1);
        assert!(proxy.is_refusing());
        assert!(closed(&mut open).await, "refusing cuts the open connection");
        let refused = TcpStream::connect(address).await.map(|_| ()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        proxy.accepting().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!proxy.is_refusing());
        assert_eq!(proxy.address(), address, "the same port");
        let mut again = TcpStream::connect(address).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
        let counters = proxy.counters();
        assert_eq!((counters.refusals, counters.cuts, counters.cut), (1, 1, 1));
        assert_eq!(counters.accepted, 2);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_closes_the_client() {
        // A port nothing listens on: bound, then closed.
        let upstream = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(closed(&mut client).await);
        assert_eq!(proxy.counters().upstream_failures, 1);
    }

    #[tokio::test]
    async fn dropping_the_proxy_ends_its_connections_and_its_port() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let address = proxy.address();
        let mut client = TcpStream::connect(address).await.unwrap();
        round_trip(&mut client, b"x").await.unwrap();
        drop(proxy);
        assert!(closed(&mut client).await);
        let refused = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if TcpStream::connect(address).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(refused.await.is_ok(), "the port closes");
    }

    #[test]
    fn urls_get_the_proxy_address() {
        let address: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (url, expected) in [
            (
                "mysql://root@127.0.0.1:3306/test",
                "mysql://root@127.0.0.1:4000/test",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:4000"),
            ("redis://:secret@db/2", "redis://:secret@127.0.0.1:4000/2"),
            (
                "postgres://u:p@h:1/db?sslmode=disable",
                "postgres://u:p@127.0.0.1:4000/db?sslmode=disable",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(with_address(url, address), expected);
        }
    }
}
