//! [`OnDrop`]: a value with an action that runs when it is dropped, unless a consuming
//! method takes the value out whole first ([`OnDrop::into_inner`]). The hub's
//! `JoinHandle` is one: its drop detaches the green thread (or drops an untaken result),
//! while its `join` moves the record it holds out to the spare records with no clone to
//! make and no drop to run. Here rather than in the hub because taking a field out of a
//! value whose type has a destructor needs `unsafe`; the API is safe whatever the callers
//! do.

use std::mem::ManuallyDrop;
use std::ops::Deref;

/// What an [`OnDrop`] runs on its value when it is dropped.
pub(crate) trait DropAction {
    /// Runs just before the value itself is dropped.
    fn on_drop(&mut self);
}

/// `T`, whose [`DropAction`] runs when this is dropped (not when it is taken out by
/// [`into_inner`](Self::into_inner)).
pub(crate) struct OnDrop<T: DropAction>(ManuallyDrop<T>);

impl<T: DropAction> OnDrop<T> {
    #[inline(always)]
    pub(crate) fn new(value: T) -> OnDrop<T> {
        OnDrop(ManuallyDrop::new(value))
    }

    /// The value, without its drop action.
    #[inline(always)]
    pub(crate) fn into_inner(self) -> T {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped (neither the action nor the value's drop runs
        // there), and the value is moved out of it once, here.
        unsafe { ManuallyDrop::take(&mut me.0) }
    }
}

impl<T: DropAction> Deref for OnDrop<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DropAction> Drop for OnDrop<T> {
    #[inline]
    fn drop(&mut self) {
        self.0.on_drop();
        // SAFETY: the value is dropped once, here, and never used again (a panic in
        // `on_drop` leaks it instead, which is safe).
        unsafe { ManuallyDrop::drop(&mut self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::{DropAction, OnDrop};
    use std::cell::Cell;
    use std::rc::Rc;

    struct Counted(Rc<Cell<u32>>);

    impl DropAction for Counted {
        fn on_drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn the_action_runs_on_drop_and_not_after_into_inner() {
        let runs = Rc::new(Cell::new(0));
        drop(OnDrop::new(Counted(runs.clone())));
        assert_eq!(runs.get(), 1);
        let inner = OnDrop::new(Counted(runs.clone())).into_inner();
        assert_eq!(runs.get(), 1, "taken out: no action");
        assert_eq!(
            Rc::strong_count(&runs),
            2,
            "the value itself is not dropped"
        );
        drop(inner);
        assert_eq!(Rc::strong_count(&runs), 1);
    }
}
