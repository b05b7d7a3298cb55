//! The nested-retry guard through the public attribute: `#[retry]` calls
//! inside an attempt of another `#[retry]` call in the same task share the
//! outermost call's retries, so attempts never multiply across layers
//! (`nested = "share"`, the default); `nested = "outermost"` leaves the
//! retrying to the outermost call; `nested = "independent"` multiplies, as
//! every peer does.

use std::sync::atomic::{AtomicU32, Ordering};

use steadfast::{Code, previous_attempts, retry};

/// Counts the calls of a leaf and fails the first `fail_first` of them.
#[derive(Debug, Default)]
struct Leaf {
    calls: AtomicU32,
    fail_first: u32,
}

impl Leaf {
    fn failing_until(fail_first: u32) -> Leaf {
        Leaf {
            calls: AtomicU32::new(0),
            fail_first,
        }
    }

    fn always_failing() -> Leaf {
        Leaf::failing_until(u32::MAX)
    }

    async fn call(&self) -> Result<u32, Code> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::task::yield_now().await;
        if call <= self.fail_first {
            Err(Code::Unavailable)
        } else {
            Ok(call)
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
}

// Three layers of `max = 3`, each calling the next: 64 leaf calls if each
// retried on its own.

#[retry(max = 3, backoff = "none")]
async fn outer(leaf: &Leaf) -> Result<u32, Code> {
    middle(leaf).await
}

#[retry(max = 3, backoff = "none")]
async fn middle(leaf: &Leaf) -> Result<u32, Code> {
    inner(leaf).await
}

#[retry(max = 3, backoff = "none")]
async fn inner(leaf: &Leaf) -> Result<u32, Code> {
    leaf.call().await
}

#[tokio::test]
async fn three_nested_layers_reach_the_leaf_at_most_four_times() {
    let leaf = Leaf::always_failing();
    assert_eq!(outer(&leaf).await, Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 4, "not 4 × 4 × 4 = 64");
    // Alone, each layer still makes its 4 attempts.
    let leaf = Leaf::always_failing();
    assert_eq!(inner(&leaf).await, Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 4);
}

#[tokio::test]
async fn the_innermost_layer_retries_first_and_the_outer_ones_never_redo_it() {
    // The leaf fails twice: the innermost call retries twice and succeeds;
    // nothing above it runs again.
    let leaf = Leaf::failing_until(2);
    assert_eq!(outer(&leaf).await, Ok(3));
    assert_eq!(leaf.calls(), 3);
}

#[retry(max = 3, backoff = "none")]
async fn two_steps(first: &Leaf, second: &Leaf) -> Result<u32, Code> {
    let one = inner(first).await?;
    let two = inner(second).await?;
    Ok(one + two)
}

#[tokio::test]
async fn calls_one_after_another_in_one_attempt_share_its_retries() {
    // The first step spends 2 of the nest's 3 retries; the second, which
    // always fails, gets the last one, then nobody retries.
    let (first, second) = (Leaf::failing_until(2), Leaf::always_failing());
    assert_eq!(two_steps(&first, &second).await, Err(Code::Unavailable));
    assert_eq!((first.calls(), second.calls()), (3, 2));
}

#[retry(max = 3, backoff = "none")]
async fn outer_of_independent(leaf: &Leaf) -> Result<u32, Code> {
    independent(leaf).await
}

#[retry(max = 3, backoff = "none", nested = "independent")]
async fn independent(leaf: &Leaf) -> Result<u32, Code> {
    leaf.call().await
}

#[tokio::test]
async fn independent_layers_multiply_as_every_peer_does() {
    let leaf = Leaf::always_failing();
    assert_eq!(outer_of_independent(&leaf).await, Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 16);
}

#[retry(max = 3, backoff = "none")]
async fn outer_of_deferring(leaf: &Leaf) -> Result<u32, Code> {
    deferring(leaf).await
}

#[retry(max = 3, backoff = "none", nested = "outermost")]
async fn deferring(leaf: &Leaf) -> Result<u32, Code> {
    leaf.call().await
}

#[tokio::test]
async fn with_outermost_only_the_outermost_call_retries() {
    let leaf = Leaf::failing_until(2);
    assert_eq!(outer_of_deferring(&leaf).await, Ok(3));
    assert_eq!(leaf.calls(), 3, "each outer attempt called the leaf once");
    // Alone, a deferring call retries as usual.
    let leaf = Leaf::always_failing();
    assert_eq!(deferring(&leaf).await, Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 4);
}

#[retry(max = 3, backoff = "none")]
async fn outer_spawning(leaf: &'static Leaf) -> Result<u32, Code> {
    tokio::spawn(inner(leaf))
        .await
        .expect("the spawned call does not panic")
}

#[tokio::test]
async fn a_call_spawned_into_another_task_is_not_nested() {
    let leaf: &'static Leaf = Box::leak(Box::new(Leaf::always_failing()));
    assert_eq!(outer_spawning(leaf).await, Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 16, "another task retries on its own");
}

#[retry(max = 3, backoff = "none")]
async fn seen_attempts(seen: &std::sync::Mutex<Vec<Option<u32>>>) -> Result<(), Code> {
    seen.lock().unwrap().push(previous_attempts());
    tokio::task::yield_now().await;
    seen.lock().unwrap().push(previous_attempts());
    Err(Code::Unavailable)
}

#[tokio::test]
async fn an_attempt_sees_how_many_came_before_it() {
    let seen = std::sync::Mutex::new(Vec::new());
    assert_eq!(previous_attempts(), None);
    let _ = seen_attempts(&seen).await;
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen,
        [0, 0, 1, 1, 2, 2, 3, 3].map(Some),
        "before and after each await"
    );
    assert_eq!(previous_attempts(), None);
}

#[retry(max = 3, backoff = "none")]
fn panicking() -> Result<(), Code> {
    panic!("the attempt panics")
}

#[retry(max = 3, backoff = "none")]
fn blocking_leaf(leaf: &Leaf) -> Result<u32, Code> {
    leaf.calls.fetch_add(1, Ordering::Relaxed);
    Err(Code::Unavailable)
}

#[test]
fn a_panicking_attempt_leaves_no_frame_behind() {
    let panicked = std::panic::catch_unwind(panicking);
    assert!(panicked.is_err());
    assert_eq!(previous_attempts(), None);
    // A call on this thread afterwards is not taken for a nested one.
    let leaf = Leaf::always_failing();
    assert_eq!(blocking_leaf(&leaf), Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 4);
}

#[retry(max = 3, backoff = "none")]
fn blocking_outer(leaf: &Leaf) -> Result<u32, Code> {
    blocking_leaf(leaf)
}

#[test]
fn blocking_layers_share_too() {
    let leaf = Leaf::always_failing();
    assert_eq!(blocking_outer(&leaf), Err(Code::Unavailable));
    assert_eq!(leaf.calls(), 4);
}
