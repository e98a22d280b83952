//! [`Semaphore`] and [`BoundedSemaphore`]: counted permits for green threads (gevent's
//! `gevent.lock.Semaphore` and `BoundedSemaphore`).
//!
//! Permits are handed over in FIFO order: `release` with green threads waiting gives the
//! permit to the oldest waiter directly (the count stays 0), so a newcomer calling
//! `try_acquire` cannot barge ahead of it and no waiter starves. Invariant: while anyone
//! waits, no permit is available.
//!
//! ```text
//!   available: 0   waiters: [a, b]   release() ─▶ a gets the permit, woken   waiters: [b]
//!   b times out ─▶ b leaves the queue; the next release() makes a permit available
//!   a is killed before it ran ─▶ its permit is released again, to the next waiter
//! ```

use super::wait_queue::WaitQueue;
use crate::hub::WaitError;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// A counting semaphore for the green threads of one OS thread (gevent's `Semaphore`).
///
/// [`acquire`](Self::acquire) takes a permit, blocking the green thread while none is
/// available, and returns a [`SemaphorePermit`] that releases it when dropped.
/// [`release`](Self::release) adds a permit (beyond the initial count too: use
/// [`BoundedSemaphore`] to make that an error). Waiters are served in FIFO order.
///
/// Shared between green threads by reference, typically through an `Rc`.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use verdant::Semaphore;
///
/// // At most two of the five workers are inside at a time.
/// let sem = Rc::new(Semaphore::new(2));
/// let inside = Rc::new(Cell::new(0));
/// let most = Rc::new(Cell::new(0));
/// let workers: Vec<_> = (0..5)
///     .map(|_| {
///         let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
///         verdant::spawn(move || {
///             let _permit = sem.acquire().unwrap();
///             inside.set(inside.get() + 1);
///             most.set(most.get().max(inside.get()));
///             verdant::sleep(Duration::from_millis(1)).unwrap();
///             inside.set(inside.get() - 1);
///         })
///     })
///     .collect();
/// verdant::joinall(workers);
/// assert_eq!(most.get(), 2);
/// assert_eq!(sem.available_permits(), 2);
/// ```
pub struct Semaphore {
    permits: Cell<usize>,
    /// `Some(initial)` for a [`BoundedSemaphore`].
    bound: Option<usize>,
    pub(super) waiters: WaitQueue,
}

impl Semaphore {
    /// A semaphore with `permits` permits available.
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            permits: Cell::new(permits),
            bound: None,
            waiters: WaitQueue::new(),
        }
    }

    /// Takes a permit, blocking the current green thread until one is available.
    ///
    /// Returns `Err(WaitError::TimedOut)` if a [`Timeout`](crate::Timeout) covering the
    /// call fires first, `Err(WaitError::WouldBlockForever)` if no permit could ever be
    /// released; a kill unwinds out of it. An interrupted waiter leaves the queue and
    /// takes no permit.
    ///
    /// Inlined into the caller down to the switch (the CPU's return predictor: see
    /// "Inlined into the caller" in the hub's module docs).
    #[inline]
    pub fn acquire(&self) -> Result<SemaphorePermit<'_>, WaitError> {
        let acquired = self.acquire_deadline(None)?;
        debug_assert!(
            acquired,
            "a wait without deadline only returns Ok when notified"
        );
        Ok(self.permit())
    }

    /// Takes a permit if one is available now, without blocking.
    ///
    /// ```
    /// let sem = verdant::Semaphore::new(1);
    /// let permit = sem.try_acquire().expect("one permit");
    /// assert!(sem.try_acquire().is_none());
    /// drop(permit);
    /// assert!(sem.try_acquire().is_some());
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.take_available().then(|| self.permit())
    }

    /// Like [`acquire`](Self::acquire), giving up after `timeout`: `Ok(None)` if no permit
    /// became available in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let sem = verdant::Semaphore::new(0);
    /// assert!(sem.acquire_timeout(Duration::from_millis(1)).unwrap().is_none());
    /// sem.release();
    /// assert!(sem.acquire_timeout(Duration::from_millis(1)).unwrap().is_some());
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<SemaphorePermit<'_>>, WaitError> {
        let acquired = self.acquire_deadline(Some(Instant::now() + timeout))?;
        Ok(acquired.then(|| self.permit()))
    }

    /// Adds a permit: the oldest waiter, if any, gets it and is woken. Use it to give back
    /// a permit that was [`forget`](SemaphorePermit::forget)-ed, or to grow the semaphore.
    pub fn release(&self) {
        // Unbounded: cannot fail.
        let _ = self.release_bounded();
    }

    /// The number of permits available now (0 while green threads wait).
    pub fn available_permits(&self) -> usize {
        self.permits.get()
    }

    fn permit(&self) -> SemaphorePermit<'_> {
        SemaphorePermit { semaphore: self }
    }

    fn take_available(&self) -> bool {
        let n = self.permits.get();
        if n > 0 {
            self.permits.set(n - 1);
            true
        } else {
            false
        }
    }

    /// Returns whether a permit was taken (`false`: the deadline passed first). Inlined
    /// into `acquire` (no deadline: the wait queue's inlined wait) and `acquire_timeout`.
    #[inline(always)]
    fn acquire_deadline(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if self.take_available() {
            return Ok(true);
        }
        // Notified = the releaser handed its permit to us. If we unwind before we could
        // use it, give it back (to the next waiter, or to the count).
        self.waiters.wait(deadline, || {
            let _ = self.release_bounded();
        })
    }

    fn release_bounded(&self) -> Result<(), ReleaseError> {
        if self.waiters.notify_one() {
            return Ok(());
        }
        let n = self.permits.get();
        if self.bound.is_some_and(|bound| n >= bound) {
            return Err(ReleaseError { bound: n });
        }
        self.permits.set(n + 1);
        Ok(())
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.permits.get())
            .field("bound", &self.bound)
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`], released when dropped (also when
/// the green thread holding it unwinds, e.g. because it was killed).
#[must_use = "the permit is released at once if it is not kept"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken without a guard (gevent's manual `acquire()`): give it back
    /// later with [`Semaphore::release`] or [`BoundedSemaphore::release`].
    ///
    /// ```
    /// let sem = verdant::Semaphore::new(1);
    /// sem.acquire().unwrap().forget();
    /// assert_eq!(sem.available_permits(), 0);
    /// sem.release();
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        // For a bounded semaphore this fails only if the permit was already given back by
        // an explicit `release()`; then there is nothing left to give back.
        let _ = self.semaphore.release_bounded();
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

/// A [`Semaphore`] that refuses to be released beyond its initial count (gevent's
/// `BoundedSemaphore`, which raises `ValueError` there): an extra
/// [`release`](Self::release) is a [`ReleaseError`], which catches a permit being given
/// back twice.
///
/// ```
/// let sem = verdant::BoundedSemaphore::new(1);
/// sem.acquire().unwrap().forget();
/// assert!(sem.release().is_ok());
/// assert!(sem.release().is_err()); // one more than was ever taken
/// assert_eq!(sem.available_permits(), 1);
/// ```
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A semaphore with `permits` permits, never more.
    pub const fn new(permits: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            inner: Semaphore {
                permits: Cell::new(permits),
                bound: Some(permits),
                waiters: WaitQueue::new(),
            },
        }
    }

    /// See [`Semaphore::acquire`] (inlined into the caller as well).
    #[inline]
    pub fn acquire(&self) -> Result<SemaphorePermit<'_>, WaitError> {
        self.inner.acquire()
    }

    /// See [`Semaphore::try_acquire`].
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.try_acquire()
    }

    /// See [`Semaphore::acquire_timeout`].
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<SemaphorePermit<'_>>, WaitError> {
        self.inner.acquire_timeout(timeout)
    }

    /// Gives back a permit that was [`forget`](SemaphorePermit::forget)-ed: the oldest
    /// waiter, if any, gets it. Fails, changing nothing, if every permit is already
    /// available.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.inner.release_bounded()
    }

    /// The number of permits available now (0 while green threads wait).
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// The error of [`BoundedSemaphore::release`]: every permit was already available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseError {
    bound: usize,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BoundedSemaphore released too many times: all {} permits are already available",
            self.bound
        )
    }
}

impl std::error::Error for ReleaseError {}
