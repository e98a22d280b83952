//! Wait slots: a cheap, `Send` way to wake a green thread for the length of one wait.
//!
//! A primitive that is `Send + Sync` keeps its wait lists behind a `std::sync::Mutex`, so
//! what it stores there must be `Send`: a [`TaskRef`] (an `Rc`) cannot be. A waiting green
//! thread instead takes a *slot* in its hub's slot table and stores a [`SlotWaker`] (the
//! hub's inbox, the slot's index and its generation) in the wait list:
//!
//! ```text
//!   hub.slots: [ (gen, Some(task)) | (gen, None) | ... ]    free list: [1, ...]
//!                   ▲
//!   SlotWaker { inbox, slot: 0, gen }     (Send + Sync, lives in the wait list)
//!        ├── woken on the hub's own thread ──▶ slots[0] ──▶ TaskRef  (no lock, no syscall)
//!        └── woken from another OS thread ───▶ inbox: WakeSlot(0, gen) + eventfd; the hub
//!                                              resolves the slot when it drains the inbox
//! ```
//!
//! Taking and freeing a slot is a push/pop on a free list threaded through the table: no
//! allocation once the table has grown to the number of simultaneous waits, no hashing. The generation is bumped when a
//! slot is freed, so a wake-up that arrives after its wait ended (a stale [`SlotWaker`]
//! taken out of a wait list earlier, or a cross-thread message still in the inbox) finds a
//! different generation and is dropped instead of waking a later wait.
//!
//! While a slot is taken, the hub does not consider itself deadlocked: another OS thread
//! may hold the primitive and wake the slot, and nothing can tell that it never will (the
//! same rule as an outstanding `RemoteWaker`).

use super::{with_hub, Inbox, RemoteMsg, TaskRef, HUB};
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

/// One entry of a hub's slot table.
pub(super) struct Slot {
    /// Bumped each time the slot is freed.
    gen: u32,
    /// While free: the next free slot ([`NO_SLOT`] for none).
    next_free: u32,
    task: Option<TaskRef>,
}

/// The end of the free list.
const NO_SLOT: u32 = u32::MAX;

/// The slot table of one hub. The free slots form a list threaded through the table
/// (most recently freed first), so taking and freeing one touches only that slot.
pub(super) struct Slots {
    slots: Vec<Slot>,
    /// The first free slot, or [`NO_SLOT`].
    free: u32,
    /// Slots taken now.
    pub(super) in_use: usize,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots {
            slots: Vec::new(),
            free: NO_SLOT,
            in_use: 0,
        }
    }
}

impl Slots {
    /// The task waiting in `slot`, if that wait (`gen`) is still going on.
    #[inline]
    pub(super) fn task(&self, slot: u32, gen: u32) -> Option<&TaskRef> {
        let s = self.slots.get(slot as usize)?;
        if s.gen == gen {
            s.task.as_ref()
        } else {
            None
        }
    }

    #[inline]
    fn take(&mut self, task: TaskRef) -> (u32, u32) {
        self.in_use += 1;
        let i = self.free;
        // `NO_SLOT` is out of range: the table never has 2^32 - 1 slots (see below).
        if let Some(s) = self.slots.get_mut(i as usize) {
            self.free = s.next_free;
            s.task = Some(task);
            return (i, s.gen);
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i != NO_SLOT)
            .expect("fewer than 2^32 - 1 waits at once");
        self.slots.push(Slot {
            gen: 0,
            next_free: NO_SLOT,
            task: Some(task),
        });
        (i, 0)
    }

    #[inline]
    fn release(&mut self, slot: u32) -> Option<TaskRef> {
        let s = &mut self.slots[slot as usize];
        let task = s.task.take();
        if task.is_some() {
            s.gen = s.gen.wrapping_add(1);
            s.next_free = self.free;
            self.free = slot;
            self.in_use -= 1;
        }
        task
    }
}

/// A `Send + Sync` way to wake the green thread of one wait, stored in a wait list.
#[derive(Clone)]
pub(crate) struct SlotWaker {
    inbox: Arc<Inbox>,
    slot: u32,
    gen: u32,
}

impl fmt::Debug for SlotWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotWaker")
            .field("slot", &self.slot)
            .field("gen", &self.gen)
            .finish()
    }
}

/// What to wake once the primitive's lock is released (from [`SlotWaker::wakeup`], for
/// waking a whole list that stays in place; a waker taken out of its list is woken with
/// [`SlotWaker::wake_here_or_return`] instead).
pub(crate) enum Wakeup {
    Local(TaskRef),
    Remote(SlotWaker),
    /// The wait is already over (the slot was freed or reused): nothing to wake.
    Stale,
}

impl Wakeup {
    pub(crate) fn wake(self) {
        match self {
            Wakeup::Local(task) => task.wake(),
            Wakeup::Remote(w) => w.inbox.post(RemoteMsg::WakeSlot(w.slot, w.gen)),
            Wakeup::Stale => {}
        }
    }
}

impl SlotWaker {
    /// The wake-up to perform after the lock protecting this waker is released: the task
    /// itself on the hub's own thread (nothing, if the wait is over), a message otherwise.
    pub(crate) fn wakeup(&self) -> Wakeup {
        let local = HUB.with(|hub| match hub {
            Some(hub) if Arc::ptr_eq(&hub.inbox, &self.inbox) => Some(
                hub.slots
                    .borrow()
                    .task(self.slot, self.gen)
                    .cloned()
                    .map_or(Wakeup::Stale, Wakeup::Local),
            ),
            _ => None,
        });
        match local {
            Some(local) => local,
            None => Wakeup::Remote(self.clone()),
        }
    }
}

/// The waiting side's guard: frees the slot on drop. Stays on the waiting green thread
/// (`!Send`).
#[derive(Debug)]
pub(crate) struct SlotRegistration {
    slot: u32,
    _not_send: PhantomData<Rc<()>>,
}

/// Takes a slot for the current green thread, for one wait on a shared primitive.
#[inline]
pub(crate) fn register_slot() -> (SlotRegistration, SlotWaker) {
    with_hub(|hub| {
        let (slot, gen) = hub.slots.borrow_mut().take(hub.current_task());
        (
            SlotRegistration {
                slot,
                _not_send: PhantomData,
            },
            SlotWaker {
                inbox: hub.inbox.clone(),
                slot,
                gen,
            },
        )
    })
}

impl SlotRegistration {
    /// Whether a waiter may yield once before it parks: another green thread of this OS
    /// thread's hub is ready to run (so that a `yield_now` would run it rather than come
    /// straight back), and no [`Timeout`](crate::Timeout) has fired for the current one (a
    /// fired one interrupts the wait at once, rather than after a turn in which the waiter
    /// might still be served).
    #[inline]
    pub(crate) fn may_yield_first() -> bool {
        with_hub(|hub| {
            if hub.ready.is_empty() {
                return false;
            }
            // A look at the current record without cloning it (as `current_task`); one
            // that is not the running green thread's (an ad hoc one not recorded yet)
            // parks at once.
            let current = hub.current.take();
            let may = current
                .as_ref()
                .is_some_and(|t| t.greenlet.is_current() && t.expired.get() == 0);
            hub.current.set(current);
            may
        })
    }
}

impl Drop for SlotRegistration {
    #[inline]
    fn drop(&mut self) {
        // No hub (`None`) once the thread tears its locals down: a green thread released
        // then may drop this late.
        let released = HUB.with(|hub| {
            let mut slots = hub?.slots.try_borrow_mut().ok()?;
            slots.release(self.slot)
        });
        // The task record is released outside the borrows.
        drop(released);
    }
}

impl SlotWaker {
    /// Wakes the waiting green thread at once if it lives on this OS thread's hub (it is
    /// only scheduled: nothing switches, so a primitive may call this under its lock), and
    /// drops the waker; otherwise hands the waker back, to [`wake_remote`](Self::wake_remote)
    /// once the lock is released. A wait that is over (a stale generation) is not woken.
    ///
    /// The same-hub case is one thread-local access: no clone of the waker, no [`Wakeup`]
    /// built, no second look-up of the hub to schedule the task.
    // Always inline: it is on every hop's path, and a call costs more than its body.
    #[inline(always)]
    pub(crate) fn wake_here_or_return(self) -> Option<SlotWaker> {
        let here = HUB.with(|hub| match hub {
            Some(hub) if Arc::ptr_eq(&hub.inbox, &self.inbox) => {
                hub.wake_slot(self.slot, self.gen);
                true
            }
            _ => false,
        });
        if here {
            None
        } else {
            Some(self)
        }
    }

    /// Wakes the waiter through its hub's inbox (from any OS thread); a wait that is over
    /// by the time the hub reads the message is not woken.
    #[cold]
    #[inline(never)]
    pub(crate) fn wake_remote(self) {
        self.inbox.post(RemoteMsg::WakeSlot(self.slot, self.gen));
    }
}

impl super::Hub {
    /// Schedules the task waiting in `slot` if that wait (`gen`) is still going on and it
    /// is not scheduled (or finished) already. The record is cloned only when it is
    /// actually queued.
    #[inline(always)]
    fn wake_slot(&self, slot: u32, gen: u32) {
        let slots = self.slots.borrow();
        let Some(task) = slots.task(slot, gen) else {
            return;
        };
        if task.queued.get() || task.is_finished() {
            return;
        }
        let task = task.clone();
        drop(slots);
        self.schedule(task);
    }
}
