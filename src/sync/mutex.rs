//! [`Mutex`]: a lock for the green threads of one OS thread (gevent's `gevent.lock.Lock`,
//! holding its data like `std::sync::Mutex`).
//!
//! The lock is handed over in FIFO order: unlocking with green threads waiting gives the
//! lock to the oldest waiter directly (it stays locked), so a green thread that unlocks and
//! locks again in a loop cannot starve the others. Invariant: while anyone waits, the lock
//! is held.
//!
//! ```text
//!   owner: a   waiters: [b, c]   a unlocks ─▶ owner: b (woken)   waiters: [c]
//!   c times out ─▶ c leaves the queue            b unlocks ─▶ unlocked
//!   b is killed before it ran ─▶ b's ownership passes on as if b had unlocked
//! ```
//!
//! The data lives in a `RefCell` that only the owner borrows, so no `unsafe` is needed: the
//! borrow taken by [`MutexGuard`] can never conflict.
//!
//! Not poisoned by panics or kills: see [`Mutex`].

use super::wait_queue::WaitQueue;
use crate::hub::WaitError;
use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

/// A mutual-exclusion lock for green threads, protecting a `T` (a green `std::sync::Mutex`;
/// gevent's `Lock`).
///
/// [`lock`](Self::lock) blocks the green thread, not the OS thread, until the lock is free;
/// waiters get it in FIFO order. The guard may be held across blocking calls (sleeps,
/// socket I/O): that is what a green lock is for. Locking it again from the green thread
/// that holds it waits forever (reported as `WouldBlockForever` if nothing else can run).
///
/// Shared between green threads by reference, typically through an `Rc`. It is `!Send`:
/// green threads never leave their OS thread.
///
/// # No poisoning
/// A green thread that panics, or is killed (which unwinds it), while holding the guard
/// unlocks the mutex like any other guard drop; unlike `std::sync::Mutex`, it is not
/// poisoned. Kills are a normal way to stop green threads (gevent's `Greenlet.kill`), and
/// poisoning would turn each of them into an error for every other user of the lock. Code
/// whose invariants a panic can break half-way must restore them itself (a drop guard).
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use verdant::Mutex;
///
/// let log = Rc::new(Mutex::new(Vec::new()));
/// let writers: Vec<_> = ["a", "b"]
///     .into_iter()
///     .map(|name| {
///         let log = log.clone();
///         verdant::spawn(move || {
///             let mut log = log.lock().unwrap();
///             log.push(format!("{name} start"));
///             verdant::sleep(Duration::from_millis(1)).unwrap(); // others run meanwhile
///             log.push(format!("{name} end"));
///         })
///     })
///     .collect();
/// verdant::joinall(writers);
/// assert_eq!(*log.lock().unwrap(), ["a start", "a end", "b start", "b end"]);
/// ```
pub struct Mutex<T: ?Sized> {
    locked: Cell<bool>,
    pub(super) waiters: WaitQueue,
    data: RefCell<T>,
}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            locked: Cell::new(false),
            waiters: WaitQueue::new(),
            data: RefCell::new(value),
        }
    }

    /// Consumes the mutex and returns its data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, blocking the current green thread until it is free.
    ///
    /// Returns `Err(WaitError::TimedOut)` if a [`Timeout`](crate::Timeout) covering the
    /// call fires first, `Err(WaitError::WouldBlockForever)` if the lock could never be
    /// released; a kill unwinds out of it. An interrupted waiter leaves the queue and never
    /// gets the lock.
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, WaitError> {
        let locked = self.lock_deadline(None)?;
        debug_assert!(
            locked,
            "a wait without deadline only returns Ok when notified"
        );
        Ok(self.guard())
    }

    /// Locks the mutex if it is free now, without blocking.
    ///
    /// ```
    /// let m = verdant::Mutex::new(1);
    /// let guard = m.try_lock().expect("free");
    /// assert!(m.try_lock().is_none());
    /// drop(guard);
    /// assert_eq!(*m.try_lock().unwrap(), 1);
    /// ```
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.locked.replace(true) {
            None
        } else {
            Some(self.guard())
        }
    }

    /// Like [`lock`](Self::lock), giving up after `timeout`: `Ok(None)` if the lock did not
    /// become free in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = verdant::Mutex::new(());
    /// let held = m.lock().unwrap();
    /// assert!(m.lock_timeout(Duration::from_millis(1)).unwrap().is_none());
    /// drop(held);
    /// assert!(m.lock_timeout(Duration::from_millis(1)).unwrap().is_some());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<MutexGuard<'_, T>>, WaitError> {
        let locked = self.lock_deadline(Some(Instant::now() + timeout))?;
        Ok(locked.then(|| self.guard()))
    }

    /// Whether some green thread holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.locked.get()
    }

    /// A mutable reference to the data; no locking is needed, the borrow proves that no
    /// guard exists.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Returns whether the lock was taken (`false`: the deadline passed first).
    fn lock_deadline(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if !self.locked.replace(true) {
            return Ok(true);
        }
        // Notified = the owner handed the lock to us. If we unwind before we could use it,
        // pass it on as if we had unlocked.
        self.waiters.wait(deadline, || self.unlock())
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            mutex: self,
            data: self.data.borrow_mut(),
        }
    }

    fn unlock(&self) {
        if !self.waiters.notify_one() {
            self.locked.set(false);
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.field("waiters", &self.waiters.len()).finish()
    }
}

/// Access to the data of a locked [`Mutex`]; dropping it unlocks (handing the lock to the
/// oldest waiter, if any).
#[must_use = "the mutex unlocks at once if the guard is not kept"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(super) mutex: &'a Mutex<T>,
    data: RefMut<'a, T>,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // The next owner is only woken here; it runs after this guard (and its borrow of
        // the data) is gone.
        self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.data, f)
    }
}
