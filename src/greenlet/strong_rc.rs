//! [`StrongRc`]: an `Rc<T>` that can have no `Weak`, so that whether a handle is the only
//! one is a test of the strong count alone.
//!
//! `Rc::get_mut` must test the weak count too (a `Weak` could be upgraded while the `&mut`
//! lives): two loads and two branches where one of each would do for a value of which no
//! `Weak` is ever made. A `StrongRc` keeps its `Rc` private and offers no `downgrade`, so
//! the invariant is the type's own:
//!
//! ```text
//!   no Weak<T> of a StrongRc's allocation exists (nothing can make one)
//!   => strong count == 1 means this handle is the only pointer that may use the value
//! ```
//!
//! The hub's task records (`TaskRef`) are kept in one: a spawn reuses a finished record in
//! place when its spare handle is the last one ([`get_mut`](StrongRc::get_mut)).

use std::ops::Deref;
use std::rc::Rc;

/// A reference-counted pointer with no weak references: see the module docs. Its methods
/// are `#[inline]`, as `Rc`'s are: they are a load or two each.
pub(crate) struct StrongRc<T>(Rc<T>);

impl<T> StrongRc<T> {
    /// A new allocation holding `value`, with this one handle.
    pub(crate) fn new(value: T) -> StrongRc<T> {
        StrongRc(Rc::new(value))
    }

    /// How many handles this allocation has.
    #[inline]
    pub(crate) fn strong_count(this: &StrongRc<T>) -> usize {
        Rc::strong_count(&this.0)
    }

    /// Whether both handles are to the same allocation.
    #[inline]
    pub(crate) fn ptr_eq(this: &StrongRc<T>, other: &StrongRc<T>) -> bool {
        Rc::ptr_eq(&this.0, &other.0)
    }

    /// The value, mutably, if this is its only handle: `Rc::get_mut` with the test of the
    /// strong count alone (one load and one branch fewer).
    #[inline]
    pub(crate) fn get_mut(this: &mut StrongRc<T>) -> Option<&mut T> {
        if Rc::strong_count(&this.0) != 1 {
            return None;
        }
        // SAFETY: this is the allocation's only strong handle, and it has no weak one
        // (nothing can make a `Weak` of a `StrongRc`'s `Rc`: it is private to this module,
        // which never downgrades it). So no other `Rc`, `Weak` or reference can reach the
        // value while the returned borrow of `this` lives, as `Rc::get_mut` would have
        // found. The pointer is `Rc::as_ptr`'s, valid while the handle lives, with the
        // provenance of the `Rc`'s own (mutable) allocation pointer.
        Some(unsafe { &mut *Rc::as_ptr(&this.0).cast_mut() })
    }
}

impl<T> Clone for StrongRc<T> {
    #[inline]
    fn clone(&self) -> StrongRc<T> {
        StrongRc(Rc::clone(&self.0))
    }
}

impl<T> Deref for StrongRc<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::StrongRc;
    use std::cell::Cell;

    #[test]
    fn get_mut_is_granted_to_the_only_handle() {
        let mut a = StrongRc::new(Cell::new(1));
        *StrongRc::get_mut(&mut a)
            .expect("the only handle")
            .get_mut() = 2;
        assert_eq!(a.get(), 2);
        let b = a.clone();
        assert!(StrongRc::ptr_eq(&a, &b));
        assert_eq!(StrongRc::strong_count(&a), 2);
        assert!(StrongRc::get_mut(&mut a).is_none(), "two handles");
        b.set(3);
        drop(b);
        assert_eq!(StrongRc::strong_count(&a), 1);
        assert_eq!(StrongRc::get_mut(&mut a).map(|c| c.get()), Some(3));
    }

    #[test]
    fn handles_of_different_allocations_are_not_equal() {
        let a = StrongRc::new(0u8);
        let b = StrongRc::new(0u8);
        assert!(!StrongRc::ptr_eq(&a, &b));
    }
}
