//! [`Event`]: a flag that green threads wait for (gevent's `gevent.event.Event`).

use super::wait_queue::WaitQueue;
use crate::hub::WaitError;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// A flag green threads can wait for: [`set`](Event::set) wakes every waiter, and later
/// waits return at once until [`clear`](Event::clear) (gevent's `Event`).
///
/// An `Event` belongs to the OS thread (hub) that uses it and is shared between its green
/// threads by reference, typically through an `Rc`. To signal across OS threads use
/// [`AsyncResult`](crate::AsyncResult).
///
/// A waiter that was woken by `set` returns `Ok` even if the flag was cleared again before
/// it ran: no wake-up is lost.
///
/// ```
/// use std::rc::Rc;
/// use verdant::Event;
///
/// let ready = Rc::new(Event::new());
/// let waiters: Vec<_> = (0..3)
///     .map(|i| {
///         let ready = ready.clone();
///         verdant::spawn(move || {
///             ready.wait().unwrap();
///             i
///         })
///     })
///     .collect();
/// verdant::yield_now(); // let them all start waiting
/// ready.set();
/// let ids: Vec<i32> = verdant::joinall(waiters).into_iter().map(Result::unwrap).collect();
/// assert_eq!(ids, [0, 1, 2]);
/// ```
#[derive(Default)]
pub struct Event {
    flag: Cell<bool>,
    pub(super) waiters: WaitQueue,
}

impl Event {
    /// A new event, not set.
    pub const fn new() -> Event {
        Event {
            flag: Cell::new(false),
            waiters: WaitQueue::new(),
        }
    }

    /// Sets the flag and wakes every green thread waiting for it.
    pub fn set(&self) {
        self.flag.set(true);
        self.waiters.notify_all();
    }

    /// Resets the flag: later calls to [`wait`](Self::wait) block until the next `set`.
    pub fn clear(&self) {
        self.flag.set(false);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }

    /// Blocks the current green thread until the flag is set (returns at once if it is).
    ///
    /// Returns `Err(WaitError::TimedOut)` if a [`Timeout`](crate::Timeout) covering the
    /// call fires first, and `Err(WaitError::WouldBlockForever)` if nothing could ever set
    /// it (the main green thread waits and no other green thread, timer, descriptor or OS
    /// thread can run). A kill unwinds out of it. In every case the waiter is gone
    /// afterwards.
    ///
    /// Inlined into the caller down to the switch (the CPU's return predictor: see
    /// "Inlined into the caller" in the hub's module docs).
    #[inline]
    pub fn wait(&self) -> Result<(), WaitError> {
        self.wait_deadline(None).map(|_| ())
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`: returns whether the flag was
    /// set (gevent's `wait(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let event = verdant::Event::new();
    /// assert_eq!(event.wait_timeout(Duration::from_millis(1)), Ok(false));
    /// event.set();
    /// assert_eq!(event.wait_timeout(Duration::from_millis(1)), Ok(true));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, WaitError> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    // Inlined into `wait` (no deadline: the wait queue's inlined wait) and `wait_timeout`.
    #[inline(always)]
    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if self.flag.get() {
            return Ok(true);
        }
        // Being notified means a `set` happened while we waited.
        self.waiters.wait(deadline, || {})
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.flag.get())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}
