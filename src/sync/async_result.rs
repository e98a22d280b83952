//! [`AsyncResult`]: a value (or an error) that arrives later, possibly from another OS
//! thread (gevent's `gevent.event.AsyncResult`).
//!
//! This is the primitive that crosses hubs: the state sits behind a `std::sync::Mutex` in
//! an `Arc`, and every waiter registers a [`RemoteWaker`](crate::hub) for its green thread.
//! Whoever completes the result (a green thread of any hub, or a plain OS thread) takes the
//! waiters out under the lock and wakes them after releasing it.
//!
//! ```text
//!   OS thread A (hub A)                     OS thread B
//!   get(): lock, not ready,
//!          push (id, RemoteWaker), unlock
//!          park ──▶ hub A polls ...          set(v): lock, outcome = v, take waiters, unlock
//!                                                    waker.wake() ─▶ hub A's inbox + eventfd
//!          ◀── hub A drains its inbox, runs the waiter
//!          lock, remove (id) if still there, clone v, unlock
//! ```
//!
//! Because an outstanding `RemoteWaker` means "another OS thread may wake me", a green
//! thread waiting on an `AsyncResult` is never told `WouldBlockForever`: if nothing ever
//! completes the result, bound the wait with a timeout. (Same-thread signalling that
//! should detect that deadlock is what [`Event`](crate::Event) is for.)

use crate::hub::{self, RemoteWaker, WaitError};
use std::error::Error;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A value or an error that some green thread or OS thread will provide later; any number
/// of green threads, on any OS threads, can wait for it (gevent's `AsyncResult`).
///
/// It is a cheap, clonable handle (`Arc` inside): `Send + Sync` when `T` and `E` are
/// `Send`. [`set`](Self::set) / [`set_error`](Self::set_error) store the outcome and wake
/// every waiter; [`get`](Self::get) returns a clone of it to each of them (`T` and `E` must
/// be `Clone`: wrap other values in an `Arc`).
///
/// The outcome is a `Result<T, E>`; blocking calls wrap it in the wait's own result, so
/// `get()?` propagates an interrupted wait and leaves the outcome to inspect. `E` defaults
/// to `Arc<dyn Error + Send + Sync>` (clonable, holds any error). As in gevent, setting it
/// again replaces the outcome.
///
/// ```
/// use verdant::AsyncResult;
///
/// let result: AsyncResult<u64> = AsyncResult::new();
/// let setter = result.clone();
/// // A plain OS thread computes the value; the green thread waiting for it is woken
/// // through its hub.
/// let worker = std::thread::spawn(move || setter.set((1..=20).product()));
/// assert_eq!(result.get().unwrap().unwrap(), 2_432_902_008_176_640_000);
/// worker.join().unwrap();
/// ```
///
/// An error travels the same way:
///
/// ```
/// use std::sync::Arc;
/// let result: verdant::AsyncResult<u32> = verdant::AsyncResult::new();
/// result.set_error(Arc::new(std::io::Error::other("disk on fire")));
/// assert!(result.ready() && !result.successful());
/// let err = result.get().unwrap().unwrap_err();
/// assert_eq!(err.to_string(), "disk on fire");
/// ```
pub struct AsyncResult<T, E = Arc<dyn Error + Send + Sync>> {
    pub(super) shared: Arc<Mutex<State<T, E>>>,
}

pub(super) struct State<T, E> {
    outcome: Option<Result<T, E>>,
    pub(super) waiters: Vec<(u64, RemoteWaker)>,
    next_id: u64,
}

impl<T, E> AsyncResult<T, E> {
    /// A result that is not ready yet.
    pub fn new() -> AsyncResult<T, E> {
        AsyncResult {
            shared: Arc::new(Mutex::new(State {
                outcome: None,
                waiters: Vec::new(),
                next_id: 0,
            })),
        }
    }

    /// Stores `value` and wakes every waiter, on whatever OS thread they wait.
    pub fn set(&self, value: T) {
        self.complete(Ok(value));
    }

    /// Stores `error` as the outcome and wakes every waiter (gevent's `set_exception`).
    pub fn set_error(&self, error: E) {
        self.complete(Err(error));
    }

    /// Whether a value or an error has been set.
    pub fn ready(&self) -> bool {
        self.state().outcome.is_some()
    }

    /// Whether a value (not an error) has been set.
    pub fn successful(&self) -> bool {
        matches!(self.state().outcome, Some(Ok(_)))
    }

    /// Blocks the current green thread until the result is ready (without taking it).
    ///
    /// Returns `Err(WaitError::TimedOut)` if a [`Timeout`](crate::Timeout) covering the
    /// call fires first; a kill unwinds out of it. An interrupted waiter is unregistered:
    /// a later `set` does not wake it.
    pub fn wait(&self) -> Result<(), WaitError> {
        self.wait_deadline(None).map(|_| ())
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`; returns whether it is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, WaitError> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    fn state(&self) -> MutexGuard<'_, State<T, E>> {
        // The lock is never held while user code that could panic runs, except `clone` in
        // `try_get`, which leaves the state consistent.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn complete(&self, outcome: Result<T, E>) {
        let (waiters, previous) = {
            let mut state = self.state();
            let previous = state.outcome.replace(outcome);
            (std::mem::take(&mut state.waiters), previous)
        };
        for (_, waker) in &waiters {
            waker.wake();
        }
        // Dropped outside the lock: neither the wakers nor a replaced value run under it.
        drop((waiters, previous));
    }

    /// Returns whether the result is ready (`false`: the deadline passed first).
    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if self.ready() {
            return Ok(true);
        }
        let waker = hub::remote_waker();
        loop {
            let id = {
                let mut state = self.state();
                if state.outcome.is_some() {
                    return Ok(true);
                }
                let id = state.next_id;
                state.next_id += 1;
                state.waiters.push((id, waker.clone()));
                id
            };
            let registration = Registration { result: self, id };
            let parked = match deadline {
                Some(deadline) => hub::park_until(deadline),
                None => hub::park().map(|()| false),
            };
            drop(registration);
            // A result that arrived wins over a deadline or a `Timeout` that fired at the
            // same time (the `Timeout` still interrupts the next blocking call).
            if self.ready() {
                return Ok(true);
            }
            match parked {
                Ok(true) => return Ok(false),
                // A spurious wake-up, or one meant for an earlier wait: register again.
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: Clone, E: Clone> AsyncResult<T, E> {
    /// Blocks the current green thread until the result is ready and returns a clone of the
    /// outcome: `Ok(Ok(value))`, `Ok(Err(error))` for [`set_error`](Self::set_error).
    ///
    /// The outer `Err` is an interrupted wait: `WaitError::TimedOut` if a
    /// [`Timeout`](crate::Timeout) covering the call fired. A kill unwinds out of it. Works
    /// from a plain OS thread too: its main green thread waits on that thread's own hub.
    pub fn get(&self) -> Result<Result<T, E>, WaitError> {
        self.wait()?;
        Ok(self.try_get().expect("a ready result stays ready"))
    }

    /// Like [`get`](Self::get), giving up after `timeout` with `Err(WaitError::TimedOut)`
    /// (gevent's `get(timeout=...)` raising `Timeout`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use verdant::{AsyncResult, WaitError};
    /// let result: AsyncResult<&str> = AsyncResult::new();
    /// assert_eq!(result.get_timeout(Duration::from_millis(1)).unwrap_err(), WaitError::TimedOut);
    /// result.set("done");
    /// assert_eq!(result.get_timeout(Duration::from_millis(1)).unwrap().unwrap(), "done");
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<Result<T, E>, WaitError> {
        if !self.wait_timeout(timeout)? {
            return Err(WaitError::TimedOut);
        }
        Ok(self.try_get().expect("a ready result stays ready"))
    }

    /// The outcome if it is ready, without blocking (gevent's `get_nowait`, `None` instead
    /// of raising `Timeout`).
    pub fn try_get(&self) -> Option<Result<T, E>> {
        self.state().outcome.clone()
    }
}

/// Removes a waiter's entry when its wait ends, however it ends (return, error, kill).
struct Registration<'a, T, E> {
    result: &'a AsyncResult<T, E>,
    id: u64,
}

impl<T, E> Drop for Registration<'_, T, E> {
    fn drop(&mut self) {
        let removed = {
            let mut state = self.result.state();
            let at = state.waiters.iter().position(|(id, _)| *id == self.id);
            at.map(|at| state.waiters.swap_remove(at))
        };
        drop(removed);
    }
}

impl<T, E> Clone for AsyncResult<T, E> {
    /// Another handle to the same result.
    fn clone(&self) -> AsyncResult<T, E> {
        AsyncResult {
            shared: self.shared.clone(),
        }
    }
}

impl<T, E> Default for AsyncResult<T, E> {
    fn default() -> AsyncResult<T, E> {
        AsyncResult::new()
    }
}

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for AsyncResult<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("AsyncResult")
            .field("outcome", &state.outcome)
            .field("waiters", &state.waiters.len())
            .finish()
    }
}
