//! Synchronisation for green threads: gevent's `gevent.event` and `gevent.lock`, with std's
//! names where std has the concept.
//!
//! | gevent                          | verdant                                   | across OS threads |
//! |---------------------------------|-------------------------------------------|-------------------|
//! | `gevent.event.Event`            | [`Event`]                                 | no (one hub)      |
//! | `gevent.event.AsyncResult`      | [`AsyncResult`]                           | yes (`Send+Sync`) |
//! | `gevent.lock.Semaphore`         | [`Semaphore`], [`SemaphorePermit`]        | no (one hub)      |
//! | `gevent.lock.BoundedSemaphore`  | [`BoundedSemaphore`], [`ReleaseError`]    | no (one hub)      |
//! | `gevent.lock.Lock`              | [`Mutex`], [`MutexGuard`] (std's names)   | no (one hub)      |
//! | `threading.Condition` (patched) | [`Condvar`] (std's name)                  | no (one hub)      |
//!
//! ## Common rules
//! * Blocking calls block the green thread, never the OS thread, and return
//!   [`WaitError`](crate::WaitError): `TimedOut` when a [`Timeout`](crate::Timeout) in
//!   scope fires, `WouldBlockForever` when nothing could ever wake the waiter (gevent's
//!   `LoopExit`). A kill unwinds out of them. However a wait ends, the waiter is no longer
//!   registered: a later `set`/`release`/`unlock`/`notify` goes to someone still waiting.
//! * `*_timeout(duration)` variants report an elapsed duration in their `Ok` value
//!   (`false` / `None`), not as an error; only [`AsyncResult::get_timeout`] reports it as
//!   `Err(WaitError::TimedOut)`, like gevent's `get(timeout=...)` raising `Timeout`.
//! * Waiters are served in FIFO order, and what is handed over (a permit, the lock, a
//!   notification) goes directly to the oldest waiter: no barging, no starvation. A waiter
//!   that unwinds after something was handed to it passes it on.
//! * The single-hub primitives are `!Send` and shared between the green threads of one OS
//!   thread by reference (an `Rc`); [`AsyncResult`] is the bridge between OS threads.
//!   Its waiters hold a cross-thread waker, so the hub never reports `WouldBlockForever`
//!   for them (another thread may still set it): bound such waits with a timeout.
//!
//! The single-hub primitives cannot be sent to another OS thread (none of these compiles):
//!
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(verdant::Event::new());
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(verdant::Semaphore::new(1));
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(verdant::Mutex::new(0));
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(verdant::Condvar::new());
//! ```
//!
//! while an [`AsyncResult`] can:
//!
//! ```
//! fn assert_send_sync<T: Send + Sync>(_: T) {}
//! assert_send_sync(verdant::AsyncResult::<String, String>::new());
//! ```
//!
//! An example of two of them together:
//!
//! ```
//! use std::rc::Rc;
//! use verdant::{Event, Semaphore};
//!
//! let start = Rc::new(Event::new());
//! let slots = Rc::new(Semaphore::new(1));
//! let workers: Vec<_> = (0..3)
//!     .map(|i| {
//!         let (start, slots) = (start.clone(), slots.clone());
//!         verdant::spawn(move || {
//!             start.wait().unwrap();
//!             let _slot = slots.acquire().unwrap();
//!             i * 10
//!         })
//!     })
//!     .collect();
//! start.set();
//! let results: Vec<i32> = verdant::joinall(workers).into_iter().map(Result::unwrap).collect();
//! assert_eq!(results, [0, 10, 20]);
//! ```

mod wait_queue;

mod async_result;
mod condvar;
mod event;
mod mutex;
mod semaphore;

pub use async_result::AsyncResult;
pub use condvar::Condvar;
pub use event::Event;
pub use mutex::Mutex;
pub use mutex::MutexGuard;
pub use semaphore::BoundedSemaphore;
pub use semaphore::ReleaseError;
pub use semaphore::Semaphore;
pub use semaphore::SemaphorePermit;

#[cfg(test)]
mod tests;
