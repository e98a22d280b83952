//! Waking a parked green thread from whichever OS thread completes its wait.
//!
//! A primitive that is `Send + Sync` keeps its wait lists behind a `std::sync::Mutex`, so the
//! entries must be `Send`: a `TaskRef` (an `Rc`) cannot be stored there. A waiting green
//! thread therefore takes a wait slot in its hub (`hub::register_slot`) and stores the
//! slot's [`SharedWaker`] in the wait list:
//!
//! ```text
//!   SharedWaker (Send + Sync, lives in the wait list)
//!        │
//!        ├── woken from the same OS thread ──▶ the hub's slot table ──▶ schedule the task
//!        │                                     no lock, no syscall: the same-hub fast path
//!        └── woken from another OS thread ───▶ the hub's inbox + eventfd
//! ```
//!
//! `SharedWaker::wake_here_or_return` does the same-hub wake at once (scheduling a task
//! never switches, so a primitive may do it under its own lock) and otherwise hands the
//! waker back, for the primitive to `wake_remote` once its lock is released. Waking every
//! waiter of a list that stays in place (`close`) goes through `SharedWaker::wakeup`: the
//! [`Wakeup`]s are collected under the lock and performed once it is released.
//!
//! The [`Registration`] guard frees the slot, so the hub can again tell that nothing outside
//! this thread waits to wake the green thread. A primitive removes its wait-list entry
//! (under its lock) *before* dropping the registration. A waker taken out of the list
//! earlier and woken after the wait ended is recognised by the slot's generation and
//! does nothing.
//!
//! Because the slot is held for the whole wait, a green thread blocked on a cross-thread
//! primitive is never reported as `WouldBlockForever`: another OS thread may hold the
//! primitive (a clone in transit, or a `&` borrow in a scoped thread) and nothing can tell
//! that it never will.

pub(crate) use crate::hub::{SlotRegistration as Registration, SlotWaker as SharedWaker, Wakeup};

/// Registers the current green thread for a wait on a shared primitive.
#[inline]
pub(crate) fn register() -> (Registration, SharedWaker) {
    crate::hub::register_slot()
}

/// Whether a waiter should yield once, queued without a waker, before it takes a slot and
/// parks: another green thread of this hub is ready, and no `Timeout` has fired for the
/// current one.
#[inline]
pub(crate) fn may_yield_first() -> bool {
    Registration::may_yield_first()
}
