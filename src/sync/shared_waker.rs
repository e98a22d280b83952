//! Waking a parked green thread from whichever OS thread completes its wait.
//!
//! A primitive that is `Send + Sync` keeps its wait lists behind a `std::sync::Mutex`, so the
//! entries must be `Send`: a [`TaskRef`] (an `Rc`) cannot be stored there. A waiting green
//! thread therefore registers two ways of being woken and stores a [`SharedWaker`] in the
//! wait list:
//!
//! ```text
//!   SharedWaker { thread, slot, remote }           (Send + Sync, lives in the wait list)
//!        │
//!        ├── woken from the same OS thread ──▶ SLOTS[slot] (thread-local) ──▶ TaskRef::wake
//!        │                                     no lock, no syscall: the same-hub fast path
//!        └── woken from another OS thread ───▶ RemoteWaker::wake (the hub's inbox + eventfd)
//! ```
//!
//! The [`Registration`] guard owns both: dropping it frees the slot and the `RemoteWaker`, so
//! the hub can again tell that nothing outside this thread waits to wake the green thread.
//! A primitive removes its wait-list entry (under its lock) *before* dropping the
//! registration, so an entry never refers to a freed slot; a stale [`Wakeup`] taken out of
//! the list earlier can at worst wake some task spuriously, which every waiter tolerates.
//!
//! Because the `RemoteWaker` is held for the whole wait, a green thread blocked on a
//! cross-thread primitive is never reported as `WouldBlockForever`: another OS thread may
//! hold the primitive (a clone in transit, or a `&` borrow in a scoped thread) and nothing
//! can tell that it never will.

use crate::hub::{self, RemoteWaker, TaskRef};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_THREAD_KEY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Identifies this OS thread for the lifetime of the process (never reused, unlike
    /// `ThreadId`-free tricks such as a thread-local's address).
    static THREAD_KEY: u64 = NEXT_THREAD_KEY.fetch_add(1, Ordering::Relaxed);
    /// The green threads of this OS thread that wait on a shared primitive.
    static SLOTS: RefCell<Slots> = const { RefCell::new(Slots { tasks: Vec::new(), free: Vec::new() }) };
}

struct Slots {
    tasks: Vec<Option<TaskRef>>,
    free: Vec<usize>,
}

fn thread_key() -> u64 {
    THREAD_KEY.with(|k| *k)
}

/// A `Send + Sync` way to wake one waiting green thread, stored in a wait list.
#[derive(Debug)]
pub(crate) struct SharedWaker {
    thread: u64,
    slot: usize,
    remote: RemoteWaker,
}

/// What to wake once the primitive's lock is released.
pub(crate) enum Wakeup {
    Local(TaskRef),
    Remote(RemoteWaker),
}

impl Wakeup {
    pub(crate) fn wake(self) {
        match self {
            Wakeup::Local(task) => task.wake(),
            Wakeup::Remote(remote) => remote.wake(),
        }
    }
}

impl SharedWaker {
    /// The wake-up to perform after the lock protecting this waker is released.
    pub(crate) fn wakeup(&self) -> Wakeup {
        if self.thread == thread_key() {
            let task = SLOTS.with(|s| s.borrow().tasks.get(self.slot).cloned().flatten());
            match task {
                Some(task) => Wakeup::Local(task),
                None => Wakeup::Remote(self.remote.clone()),
            }
        } else {
            Wakeup::Remote(self.remote.clone())
        }
    }
}

/// The waiting side's guard: frees the thread-local slot and the remote waker on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
}

/// Registers the current green thread for a wait on a shared primitive.
pub(crate) fn register() -> (Registration, SharedWaker) {
    let task = hub::current_task();
    let remote = hub::remote_waker();
    let slot = SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        match s.free.pop() {
            Some(i) => {
                s.tasks[i] = Some(task);
                i
            }
            None => {
                s.tasks.push(Some(task));
                s.tasks.len() - 1
            }
        }
    });
    (
        Registration { slot },
        SharedWaker {
            thread: thread_key(),
            slot,
            remote,
        },
    )
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `try_with`: a green thread released during thread teardown may drop this late.
        let _ = SLOTS.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.tasks[self.slot] = None;
                s.free.push(self.slot);
            }
        });
    }
}
