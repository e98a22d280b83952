//! # verdant: greenlet + gevent for Rust
//!
//! Stackful green threads with a hand-written context switch (`arch/x86_64_sysv.s`,
//! `arch/aarch64_aapcs.s`), guarded `mmap`'d stacks, and two coroutine APIs:
//!
//! * [`coroutine::Coroutine`]: typed and asymmetric: `resume(input)` runs the body until it
//!   calls `suspend(value)` or returns.
//! * [`greenlet::Greenlet`]: Python greenlet's semantics: symmetric `switch` between any
//!   greenlets of a thread, a parent that receives the return value, `throw`, and
//!   `GreenletExit` for greenlets that are dropped while suspended.
//!
//! ```
//! use verdant::coroutine::{Coroutine, CoroutineResult};
//!
//! // A generator of Fibonacci numbers, run on its own 256 KiB stack.
//! let mut fib = Coroutine::new(|yielder, ()| {
//!     let (mut a, mut b) = (0u64, 1u64);
//!     loop {
//!         yielder.suspend(a);
//!         (a, b) = (b, a + b);
//!     }
//! });
//! let first: Vec<u64> = (0..10)
//!     .map(|_| match fib.resume(()) {
//!         CoroutineResult::Yield(n) => n,
//!         CoroutineResult::Return(()) => unreachable!(),
//!     })
//!     .collect();
//! assert_eq!(first, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
//! ```
//!
//! ## Layers
//! Each layer only uses the ones below it (see `DESIGN.md` in the project's shared docs):
//! `arch/` (the switch) → `context` (raw contexts; a corosensei-backed fallback for other
//! CPUs) → [`stack`] (memory, pool, overflow reports) → [`coroutine`] and [`greenlet`].
//! `unsafe` stays in these low layers; the public API is safe.
//!
//! ## Guarantees
//! * Panics never cross the assembly: they are caught at the root of a coroutine's stack
//!   and re-raised in whoever resumed it.
//! * Dropping an unfinished coroutine or greenlet unwinds its stack: destructors run once.
//! * Coroutines and greenlets are `!Send`: they never change OS thread.
//! * A stack overflow is reported (`verdant: stack overflow in green thread #id 'name'`)
//!   and aborts the process; it is never silent memory corruption.
//! * Running out of memory or of memory mappings is a [`stack::StackError`], not a crash.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub(crate) mod context;
pub mod coroutine;
pub mod greenlet;
pub mod hub;
pub mod monitor;
#[cfg(all(
    feature = "monkey",
    any(target_os = "linux", target_os = "macos", target_os = "freebsd")
))]
pub mod monkey;
#[cfg(all(
    feature = "monkey",
    not(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))
))]
compile_error!(
    "verdant: the `monkey` feature supports Linux (glibc), macOS and FreeBSD only so far; \
     build without `--features monkey` on this OS"
);
pub mod net;
pub mod pool;
pub(crate) mod reactor;
pub mod server;
pub mod stack;
pub mod sync;
pub(crate) mod sys;
pub mod threadpool;
pub mod time;
pub(crate) mod timer;

pub use hub::{
    current, iwait, joinall, spawn, spawn_later, yield_now, AsCompleted, Builder, CurrentThread,
    JoinError, JoinHandle, Killed, WaitError,
};
pub use pool::{Group, Pool};
pub use server::StreamServer;
pub use sync::AsyncResult;
pub use sync::BoundedSemaphore;
pub use sync::Condvar;
pub use sync::Event;
pub use sync::Mutex;
pub use sync::MutexGuard;
pub use sync::ReleaseError;
pub use sync::Semaphore;
pub use sync::SemaphorePermit;
pub use sync::{Channel, Queue};
pub use threadpool::{spawn_blocking, BlockingError, BlockingHandle, ThreadPool};
pub use time::{sleep, sleep_until, with_timeout, Elapsed, Timeout};

/// The context-switch backend compiled into this build, for benchmarks and diagnostics:
/// `"x86_64 System V asm"`, `"aarch64 AAPCS64 asm"`, or the corosensei fallback.
///
/// ```
/// println!("verdant switches contexts with: {}", verdant::CONTEXT_BACKEND);
/// assert!(!verdant::CONTEXT_BACKEND.is_empty());
/// ```
pub const CONTEXT_BACKEND: &str = context::BACKEND;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
