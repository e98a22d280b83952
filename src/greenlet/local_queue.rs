//! [`LocalQueue`]: a FIFO with no borrow flag, for the hub's run queue.
//!
//! The hub pushes and pops on every hand-off between green threads; a `RefCell<VecDeque>`
//! costs a flag check and two flag writes per access, and a borrow held across a switch
//! would be a bug waiting to happen. This queue gives out no references at all: values go
//! in and come out by move, so no access can overlap another.

use std::cell::UnsafeCell;
use std::collections::VecDeque;

/// A single-threaded FIFO accessed through `&self`, by move only (no references into it
/// are ever handed out, so no borrow flag is needed).
pub(crate) struct LocalQueue<T> {
    items: UnsafeCell<VecDeque<T>>,
}

impl<T> Default for LocalQueue<T> {
    fn default() -> Self {
        LocalQueue {
            items: UnsafeCell::new(VecDeque::new()),
        }
    }
}

impl<T> LocalQueue<T> {
    /// Runs `f` on the deque. Every caller below is a single `VecDeque` call that runs no
    /// code of ours and drops no `T` (values only move in or out), so it cannot re-enter.
    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<T>) -> R) -> R {
        // SAFETY: `LocalQueue` is `!Sync` (UnsafeCell), so only this thread gets here; the
        // callers (private to this module) neither drop a `T` nor call back into anything
        // that could reach this queue while the `&mut` lives.
        f(unsafe { &mut *self.items.get() })
    }

    /// Appends `value` at the back.
    #[inline]
    pub(crate) fn push_back(&self, value: T) {
        self.with(|q| q.push_back(value))
    }

    /// Puts `value` back at the front (it is the next to come out).
    #[inline]
    pub(crate) fn push_front(&self, value: T) {
        self.with(|q| q.push_front(value))
    }

    /// Takes the value at the front.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<T> {
        self.with(VecDeque::pop_front)
    }

    /// How many values are queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.with(|q| q.len())
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.with(|q| q.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::LocalQueue;

    #[test]
    fn first_in_first_out_with_push_front_for_the_next_one() {
        let q = LocalQueue::default();
        assert!(q.is_empty());
        for i in 0..100 {
            q.push_back(i);
        }
        assert_eq!(q.pop_front(), Some(0));
        q.push_front(-1);
        assert_eq!(q.len(), 100);
        assert_eq!(q.pop_front(), Some(-1));
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(rest, (1..100).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn dropping_the_queue_drops_what_is_left() {
        let item = std::rc::Rc::new(());
        let q = LocalQueue::default();
        q.push_back(item.clone());
        q.push_back(item.clone());
        drop(q);
        assert_eq!(std::rc::Rc::strong_count(&item), 1);
    }
}
