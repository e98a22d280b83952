//! The FIFO queue of parked green threads that the single-hub primitives ([`Event`],
//! [`Semaphore`], [`Mutex`], [`Condvar`]) are built on.
//!
//! A waiter is *notified* when it is taken off the queue by [`WaitQueue::notify_one`] or
//! [`WaitQueue::notify_all`]; for the primitives that hand something over (a permit, the
//! lock, a condition notification), "notified" means "it is yours now". The invariants:
//!
//! * a waiter is either queued or notified, never both, and is woken once when notified;
//! * [`WaitQueue::wait`] leaves nothing queued when it returns or unwinds (timeout, kill,
//!   `WouldBlockForever`);
//! * a notification is never lost: if the waiter unwinds (a kill) after it was notified,
//!   the `on_abandon` callback gives back what was handed over; if it returns, it reports
//!   `Ok(true)` ("notified wins" over a `Timeout` that fired at the same time; that
//!   `Timeout` still interrupts the next blocking call).
//!
//! ```text
//!   notify_one:  [w1, w2, w3]  ──pop w1, w1.notified = true, wake w1──▶  [w2, w3]
//!   w2 times out:              ──w2 removes itself──────────────────────▶ [w3]
//!   w1 is killed before it ran: on_abandon() ─▶ e.g. release() ─▶ notify w3
//! ```

use crate::hub::{self, TaskRef, WaitError};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

struct Waiter {
    task: TaskRef,
    notified: Cell<bool>,
}

#[derive(Default)]
pub(crate) struct WaitQueue {
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

impl WaitQueue {
    pub(crate) const fn new() -> WaitQueue {
        WaitQueue {
            waiters: RefCell::new(VecDeque::new()),
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
                w.notified.set(true);
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
            w.notified.set(true);
            w.task.wake();
        }
        n
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
        let waiter = Rc::new(Waiter {
            task: hub::current_task(),
            notified: Cell::new(false),
        });
        self.waiters.borrow_mut().push_back(waiter.clone());
        let mut registration = Registration {
            queue: self,
            waiter,
            on_abandon: Some(on_abandon),
        };
        loop {
            let parked = match deadline {
                Some(deadline) => hub::park_until(deadline),
                None => hub::park().map(|()| false),
            };
            if registration.waiter.notified.get() {
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
    waiter: Rc<Waiter>,
    /// Still `Some` if the wait did not return normally after a notification.
    on_abandon: Option<F>,
}

impl<F: FnOnce()> Drop for Registration<'_, F> {
    fn drop(&mut self) {
        if self.waiter.notified.get() {
            if let Some(give_back) = self.on_abandon.take() {
                give_back();
            }
        } else {
            self.queue
                .waiters
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.waiter));
        }
    }
}
