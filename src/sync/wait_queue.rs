//! The FIFO queue of parked green threads that the single-hub primitives ([`Event`],
//! [`Semaphore`], [`Mutex`], [`Condvar`]) are built on.
//!
//! A waiter is *notified* when it is taken off the queue by [`WaitQueue::notify_one`] or
//! [`WaitQueue::notify_all`]; for the primitives that hand something over (a permit, the
//! lock, a condition notification), "notified" means "it is yours now". The invariants:
//!
//! * a waiter is either queued or notified (taken off the queue), never both, and is woken
//!   once when notified;
//! * [`WaitQueue::wait`] leaves nothing queued when it returns or unwinds (timeout, kill,
//!   `WouldBlockForever`);
//! * a notification is never lost: if the waiter unwinds (a kill) after it was notified,
//!   the `on_abandon` callback gives back what was handed over; if it returns, it reports
//!   `Ok(true)` ("notified wins" over a `Timeout` that fired at the same time; that
//!   `Timeout` still interrupts the next blocking call).
//!
//! ```text
//!   notify_one:  [w1, w2, w3]  ──pop w1 (now notified), wake w1─────────▶  [w2, w3]
//!   w2 times out:              ──w2 removes itself──────────────────────▶ [w3]
//!   w1 is killed before it ran: on_abandon() ─▶ e.g. release() ─▶ notify w3
//! ```

use crate::hub::{self, TaskRef, WaitError};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Instant;

/// A queued waiter. Notifying one takes it off the queue, so a waiter that is no longer
/// queued has been notified (only the waiter itself removes its entry otherwise). Ids
/// grow with each wait, so the queue is sorted by id and a waiter finds its entry by
/// binary search; nothing is allocated per wait once the queue has grown.
struct Waiter {
    id: u64,
    task: TaskRef,
}

#[derive(Default)]
pub(crate) struct WaitQueue {
    waiters: RefCell<VecDeque<Waiter>>,
    next_id: Cell<u64>,
}

impl WaitQueue {
    pub(crate) const fn new() -> WaitQueue {
        WaitQueue {
            waiters: RefCell::new(VecDeque::new()),
            next_id: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Takes the oldest waiter off the queue and wakes it; returns whether there was one.
    pub(crate) fn notify_one(&self) -> bool {
        let first = self.waiters.borrow_mut().pop_front();
        match first {
            Some(w) => {
                w.task.wake();
                true
            }
            None => false,
        }
    }

    /// Takes every waiter off the queue and wakes them in FIFO order; returns how many.
    pub(crate) fn notify_all(&self) -> usize {
        let all = std::mem::take(&mut *self.waiters.borrow_mut());
        let n = all.len();
        for w in all {
            w.task.wake();
        }
        n
    }

    /// Where waiter `id` is in the queue; `Err` once it was notified.
    fn position(&self, id: u64) -> Result<usize, usize> {
        self.waiters.borrow().binary_search_by_key(&id, |w| w.id)
    }

    /// Queues the current green thread and parks it until it is notified (`Ok(true)`),
    /// `deadline` passes (`Ok(false)`), or the wait is interrupted (`Err`: a `Timeout`
    /// fired, or nothing could ever notify it). A kill unwinds out of it.
    ///
    /// Whatever happens, the waiter is no longer queued afterwards. If it unwinds after it
    /// was notified, `on_abandon` runs (during the unwind) to pass on what was handed over.
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
        on_abandon: impl FnOnce(),
    ) -> Result<bool, WaitError> {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.waiters.borrow_mut().push_back(Waiter {
            id,
            task: hub::current_task(),
        });
        let mut registration = Registration {
            queue: self,
            id,
            on_abandon: Some(on_abandon),
        };
        loop {
            let parked = match deadline {
                Some(deadline) => hub::park_until(deadline),
                None => hub::park().map(|()| false),
            };
            if self.position(id).is_err() {
                registration.on_abandon = None;
                return Ok(true);
            }
            match parked {
                Ok(true) => return Ok(false),
                // A spurious wake-up: still queued, park again.
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Removes a waiter from its queue when the wait ends, however it ends.
struct Registration<'a, F: FnOnce()> {
    queue: &'a WaitQueue,
    id: u64,
    /// Still `Some` if the wait did not return normally after a notification.
    on_abandon: Option<F>,
}

impl<F: FnOnce()> Drop for Registration<'_, F> {
    fn drop(&mut self) {
        let Some(give_back) = self.on_abandon.take() else {
            // Returned after a notification: already off the queue.
            return;
        };
        match self.queue.position(self.id) {
            Ok(pos) => {
                let removed = self.queue.waiters.borrow_mut().remove(pos);
                // The task record is released outside the borrow.
                drop(removed);
            }
            // Notified, but not returning: pass on what was handed over.
            Err(_) => give_back(),
        }
    }
}
