//! [`ErasedCell`]: a cell that holds one value of any `'static` type, inline when it is
//! small, for a record that must not be generic over what it carries.
//!
//! The hub's task record is the same type for every green thread, yet it carries the
//! green thread's closure until it starts, and the closure's result once it finished.
//! Behind `Rc<dyn Any>` that costs an allocation of its own, reference counting and
//! out-of-line `type_id` calls for every downcast; this cell keeps the value in the
//! record and checks its type against `TypeId::of::<V>()`, a constant. The module lives
//! in the greenlet layer because it needs `unsafe`; its API is safe whatever the callers
//! do.
//!
//! ## Layout and states
//! ```text
//!   buf  (INLINE_SIZE bytes, align INLINE_ALIGN)   tag           drop
//!   ┌────────────────────────────────────────┐
//!   │ V itself        (V fits: size, align)  │     TypeId of V   Some: drops a V in `buf`
//!   │ Box<V>          (V does not fit)       │     TypeId of V   Some: drops the Box<V>
//!   │ uninitialised                          │     of `Vacant`   None
//!   └────────────────────────────────────────┘
//! ```
//!
//! * `buf` holds an initialised value exactly when `tag` is not `Vacant`'s, and then it is
//!   the way `put::<V>` stored it for the `V` whose `TypeId` `tag` is: inline if
//!   [`fits::<V>`](fits), else as a `Box<V>`; `drop` is the function for that layout.
//! * `drop` is `None` exactly when `tag` is `Vacant`'s (both are set together, with
//!   nothing run in between): emptiness is tested on `drop`, one word, and a value's type
//!   on `tag`.
//! * Whoever sets `tag` to `Vacant` owns the value from then on: `take` moves it out,
//!   [`Detached`] copies its bytes out first and drops it from the copy. So a destructor
//!   that runs user code finds the cell empty, and whatever it does to the cell (a `put`,
//!   a `take`, a `clear`) is sound: nothing is read or dropped twice.
//! * The cell is `!Send` and `!Sync` (a value of any type, `Rc`s included, may be in it),
//!   and a value in it is only touched through `&self` methods that never hand out a
//!   reference to it.

use std::any::TypeId;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr;

/// Bytes a value may take to be stored inline (a small closure: a few captured handles;
/// a small `Result`).
pub(crate) const INLINE_SIZE: usize = 48;
/// The largest alignment of a value stored inline.
pub(crate) const INLINE_ALIGN: usize = 16;

/// The inline storage: uninitialised bytes, aligned for any value up to `INLINE_ALIGN`.
#[repr(C, align(16))]
struct Buf(MaybeUninit<[u8; INLINE_SIZE]>);

const _: () = assert!(align_of::<Buf>() == INLINE_ALIGN);
const _: () = assert!(size_of::<Buf>() == INLINE_SIZE);

/// The tag of an empty cell: a type no value can have.
enum Vacant {}

/// Whether a `V` is stored in the buffer itself (else boxed).
const fn fits<V>() -> bool {
    size_of::<V>() <= INLINE_SIZE && align_of::<V>() <= INLINE_ALIGN
}

/// Drops the value its argument points to, stored the way `put` stores it.
type DropFn = unsafe fn(*mut Buf);

/// Drops a `V` stored inline.
///
/// # Safety
/// `buf` must hold an initialised `V` (stored inline: `fits::<V>()`), owned by the caller,
/// not used again.
unsafe fn drop_inline<V>(buf: *mut Buf) {
    // SAFETY: by the contract above, `buf` holds an owned `V` at its start (its alignment
    // is at most the buffer's) that nobody uses again.
    unsafe { ptr::drop_in_place(buf.cast::<V>()) }
}

/// Drops a boxed `V`.
///
/// # Safety
/// `buf` must hold an initialised `Box<V>`, owned by the caller, not used again.
unsafe fn drop_boxed<V>(buf: *mut Buf) {
    // SAFETY: by the contract above, `buf` holds an owned `Box<V>` at its start (a pointer:
    // aligned for it) that nobody uses again.
    unsafe { ptr::drop_in_place(buf.cast::<Box<V>>()) }
}

/// A cell for one value of any `'static` type (see the module docs).
///
/// ```text
/// cell.put(closure);            // stored (inline if small, else boxed)
/// cell.take::<Closure>()        // Some(closure): moved out, the cell is empty
/// cell.take::<Other>()          // None: empty, or another type (left in place)
/// ```
pub(crate) struct ErasedCell {
    buf: UnsafeCell<Buf>,
    /// The `TypeId` of the value in `buf`, or of `Vacant`.
    tag: Cell<TypeId>,
    /// How to drop the value in `buf`; `None` exactly when `tag` is `Vacant`'s.
    drop: Cell<Option<DropFn>>,
    /// A value of any type may be inside: never `Send`, never `Sync`.
    _not_send: PhantomData<*const ()>,
}

impl ErasedCell {
    /// An empty cell.
    #[inline]
    pub(crate) fn new() -> ErasedCell {
        ErasedCell {
            buf: UnsafeCell::new(Buf(MaybeUninit::uninit())),
            tag: Cell::new(TypeId::of::<Vacant>()),
            drop: Cell::new(None),
            _not_send: PhantomData,
        }
    }

    /// Whether no value is stored.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // One word, where `tag`'s test would compare two (`drop` is `None` exactly when
        // `tag` is `Vacant`'s).
        self.drop.get().is_none()
    }

    /// Stores `v`, dropping the value stored before, if any (after `v` is in: a destructor
    /// that looks at the cell sees `v`).
    #[inline]
    pub(crate) fn put<V: 'static>(&self, v: V) {
        // Boxed first, if it must be: the allocator runs before the cell is looked at.
        if fits::<V>() {
            self.put_stored(v, drop_inline::<V>, TypeId::of::<V>());
        } else {
            self.put_stored(Box::new(v), drop_boxed::<V>, TypeId::of::<V>());
        }
    }

    /// Stores `stored` (a `V`, or the `Box<V>` of one that does not fit) as a `V`: `tag`
    /// is `V`'s `TypeId`, `drop` the function for that layout.
    #[inline(always)]
    fn put_stored<S>(&self, stored: S, drop: DropFn, tag: TypeId) {
        if self.is_empty() {
            // SAFETY: the cell is empty (just checked, and nothing ran since).
            unsafe { self.write(stored, drop, tag) };
        } else {
            self.put_over(stored, drop, tag);
        }
    }

    /// [`put`](Self::put) into a full cell: out of line, the usual `put` finds the cell
    /// empty.
    #[cold]
    #[inline(never)]
    fn put_over<S>(&self, stored: S, drop: DropFn, tag: TypeId) {
        let old = self.detach();
        // SAFETY: the cell is empty: the old value is owned by `old` now.
        unsafe { self.write(stored, drop, tag) };
        std::mem::drop(old);
    }

    /// Writes `stored` into the empty cell, with its `drop` and `tag`.
    ///
    /// # Safety
    /// The cell must be empty (else the value in it would be overwritten, never dropped,
    /// and its type forgotten); `stored`, `drop` and `tag` must be as
    /// [`put_stored`](Self::put_stored) says.
    #[inline(always)]
    unsafe fn write<S>(&self, stored: S, drop: DropFn, tag: TypeId) {
        // A constant: folded away (a `const` block would also reject the instance for
        // the branch of `put` that is not taken).
        assert!(
            fits::<S>(),
            "an erased cell stores only what fits its buffer"
        );
        // SAFETY: the cell is empty (the caller's contract), so nothing in `buf` is
        // overwritten that is still owned; `S` fits the buffer's size and alignment
        // (checked above). No other reference into `buf` exists (none is ever handed
        // out), and nothing runs between this write and the two stores that make the
        // value known.
        unsafe { ptr::write(self.buf.get().cast::<S>(), stored) };
        self.drop.set(Some(drop));
        self.tag.set(tag);
    }

    /// Moves the value out if it is a `V`; `None` if the cell is empty or holds a value of
    /// another type (left in place).
    #[inline]
    pub(crate) fn take<V: 'static>(&self) -> Option<V> {
        self.take_as(&TypeKey::<V>::new())
    }

    /// [`take`](Self::take) for a caller that does not know `V: 'static` but holds a key
    /// made where that was known (a `JoinHandle<T>`, whose methods do not require
    /// `T: 'static`).
    #[inline]
    pub(crate) fn take_as<V>(&self, key: &TypeKey<V>) -> Option<V> {
        if self.tag.get() != key.id {
            return None;
        }
        self.vacate();
        let buf = self.buf.get();
        if fits::<V>() {
            // SAFETY: the tag was `V`'s (a `TypeKey<V>` holds `V`'s `TypeId`, and is
            // invariant in `V`), so `buf` held a `V` stored inline by `put::<V>`
            // (`fits::<V>()` is the test `put` made); setting the tag to `Vacant` gave its
            // ownership to us, so it is moved out once and never read or dropped again.
            Some(unsafe { ptr::read(buf.cast::<V>()) })
        } else {
            // SAFETY: as above, for the `Box<V>` that `put::<V>` stored.
            Some(*unsafe { ptr::read(buf.cast::<Box<V>>()) })
        }
    }

    /// Drops the value stored, if any.
    #[inline]
    pub(crate) fn clear(&self) {
        if !self.is_empty() {
            drop(self.detach());
        }
    }

    /// Moves the value (of whatever type) out of the cell, leaving it empty. Out of line:
    /// the usual `put` finds the cell empty.
    #[inline(never)]
    fn detach(&self) -> Option<Detached> {
        let drop = self.drop.get()?;
        self.vacate();
        Some(Detached {
            // SAFETY: `buf` holds a value (`drop` was `Some`, so the tag was not
            // `Vacant`'s); setting the tag to `Vacant` gave its ownership to us, and
            // copying its bytes moves it (every Rust value may be moved by a copy of its
            // bytes). `MaybeUninit` keeps the bytes as they are, provenance included. No
            // reference into `buf` exists.
            bytes: unsafe { ptr::read(self.buf.get()) },
            drop,
        })
    }

    /// Marks the cell empty: whoever calls this owns the value that was in it.
    #[inline(always)]
    fn vacate(&self) {
        self.tag.set(TypeId::of::<Vacant>());
        self.drop.set(None);
    }
}

impl Default for ErasedCell {
    fn default() -> ErasedCell {
        ErasedCell::new()
    }
}

impl Drop for ErasedCell {
    #[inline]
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for ErasedCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedCell")
            .field("empty", &self.is_empty())
            .finish()
    }
}

/// The `TypeId` of `V`, taken where `V: 'static` is known, for
/// [`ErasedCell::take_as`] where it is not. Invariant in `V` (a key cannot be made to name
/// another type by variance), so the id is always `V`'s.
pub(crate) struct TypeKey<V> {
    id: TypeId,
    _type: PhantomData<fn(V) -> V>,
}

impl<V: 'static> TypeKey<V> {
    /// `V`'s key.
    #[inline]
    pub(crate) fn new() -> TypeKey<V> {
        TypeKey {
            id: TypeId::of::<V>(),
            _type: PhantomData,
        }
    }
}

impl<V> Clone for TypeKey<V> {
    fn clone(&self) -> TypeKey<V> {
        *self
    }
}

impl<V> Copy for TypeKey<V> {}

/// A value moved out of an [`ErasedCell`] by [`ErasedCell::detach`], of a type no longer
/// known: dropping this drops it.
struct Detached {
    /// The value, stored as in the cell.
    bytes: Buf,
    /// The drop function that came with it.
    drop: DropFn,
}

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: `bytes` holds the value the cell gave up (moved here by `detach`), stored
        // the way `drop` expects; we own it, and it is dropped only here, once.
        unsafe { (self.drop)(&mut self.bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Counts its drops in the shared counter.
    struct Counted(Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// Bigger than the inline buffer: stored boxed. (Its `Counted` counts its drop.)
    struct Big {
        bytes: [u8; 200],
        _counted: Counted,
    }

    /// Aligned more than the inline buffer: stored boxed.
    #[repr(align(64))]
    struct OverAligned(u64, #[allow(dead_code)] Counted);

    #[test]
    fn sizes_decide_inline_or_boxed() {
        assert!(fits::<u32>());
        assert!(fits::<[u8; INLINE_SIZE]>());
        assert!(fits::<()>());
        assert!(!fits::<[u8; INLINE_SIZE + 1]>());
        assert!(!fits::<Big>());
        assert!(!fits::<OverAligned>());
    }

    #[test]
    fn round_trips_inline_and_boxed() {
        let cell = ErasedCell::new();
        assert!(cell.is_empty());
        cell.put(7u32);
        assert!(!cell.is_empty());
        assert_eq!(cell.take::<u32>(), Some(7));
        assert!(cell.is_empty());
        assert_eq!(cell.take::<u32>(), None);

        let s = String::from("held inline");
        cell.put(s);
        assert_eq!(cell.take::<String>().as_deref(), Some("held inline"));

        let drops = Rc::new(Cell::new(0));
        let mut bytes = [0u8; 200];
        bytes[199] = 9;
        cell.put(Big {
            bytes,
            _counted: Counted(drops.clone()),
        });
        let big = cell.take::<Big>().expect("stored boxed");
        assert_eq!(big.bytes[199], 9);
        assert_eq!(drops.get(), 0);
        drop(big);
        assert_eq!(drops.get(), 1);
        assert!(cell.is_empty());
    }

    #[test]
    fn takes_with_a_key() {
        let cell = ErasedCell::new();
        let key = TypeKey::<Result<String, u8>>::new();
        cell.put::<Result<String, u8>>(Ok("keyed".to_owned()));
        assert!(cell
            .take_as(&TypeKey::<Result<String, u16>>::new())
            .is_none());
        assert_eq!(cell.take_as(&key), Some(Ok("keyed".to_owned())));
        assert_eq!(cell.take_as(&key), None);
    }

    #[test]
    fn wrong_type_gives_none_and_keeps_the_value() {
        let cell = ErasedCell::new();
        cell.put(5u64);
        assert_eq!(cell.take::<u32>(), None);
        assert_eq!(cell.take::<i64>(), None);
        assert!(!cell.is_empty());
        assert_eq!(cell.take::<u64>(), Some(5));

        let drops = Rc::new(Cell::new(0));
        cell.put(Counted(drops.clone()));
        assert!(cell.take::<Rc<Cell<u32>>>().is_none());
        assert_eq!(drops.get(), 0);
        assert!(cell.take::<Counted>().is_some());
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn drops_exactly_once() {
        let drops = Rc::new(Cell::new(0));
        let cell = ErasedCell::new();
        // Put over a value: the old one goes.
        cell.put(Counted(drops.clone()));
        cell.put(Counted(drops.clone()));
        assert_eq!(drops.get(), 1);
        // Put over with another type, boxed.
        cell.put(Big {
            bytes: [0; 200],
            _counted: Counted(drops.clone()),
        });
        assert_eq!(drops.get(), 2);
        // Clear.
        cell.clear();
        assert_eq!(drops.get(), 3);
        cell.clear();
        assert_eq!(drops.get(), 3);
        // Drop of the cell, inline and boxed.
        cell.put(Counted(drops.clone()));
        drop(cell);
        assert_eq!(drops.get(), 4);
        let cell = ErasedCell::new();
        cell.put(Big {
            bytes: [0; 200],
            _counted: Counted(drops.clone()),
        });
        drop(cell);
        assert_eq!(drops.get(), 5);
        // A value taken out is the caller's: the cell does not drop it again.
        let cell = ErasedCell::new();
        cell.put(Counted(drops.clone()));
        let taken = cell.take::<Counted>();
        drop(cell);
        assert_eq!(drops.get(), 5);
        drop(taken);
        assert_eq!(drops.get(), 6);
    }

    #[test]
    fn over_aligned_values_are_boxed_and_aligned() {
        let drops = Rc::new(Cell::new(0));
        let cell = ErasedCell::new();
        cell.put(OverAligned(11, Counted(drops.clone())));
        let v = cell.take::<OverAligned>().expect("stored");
        assert_eq!(v.0, 11);
        assert_eq!(std::ptr::addr_of!(v) as usize % 64, 0);
        drop(v);
        assert_eq!(drops.get(), 1);
        cell.put(OverAligned(12, Counted(drops.clone())));
        drop(cell);
        assert_eq!(drops.get(), 2);

        // Exactly the inline alignment: stored inline, at an address aligned for it.
        #[repr(align(16))]
        #[derive(Debug, PartialEq)]
        struct Sixteen(u128);
        let cell = ErasedCell::new();
        cell.put(Sixteen(u128::MAX - 1));
        assert_eq!(cell.buf.get() as usize % 16, 0);
        assert_eq!(cell.take::<Sixteen>(), Some(Sixteen(u128::MAX - 1)));
    }

    #[test]
    fn zero_sized_values() {
        struct Marker;
        let cell = ErasedCell::new();
        cell.put(());
        assert!(!cell.is_empty());
        assert_eq!(cell.take::<Marker>().map(|_| ()), None);
        assert_eq!(cell.take::<()>(), Some(()));
        assert!(cell.is_empty());

        // A zero-sized closure, and one with a drop of its own.
        let drops = Rc::new(Cell::new(0));
        cell.put(|| 3);
        struct Unit(Rc<Cell<u32>>);
        impl Drop for Unit {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 10);
            }
        }
        cell.put(Unit(drops.clone()));
        assert_eq!(drops.get(), 0);
        drop(cell);
        assert_eq!(drops.get(), 10);
    }

    /// Its drop uses the cell it is stored in: puts a new value, takes one, clears.
    struct Reentrant {
        cell: Rc<ErasedCell>,
        drops: Rc<Cell<u32>>,
    }

    impl Drop for Reentrant {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
            // What the cell holds while this runs (it is not this value any more).
            let before = self.cell.take::<u32>();
            self.cell.put(Counted(self.drops.clone()));
            self.cell.clear();
            if let Some(n) = before {
                self.cell.put(n + 1);
            }
        }
    }

    #[test]
    fn a_drop_that_uses_the_cell() {
        let drops = Rc::new(Cell::new(0));
        let cell = Rc::new(ErasedCell::new());
        // Cleared: the destructor finds the cell empty.
        cell.put(Reentrant {
            cell: cell.clone(),
            drops: drops.clone(),
        });
        cell.clear();
        // Reentrant once, then Counted cleared by it.
        assert_eq!(drops.get(), 2);
        assert!(cell.is_empty());

        // Put over: the destructor sees the new value, and may replace it.
        cell.put(Reentrant {
            cell: cell.clone(),
            drops: drops.clone(),
        });
        cell.put(41u32);
        assert_eq!(drops.get(), 4);
        assert_eq!(cell.take::<u32>(), Some(42));
        assert!(cell.is_empty());
    }

    #[test]
    fn a_cycle_through_the_cell_is_broken_by_clear() {
        let drops = Rc::new(Cell::new(0));
        let cell = Rc::new(ErasedCell::new());
        cell.put(Reentrant {
            cell: cell.clone(),
            drops: drops.clone(),
        });
        let weak = Rc::downgrade(&cell);
        cell.clear();
        drop(cell);
        assert_eq!(drops.get(), 2);
        assert!(weak.upgrade().is_none());
    }
}
