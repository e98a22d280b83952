//! [`ErasedCell`]: a cell that holds one value of any `'static` type, inline when it is
//! small, for a record that must not be generic over what it carries.
//!
//! The hub's task record is the same type for every green thread, yet it carries the
//! green thread's closure until it starts, and the closure's result once it finished.
//! Behind `Rc<dyn Any>` that costs an allocation of its own, reference counting and
//! out-of-line `type_id` calls for every downcast; this cell keeps the value in the
//! record and checks its type against a constant. The module lives in the greenlet layer
//! because it needs `unsafe`; its API is safe whatever the callers do.
//!
//! ## Layout and states
//! ```text
//!   buf  (INLINE_SIZE bytes, align INLINE_ALIGN)   tag                 drop
//!   ┌────────────────────────────────────────┐
//!   │ V itself        (V fits: size, align)  │     Some(&TypeId of V)  drops a V in `buf`
//!   │ Box<V>          (V does not fit)       │     Some(&TypeId of V)  drops the Box<V>
//!   │ uninitialised                          │     None                (stale: not read)
//!   └────────────────────────────────────────┘
//! ```
//!
//! * `buf` holds an initialised value exactly when `tag` is `Some`, and then it is the way
//!   `put::<V>` stored it for the `V` whose `TypeId` `tag` points to: inline if
//!   [`fits::<V>`](fits), else as a `Box<V>`; `drop` is the function for that layout
//!   (`put` sets both; a `take` only sets `tag` to `None`, and `drop` is read only when
//!   `tag` is `Some`). One word says whether the cell is empty and what type its value has.
//! * Whoever sets `tag` to `None` owns the value from then on: `take` moves it out,
//!   [`Detached`] copies its bytes out first and drops it from the copy. So a destructor
//!   that runs user code finds the cell empty, and whatever it does to the cell (a `put`,
//!   a `take`, a `clear`) is sound: nothing is read or dropped twice.
//! * The cell is `!Send` and `!Sync` (a value of any type, `Rc`s included, may be in it),
//!   and a value in it is only touched through `&self` methods that never hand out a
//!   reference to it.
//!
//! ## The type test
//! `tag` points to a `TypeId` that is a constant promoted to a `'static` ([`type_id`]), so a
//! `take::<V>` compares the cell's `&TypeId` with `V`'s by address first: one word, against
//! an address the compiler knows. The same address is the same `TypeId`: the same type. The
//! converse does not hold (a constant may have several copies, in several codegen units or
//! crates), so different addresses fall back to comparing the two `TypeId`s, out of line
//! ([`same_type`]): a copy at another address of the same type's id still matches, and
//! another type's id never does. The copies are usually one: a promoted `TypeId` has no
//! relocations, so the compiler puts it in a mergeable constant section
//! (`.rodata.cst16` on ELF, `__literal16` on Mach-O), and the linker keeps one copy of
//! each value, whatever codegen unit or crate it came from. (A `drop` function pointer
//! next to it would have been a relocation, not merged: hence two fields, not one.)

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

/// `V`'s `TypeId`, a constant promoted to a `'static` (one address per copy of it: see
/// "The type test" in the module docs). Always inlined: the address is a constant at the
/// caller.
#[inline(always)]
fn type_id<V: 'static>() -> &'static TypeId {
    const { &TypeId::of::<V>() }
}

/// How to drop a `V` stored the way [`ErasedCell::put`] stores it.
const fn drop_fn<V>() -> DropFn {
    if fits::<V>() {
        drop_inline::<V>
    } else {
        drop_boxed::<V>
    }
}

/// Whether `tag` (a cell's, or `None`) is `key`, for two `TypeId`s at different addresses:
/// their values decide (see "The type test" in the module docs). Out of line: a cell
/// usually holds the very constant its `take` names.
#[cold]
#[inline(never)]
fn same_type(tag: Option<&'static TypeId>, key: &'static TypeId) -> bool {
    tag == Some(key)
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
    /// The `TypeId` of the value in `buf`; `None` exactly when `buf` holds none.
    tag: Cell<Option<&'static TypeId>>,
    /// How to drop the value in `buf`, when `tag` is `Some` (else stale).
    drop: Cell<DropFn>,
    /// A value of any type may be inside: never `Send`, never `Sync`.
    _not_send: PhantomData<*const ()>,
}

impl ErasedCell {
    /// An empty cell.
    #[inline]
    pub(crate) fn new() -> ErasedCell {
        ErasedCell {
            buf: UnsafeCell::new(Buf(MaybeUninit::uninit())),
            tag: Cell::new(None),
            drop: Cell::new(drop_inline::<()>),
            _not_send: PhantomData,
        }
    }

    /// Whether no value is stored.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.tag.get().is_none()
    }

    /// Stores `v`, dropping the value stored before, if any (after `v` is in: a destructor
    /// that looks at the cell sees `v`). Only the tests need it: every put of the hub's is
    /// into an empty cell ([`put_vacant`](Self::put_vacant)).
    #[cfg(test)]
    pub(crate) fn put<V: 'static>(&self, v: V) {
        self.put_as::<V, true>(v);
    }

    /// [`put`](Self::put) into a cell the caller knows to be empty (a new or recycled
    /// record's), without the test in release builds: a debug assertion. Were the cell
    /// full after all, the value in it would be leaked (overwritten, never dropped): a bug,
    /// but not an unsound one.
    #[inline]
    pub(crate) fn put_vacant<V: 'static>(&self, v: V) {
        debug_assert!(self.is_empty(), "put_vacant into a full cell");
        self.put_as::<V, false>(v);
    }

    /// [`put`](Self::put) (`DROP_OLD`) or [`put_vacant`](Self::put_vacant).
    #[inline(always)]
    fn put_as<V: 'static, const DROP_OLD: bool>(&self, v: V) {
        // Boxed first, if it must be: the allocator runs before the cell is looked at.
        if fits::<V>() {
            self.put_stored::<V, DROP_OLD>(v, type_id::<V>(), drop_fn::<V>());
        } else {
            self.put_stored::<Box<V>, DROP_OLD>(Box::new(v), type_id::<V>(), drop_fn::<V>());
        }
    }

    /// Stores `stored` (a `V`, or the `Box<V>` of one that does not fit) as a `V`: `tag`
    /// is `V`'s `TypeId`, `drop` the function for that layout. A value in the cell is
    /// dropped (`DROP_OLD`) or leaked.
    #[inline(always)]
    fn put_stored<S, const DROP_OLD: bool>(&self, stored: S, tag: &'static TypeId, drop: DropFn) {
        if !DROP_OLD || self.is_empty() {
            // SAFETY: `stored`, `tag` and `drop` are `put_as`'s, as `write` requires.
            unsafe { self.write(stored, tag, drop) };
        } else {
            self.put_over(stored, tag, drop);
        }
    }

    /// [`put`](Self::put) into a full cell: out of line, the usual `put` finds the cell
    /// empty.
    #[cold]
    #[inline(never)]
    fn put_over<S>(&self, stored: S, tag: &'static TypeId, drop: DropFn) {
        let old = self.detach();
        // SAFETY: `stored`, `tag` and `drop` are `put_as`'s, as `write` requires (and the
        // cell is empty: the old value is owned by `old` now).
        unsafe { self.write(stored, tag, drop) };
        std::mem::drop(old);
    }

    /// Writes `stored` into the cell, with its `tag` and `drop`. A value in the cell is
    /// leaked: its bytes overwritten, never dropped (`put` detaches it first).
    ///
    /// # Safety
    /// `stored` must be a `V` stored the way `put::<V>` stores it (itself if `fits::<V>()`,
    /// else a `Box<V>`), `tag` `V`'s `TypeId` and `drop` the function for that layout
    /// ([`drop_fn::<V>`](drop_fn)).
    #[inline(always)]
    unsafe fn write<S>(&self, stored: S, tag: &'static TypeId, drop: DropFn) {
        // A constant: folded away (a `const` block would also reject the instance for
        // the branch of `put` that is not taken).
        assert!(
            fits::<S>(),
            "an erased cell stores only what fits its buffer"
        );
        // SAFETY: `S` fits the buffer's size and alignment (checked above). No other
        // reference into `buf` exists (none is ever handed out); a value that was in it is
        // not read or dropped again (leaked: its tag and drop are replaced below), and
        // nothing runs between this write and the stores that make the new one known.
        unsafe { ptr::write(self.buf.get().cast::<S>(), stored) };
        self.drop.set(drop);
        self.tag.set(Some(tag));
    }

    /// Moves the value out if it is a `V`; `None` if the cell is empty or holds a value of
    /// another type (left in place).
    #[inline]
    pub(crate) fn take<V: 'static>(&self) -> Option<V> {
        self.take_as(&TypeKey::<V>::new())
    }

    /// [`take`](Self::take) when the cell's tag is the very `TypeId` constant of `V` this
    /// code knows (the usual case: one address), with no call: `None` otherwise (empty, of
    /// another type, or another copy of `V`'s `TypeId`), the value left in place, for the
    /// caller to try [`take`](Self::take). For a caller whose frame must hold no call that
    /// returns into it (a spawned green thread's start, `run_task_in`).
    #[inline(always)]
    pub(crate) fn take_same_constant<V: 'static>(&self) -> Option<V> {
        if self
            .tag
            .get()
            .is_some_and(|tag| ptr::eq(tag, type_id::<V>()))
        {
            // SAFETY: the tag is `V`'s `TypeId` constant, so the cell holds a `V` (as
            // `holds` finds), and nothing ran since.
            Some(unsafe { self.take_held() })
        } else {
            None
        }
    }

    /// [`take`](Self::take) for a caller that does not know `V: 'static` but holds a key
    /// made where that was known (a `JoinHandle<T>`, whose methods do not require
    /// `T: 'static`).
    #[inline]
    pub(crate) fn take_as<V>(&self, key: &TypeKey<V>) -> Option<V> {
        if self.holds(key) {
            // SAFETY: it holds a `V`, just checked, and nothing ran since.
            Some(unsafe { self.take_held() })
        } else {
            None
        }
    }

    /// [`take_as`](Self::take_as) of a `Result`, for a caller that has no use for a `None`:
    /// `missing()` if the cell holds no `Result<T, E>` (the value left in place). The value
    /// goes straight to the caller, never through an `Option` in memory, and is read
    /// variant by variant: its tag first, then only the live variant's fields. A copy of
    /// the whole value would also read the bytes the other variant leaves undefined, where
    /// a load that spans two of the writer's stores (a `Result<u32, JoinError>`: bytes
    /// 12..20, over the stores of bytes 8..16 and 16..24) cannot be forwarded from them and
    /// waits for both to reach the cache (a join reads its green thread's result a few
    /// dozen instructions after the green thread stored it).
    #[inline(always)]
    pub(crate) fn take_result_or_else<T, E>(
        &self,
        key: &TypeKey<Result<T, E>>,
        missing: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.holds(key) {
            return missing();
        }
        if !fits::<Result<T, E>>() {
            // SAFETY: it holds a `Result<T, E>`, just checked, and nothing ran since.
            return unsafe { self.take_held() };
        }
        self.vacate();
        // SAFETY: as `take_held`'s: the cell held a `Result<T, E>` stored inline (it
        // fits), whose ownership the cleared tag gave to us; each variant's field is moved
        // out once and the value is never read or dropped again.
        unsafe {
            match &*self.buf.get().cast::<Result<T, E>>() {
                Ok(v) => Ok(ptr::read(v)),
                Err(e) => Err(ptr::read(e)),
            }
        }
    }

    /// Whether the cell holds a value of `key`'s type.
    #[inline(always)]
    fn holds<V>(&self, key: &TypeKey<V>) -> bool {
        let tag = self.tag.get();
        // The same `TypeId` constant (the usual case: one address), or another copy of it.
        tag.is_some_and(|tag| ptr::eq(tag, key.id)) || same_type(tag, key.id)
    }

    /// Moves the value out, a `V`.
    ///
    /// # Safety
    /// The cell must hold a `V` ([`holds`](Self::holds) a `TypeKey<V>`).
    #[inline(always)]
    unsafe fn take_held<V>(&self) -> V {
        self.vacate();
        let buf = self.buf.get();
        if fits::<V>() {
            // SAFETY: the tag was `V`'s `TypeId` (the caller's contract: a `TypeKey<V>`'s
            // id is `V`'s, made only by `TypeKey::<V>::new` and invariant in `V`; the tag
            // is that constant, or one equal to it), so `buf` held a `V` stored inline by
            // `put::<V>` (`fits::<V>()` is the test `put` made); setting the tag to `None`
            // gave its ownership to us, so it is moved out once and never read or dropped
            // again.
            unsafe { ptr::read(buf.cast::<V>()) }
        } else {
            // SAFETY: as above, for the `Box<V>` that `put::<V>` stored.
            *unsafe { ptr::read(buf.cast::<Box<V>>()) }
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
        self.tag.get()?;
        let drop = self.drop.get();
        self.vacate();
        Some(Detached {
            // SAFETY: `buf` holds a value (`tag` was `Some`); setting `tag` to `None` gave
            // its ownership to us, and copying its bytes moves it (every Rust value
            // may be moved by a copy of its bytes). `MaybeUninit` keeps the bytes as they
            // are, provenance included. No reference into `buf` exists.
            bytes: unsafe { ptr::read(self.buf.get()) },
            drop,
        })
    }

    /// Marks the cell empty: whoever calls this owns the value that was in it.
    #[inline(always)]
    fn vacate(&self) {
        self.tag.set(None);
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

/// `V`'s `TypeId` (the promoted constant), taken where `V: 'static` is known, for
/// [`ErasedCell::take_as`] where it is not: one word. Invariant in `V` (a key cannot be
/// made to name another type by variance), so the id is always `V`'s.
pub(crate) struct TypeKey<V> {
    id: &'static TypeId,
    _type: PhantomData<fn(V) -> V>,
}

impl<V: 'static> TypeKey<V> {
    /// `V`'s key.
    #[inline]
    pub(crate) fn new() -> TypeKey<V> {
        TypeKey {
            id: type_id::<V>(),
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
        // the way `drop` expects; we own it, and it is dropped
        // only here, once.
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
    fn take_result_or_else_runs_the_fallback_only_for_another_type() {
        let cell = ErasedCell::new();
        let key = TypeKey::<Result<String, u8>>::new();
        assert_eq!(
            cell.take_result_or_else(&key, || Ok("empty".to_owned())),
            Ok("empty".to_owned())
        );
        cell.put(3u8);
        assert_eq!(cell.take_result_or_else(&key, || Err(1)), Err(1));
        assert_eq!(cell.take::<u8>(), Some(3));
        // Each variant comes out whole, inline and boxed.
        cell.put::<Result<String, u8>>(Ok("held".to_owned()));
        assert_eq!(
            cell.take_result_or_else(&key, || unreachable!()),
            Ok("held".to_owned())
        );
        assert!(cell.is_empty());
        cell.put::<Result<String, u8>>(Err(7));
        assert_eq!(cell.take_result_or_else(&key, || unreachable!()), Err(7));
        let big = TypeKey::<Result<u8, [u64; 8]>>::new();
        cell.put::<Result<u8, [u64; 8]>>(Err([5; 8]));
        assert_eq!(
            cell.take_result_or_else(&big, || unreachable!()),
            Err([5; 8])
        );
        cell.put::<Result<u8, [u64; 8]>>(Ok(2));
        assert_eq!(cell.take_result_or_else(&big, || unreachable!()), Ok(2));
        assert!(cell.is_empty());
    }

    #[test]
    fn put_vacant_stores_inline_and_boxed() {
        let drops = Rc::new(Cell::new(0));
        let cell = ErasedCell::new();
        cell.put_vacant(7u32);
        assert_eq!(cell.take::<u32>(), Some(7));
        cell.put_vacant(Big {
            bytes: [4; 200],
            _counted: Counted(drops.clone()),
        });
        assert_eq!(cell.take::<Big>().map(|b| b.bytes[199]), Some(4));
        assert_eq!(drops.get(), 1);
        cell.put_vacant(Counted(drops.clone()));
        drop(cell);
        assert_eq!(drops.get(), 2);
    }

    /// Into a full cell: a bug, caught by the debug assertion; without it the old value
    /// is leaked (never dropped), and the new one is stored whole.
    #[test]
    #[cfg_attr(
        debug_assertions,
        should_panic(expected = "put_vacant into a full cell")
    )]
    fn put_vacant_into_a_full_cell_leaks_the_old_value() {
        let drops = Rc::new(Cell::new(0));
        let cell = ErasedCell::new();
        cell.put(Counted(drops.clone()));
        cell.put_vacant(9u64);
        assert_eq!(cell.take::<Counted>().map(drop), None);
        assert_eq!(cell.take::<u64>(), Some(9));
        drop(cell);
        assert_eq!((drops.get(), Rc::strong_count(&drops)), (0, 2));
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

    /// A `TypeId` equal to `V`'s at an address of its own (not the promoted constant).
    fn key_elsewhere<V: 'static>() -> TypeKey<V> {
        let id: &'static TypeId = Box::leak(Box::new(TypeId::of::<V>()));
        assert!(!ptr::eq(id, type_id::<V>()));
        TypeKey {
            id,
            _type: PhantomData,
        }
    }

    #[test]
    fn an_equal_type_id_at_another_address_matches() {
        let cell = ErasedCell::new();
        // Empty: no type matches.
        assert_eq!(cell.take_as(&key_elsewhere::<u32>()), None);
        cell.put(7u32);
        // Another type's id, at another address: no match, the value stays.
        assert_eq!(cell.take_as(&key_elsewhere::<i32>()), None);
        assert!(!cell.is_empty());
        // The same type's id, at another address: the values decide.
        assert_eq!(cell.take_as(&key_elsewhere::<u32>()), Some(7));
        assert!(cell.is_empty());

        // Boxed, with a drop of its own.
        let drops = Rc::new(Cell::new(0));
        cell.put(Big {
            bytes: [3; 200],
            _counted: Counted(drops.clone()),
        });
        let big = cell.take_as(&key_elsewhere::<Big>()).expect("same type");
        assert_eq!((big.bytes[0], drops.get()), (3, 0));
        drop(big);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn take_same_constant_takes_only_what_the_very_constant_tags() {
        let cell = ErasedCell::new();
        assert_eq!(cell.take_same_constant::<u32>(), None);
        cell.put(7u32);
        // Another type: no match, the value stays.
        assert_eq!(cell.take_same_constant::<i32>(), None);
        assert!(!cell.is_empty());
        assert_eq!(cell.take_same_constant::<u32>(), Some(7));
        assert!(cell.is_empty());
        // Tagged by an equal `TypeId` at another address: left for `take`, which matches.
        // SAFETY: a `u32` fits the buffer, and the tag and drop are a `u32`'s.
        unsafe { cell.write(9u32, key_elsewhere::<u32>().id, drop_fn::<u32>()) };
        assert_eq!(cell.take_same_constant::<u32>(), None);
        assert!(!cell.is_empty());
        assert_eq!(cell.take::<u32>(), Some(9));
    }

    #[test]
    fn a_take_leaves_no_drop_behind() {
        // Each value is dropped by its own type's drop, whatever was in the cell before.
        let drops = Rc::new(Cell::new(0));
        let cell = ErasedCell::new();
        cell.put(Big {
            bytes: [0; 200],
            _counted: Counted(drops.clone()),
        });
        let big = cell.take::<Big>();
        cell.put(Counted(drops.clone()));
        cell.clear();
        assert_eq!(drops.get(), 1);
        drop(big);
        assert_eq!(drops.get(), 2);
        cell.put(5u8);
        cell.take::<u8>();
        cell.put(Big {
            bytes: [0; 200],
            _counted: Counted(drops.clone()),
        });
        drop(cell);
        assert_eq!(drops.get(), 3);
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
