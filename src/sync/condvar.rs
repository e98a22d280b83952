//! [`Condvar`]: wait for a condition under a green [`Mutex`] (a green
//! `std::sync::Condvar`; gevent has no direct equivalent beyond `threading.Condition` when
//! monkey-patched).
//!
//! `wait` queues the green thread, unlocks, parks, and locks again once notified. No other
//! green thread runs between the queueing and the unlock (switches only happen in `park`),
//! so a notification sent right after the unlock is never missed. A notification given to
//! a waiter that is killed, or whose re-lock is interrupted by a `Timeout`, is passed on to
//! the next waiter rather than lost.

use super::mutex::MutexGuard;
use super::wait_queue::WaitQueue;
use crate::hub::WaitError;
use std::fmt;
use std::time::{Duration, Instant};

/// A condition variable for green threads, used with a [`Mutex`](crate::Mutex).
///
/// Waiters are woken in FIFO order. As with `std::sync::Condvar`, re-check the condition
/// after waking (or use [`wait_while`](Self::wait_while)).
///
/// If a wait is interrupted (`Err`: a [`Timeout`](crate::Timeout) fired, or nothing could
/// ever notify it) the guard is consumed and the mutex is **not** locked on return; a kill
/// unwinds out of it, also leaving the mutex unlocked.
///
/// ```
/// use std::rc::Rc;
/// use verdant::{Condvar, Mutex};
///
/// let pair = Rc::new((Mutex::new(Vec::new()), Condvar::new()));
/// let consumer = {
///     let pair = pair.clone();
///     verdant::spawn(move || {
///         let (items, more) = &*pair;
///         let mut items = more.wait_while(items.lock().unwrap(), |v| v.len() < 3).unwrap();
///         items.drain(..).collect::<Vec<i32>>()
///     })
/// };
/// for i in 1..=3 {
///     pair.0.lock().unwrap().push(i);
///     pair.1.notify_one();
///     verdant::yield_now();
/// }
/// assert_eq!(consumer.join().unwrap(), [1, 2, 3]);
/// ```
#[derive(Default)]
pub struct Condvar {
    pub(super) waiters: WaitQueue,
}

impl Condvar {
    /// A condition variable with no waiters.
    pub const fn new() -> Condvar {
        Condvar {
            waiters: WaitQueue::new(),
        }
    }

    /// Unlocks the guard's mutex, blocks the current green thread until notified, and
    /// locks the mutex again.
    ///
    /// Returns `Err` (the mutex unlocked) if a `Timeout` covering the call fires while it
    /// waits for the notification or for the lock, or if nothing could ever notify it.
    pub fn wait<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<MutexGuard<'a, T>, WaitError> {
        self.wait_deadline(guard, None).map(|(guard, _)| guard)
    }

    /// Waits while `condition` holds for the data, then returns the guard (with the lock
    /// held and the condition false).
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> Result<MutexGuard<'a, T>, WaitError> {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`; the `bool` tells whether it
    /// timed out (std's `WaitTimeoutResult::timed_out`). The lock is held again in both
    /// cases.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (m, cv) = (verdant::Mutex::new(0), verdant::Condvar::new());
    /// let (guard, timed_out) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(1)).unwrap();
    /// assert!(timed_out);
    /// assert_eq!(*guard, 0);
    /// ```
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(MutexGuard<'a, T>, bool), WaitError> {
        self.wait_deadline(guard, Some(Instant::now() + timeout))
            .map(|(guard, notified)| (guard, !notified))
    }

    /// Wakes the oldest waiter, if any.
    pub fn notify_one(&self) {
        self.waiters.notify_one();
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.waiters.notify_all();
    }

    fn wait_deadline<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> Result<(MutexGuard<'a, T>, bool), WaitError> {
        let mutex = guard.mutex;
        // Unlocking only wakes the next owner: nothing runs before we are queued.
        drop(guard);
        let notified = self.waiters.wait(deadline, || self.notify_one())?;
        // If the re-lock fails or unwinds, the notification we consumed goes to the next
        // waiter.
        let mut pass_on = PassOn {
            condvar: self,
            armed: notified,
        };
        let guard = mutex.lock()?;
        pass_on.armed = false;
        Ok((guard, notified))
    }
}

struct PassOn<'a> {
    condvar: &'a Condvar,
    armed: bool,
}

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.condvar.notify_one();
        }
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            .field("waiters", &self.waiters.len())
            .finish()
    }
}
