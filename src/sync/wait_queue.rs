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
//!
//! ## Inlined into the caller, for the return predictor
//! A green thread that resumes after a switch finds the CPU's return-address predictor
//! filled by the other context, so every `ret` it runs before its next switch, out of the
//! frames it entered before the switch, is mispredicted (see the hub's module docs). So a
//! wait without a deadline is inlined into the primitive's wait, down to the switch
//! (`hub::park_inline`), and [`Event::wait`] and [`Semaphore::acquire`] into the user's
//! code: a ping-pong over them (`examples/hub_counts event|semaphore`) then runs no `ret`
//! between a resume and the caller's own code (an `Event` hop 68 -> 51 ns, a `Semaphore`
//! hop 60 -> 44 ns, some 30 instructions and 600 bytes more per call site; inlined into
//! the primitive's wait only, a `Semaphore` hop took 92% of the time). `Mutex::lock`
//! is not inlined into the caller (the inlined park would sit at every call site of a
//! lock that is mostly free), nor is `Condvar::wait` (it locks again after its wait). Queueing the waiter is a call before the switch (its `ret` is predicted); what
//! follows a park that did not notify the waiter (a spurious wake-up, an error), a wait
//! with a deadline and the abandon of a wait are out of line.

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

    /// Takes every waiter off the queue and wakes them in FIFO order. Returns nothing: no
    /// caller used a count, which cost a counter kept across the loop (and, as the code
    /// around it changed, an increment per waiter or not).
    ///
    /// Those queued when it is called, one at a time, each woken outside the borrow (a
    /// wake-up, or the drop of a task record, may come back to this queue); those that
    /// queue meanwhile have larger ids and stay. The buffer stays too, with its capacity:
    /// taking it whole would free it, and the next wait would allocate it again (a malloc,
    /// a free and a grow per `Event` hop, some 140 instructions of 630).
    pub(crate) fn notify_all(&self) {
        let last = self.next_id.get();
        loop {
            let first = {
                let mut waiters = self.waiters.borrow_mut();
                match waiters.front() {
                    Some(w) if w.id <= last => waiters.pop_front(),
                    _ => None,
                }
            };
            let Some(w) = first else {
                return;
            };
            w.task.wake();
        }
    }

    /// Whether waiter `id` was notified (is no longer queued). The queue is sorted by id:
    /// usually it is empty, or the others queued after it (a notification takes the
    /// oldest), and there is nothing to search.
    #[inline]
    fn notified(&self, id: u64) -> bool {
        let waiters = self.waiters.borrow();
        match waiters.front() {
            Some(first) if first.id <= id => Self::position_in(&waiters, id).is_err(),
            _ => true,
        }
    }

    /// Where waiter `id` is in the queue; `Err` once it was notified.
    fn position(&self, id: u64) -> Result<usize, usize> {
        Self::position_in(&self.waiters.borrow(), id)
    }

    fn position_in(waiters: &VecDeque<Waiter>, id: u64) -> Result<usize, usize> {
        waiters.binary_search_by_key(&id, |w| w.id)
    }

    /// Queues the current green thread and parks it until it is notified (`Ok(true)`),
    /// `deadline` passes (`Ok(false)`), or the wait is interrupted (`Err`: a `Timeout`
    /// fired, or nothing could ever notify it). A kill unwinds out of it.
    ///
    /// Whatever happens, the waiter is no longer queued afterwards. If it unwinds after it
    /// was notified, `on_abandon` runs (during the unwind) to pass on what was handed over.
    ///
    /// Without a deadline, inlined into the caller down to the switch: see "Inlined into
    /// the caller" in the module docs.
    #[inline(always)]
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
        on_abandon: impl FnOnce(),
    ) -> Result<bool, WaitError> {
        if deadline.is_some() {
            return self.wait_out_of_line(deadline, on_abandon);
        }
        let id = self.enqueue_current();
        let registration = Registration {
            queue: self,
            id,
            on_abandon: Some(on_abandon),
        };
        let parked = hub::park_inline();
        if self.notified(id) {
            let mut registration = registration;
            registration.on_abandon = None;
            return Ok(true);
        }
        Self::wait_on(registration, deadline, parked.map(|()| false))
    }

    /// A wait with a deadline: out of line.
    #[inline(never)]
    fn wait_out_of_line(
        &self,
        deadline: Option<Instant>,
        on_abandon: impl FnOnce(),
    ) -> Result<bool, WaitError> {
        let id = self.enqueue_current();
        let registration = Registration {
            queue: self,
            id,
            on_abandon: Some(on_abandon),
        };
        let parked = Self::park(deadline);
        Self::wait_on(registration, deadline, parked)
    }

    /// Queues the current green thread; returns its waiter id. Out of line: it returns
    /// before the switch.
    #[inline(never)]
    fn enqueue_current(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.waiters.borrow_mut().push_back(Waiter {
            id,
            task: hub::current_task(),
        });
        id
    }

    fn park(deadline: Option<Instant>) -> Result<bool, WaitError> {
        match deadline {
            Some(deadline) => hub::park_until(deadline),
            None => hub::park().map(|()| false),
        }
    }

    /// The rest of a wait once it parked (`parked`: how the park ended), out of line: it
    /// ends the wait, or parks again if the waiter is still queued.
    #[inline(never)]
    fn wait_on<F: FnOnce()>(
        mut registration: Registration<'_, F>,
        deadline: Option<Instant>,
        mut parked: Result<bool, WaitError>,
    ) -> Result<bool, WaitError> {
        loop {
            if registration.queue.notified(registration.id) {
                registration.on_abandon = None;
                return Ok(true);
            }
            match parked {
                Ok(true) => return Ok(false),
                // A spurious wake-up: still queued, park again.
                Ok(false) => {}
                Err(e) => return Err(e),
            }
            parked = Self::park(deadline);
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
    #[inline]
    fn drop(&mut self) {
        // Returned after a notification (the usual case): already off the queue.
        if let Some(give_back) = self.on_abandon.take() {
            self.queue.abandon(self.id, give_back);
        }
    }
}

impl WaitQueue {
    /// The end of a wait that did not return after a notification (a timeout, an error,
    /// an unwind): waiter `id` leaves the queue, or, if it was notified, `give_back` passes
    /// on what was handed over.
    #[cold]
    #[inline(never)]
    fn abandon(&self, id: u64, give_back: impl FnOnce()) {
        match self.position(id) {
            Ok(pos) => {
                let removed = self.waiters.borrow_mut().remove(pos);
                // The task record is released outside the borrow.
                drop(removed);
            }
            // Notified, but not returning: pass on what was handed over.
            Err(_) => give_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::{Event, Semaphore};
    use std::rc::Rc;

    /// `set` wakes each waiter once, in the order they came, round after round: the wait
    /// queue's buffer is reused (`notify_all` drains it in place), and the waits that follow a
    /// `notify_all` queue and are served like the first ones.
    #[test]
    fn an_event_wakes_each_waiter_once_per_set_in_order_round_after_round() {
        let event = Rc::new(Event::new());
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let (event, log) = (event.clone(), log.clone());
                crate::spawn(move || {
                    for round in 0..3 {
                        event.wait().unwrap();
                        log.borrow_mut().push((round, i));
                    }
                })
            })
            .collect();
        for _ in 0..3 {
            // The waiters (re)queue; then one `set` serves all of them, once.
            crate::yield_now();
            assert_eq!(event.waiters.len(), 3);
            event.set();
            event.clear();
            assert_eq!(event.waiters.len(), 0);
        }
        for w in waiters {
            w.join().unwrap();
        }
        let expected: Vec<_> = (0..3).flat_map(|r| (0..3).map(move |i| (r, i))).collect();
        assert_eq!(*log.borrow(), expected);
    }

    /// A waiter woken with nothing handed to it (a spurious wake-up, here from
    /// `TaskRef::wake`) while others are queued before and after it finds its entry still
    /// queued, waits on, and is served in its turn.
    #[test]
    fn a_spuriously_woken_waiter_in_the_middle_of_a_wait_queue_waits_on_in_its_place() {
        let sem = Rc::new(Semaphore::new(0));
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let tasks = Rc::new(std::cell::RefCell::new(Vec::new()));
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let (sem, order, tasks) = (sem.clone(), order.clone(), tasks.clone());
                crate::spawn(move || {
                    tasks.borrow_mut().push(crate::hub::current_task());
                    sem.acquire().unwrap().forget();
                    order.borrow_mut().push(i);
                })
            })
            .collect();
        crate::yield_now();
        assert_eq!(sem.waiters.len(), 3);
        tasks.borrow()[1].wake();
        crate::yield_now();
        assert_eq!(sem.waiters.len(), 3);
        assert!(order.borrow().is_empty());
        // The first waiter served; the middle one, woken again, still waits behind it.
        sem.release();
        tasks.borrow()[2].wake();
        crate::yield_now();
        assert_eq!(*order.borrow(), [0]);
        assert_eq!(sem.waiters.len(), 2);
        sem.release();
        sem.release();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*order.borrow(), [0, 1, 2]);
        assert_eq!(sem.waiters.len(), 0);
    }
}
