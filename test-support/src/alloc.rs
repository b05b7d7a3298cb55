//! A global allocator that counts the allocations made by the current
//! thread while a [`Counting`] guard is alive: the way steadfast's tests
//! prove that a code path allocates nothing.
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: steadfast_test_support::alloc::CountingAllocator = steadfast_test_support::alloc::CountingAllocator;
//!
//! fn main() {
//!     let counting = steadfast_test_support::alloc::Counting::start();
//!     let boxed = std::hint::black_box(Box::new(1_u64));
//!     let counted = counting.stop();
//!     drop(boxed);
//!     assert_eq!(counted.allocations, 1);
//!     assert_eq!(counted.bytes, 8);
//! }
//! ```
//!
//! The counters are thread-local, so that tests running in parallel on
//! other threads do not disturb the count, and a future driven by a
//! current-thread runtime is counted across its `.await`s.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    marker::PhantomData,
};

/// [`System`], counting the allocations (and reallocations) of the current
/// thread while a [`Counting`] guard is alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

thread_local! {
    // `const` initialisers of types without `Drop`: reading them never
    // allocates nor registers a destructor, so the allocator may use them.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-locals may be gone while the thread exits.
    if ACTIVE.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        let _ = BYTES.try_with(|bytes| bytes.set(bytes.get() + size as u64));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping touches only `Cell`s of plain integers.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What the current thread allocated while a [`Counting`] guard was alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocations {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub allocations: u64,
    /// Bytes requested by those calls.
    pub bytes: u64,
}

/// Counts the allocations of the current thread from [`Counting::start`]
/// to [`Counting::stop`]. Counts only if [`CountingAllocator`] is the
/// program's `#[global_allocator]`.
#[derive(Debug)]
#[must_use = "counting stops when the guard drops: call `stop` to read the count"]
pub struct Counting {
    // Not `Send`: the counters belong to the thread that started counting.
    _thread: PhantomData<*const ()>,
}

impl Counting {
    /// Resets the current thread's counters and starts counting.
    ///
    /// # Panics
    ///
    /// If this thread is already counting.
    pub fn start() -> Counting {
        assert!(
            !ACTIVE.get(),
            "steadfast_test_support::alloc: this thread is already counting"
        );
        ALLOCATIONS.set(0);
        BYTES.set(0);
        ACTIVE.set(true);
        Counting {
            _thread: PhantomData,
        }
    }

    /// Stops counting and returns what was allocated since `start`.
    pub fn stop(self) -> Allocations {
        ACTIVE.set(false);
        Allocations {
            allocations: ALLOCATIONS.get(),
            bytes: BYTES.get(),
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        ACTIVE.set(false);
    }
}
