//! Portable backend: verdant's symmetric `switch` built from corosensei's asymmetric
//! coroutines.
//!
//! Used on targets without an `arch/` file, and everywhere when the `fallback-context`
//! feature is on (so that the test suite exercises it on x86_64 and aarch64 too).
//!
//! ## Design: one trampoline per OS thread
//!
//! corosensei only offers `resume` (parent → child) and `suspend` (child → the parent that
//! resumed it). verdant needs `switch(to, data)` from any context to any other. So:
//!
//! * The thread's original stack is the **root** context, with the fixed handle [`ROOT`].
//! * Every other context is a corosensei coroutine (a *fiber*) running on the stack memory
//!   verdant gave to [`init`], and it is only ever resumed **by the root**. All fibers are
//!   flat children of the root, however the layers above nest their coroutines and
//!   greenlets.
//! * A fiber that switches suspends itself to the root with the message "resume `to` with
//!   `data`"; the root runs a loop that resumes fibers until one asks for the root.
//!
//! ```text
//!   root stack (the thread's own)                 fibers (verdant stacks)
//!   ─────────────────────────────                 ───────────────────────
//!   switch(A, d0)
//!     loop: resume A with (ROOT, d0)  ─────────▶  A runs ... switch(B, d1)
//!           ◀──────────────────────────────────   = suspend((B, d1))
//!           resume B with (A, d1)     ─────────▶  B runs ... switch(ROOT, d2)
//!           ◀──────────────────────────────────   = suspend((ROOT, d2))
//!     to == ROOT: return (B, d2)
//! ```
//!
//! A switch between two fibers therefore costs two corosensei switches; a switch between
//! the root and a fiber (the common resume/suspend of a coroutine started from `main`)
//! costs one.
//!
//! ## Handles
//!
//! A fiber's [`StackPointer`] is the address of its heap-allocated [`Record`] (the
//! corosensei coroutine plus a pointer to its yielder), so it is non-zero, unique while the
//! context lives, and stays valid when the [`ContextStorage`] that owns the record moves.
//! Unlike the asm backends, a fiber keeps the same handle across suspensions; the contract
//! only requires that a handle is not used after the context was resumed, and that still
//! holds. The root's handle is `1`, which no record can have (records are word-aligned).
//! Handles are per thread, like everything here.
//!
//! ## Which context is running
//!
//! A thread-local `CURRENT` points at the record of the running fiber, or is null while
//! the root runs. Only the root's loop changes it: it sets it before resuming a fiber and
//! clears it when the fiber suspends. A fiber's yielder lives on its own stack; the fiber
//! publishes its address in its record the first time it runs.
//!
//! ## Death and drop
//!
//! verdant's entry functions never return: a finished context makes a last `switch` away,
//! which leaves its fiber suspended forever inside corosensei's `suspend`. Its owner then
//! drops the [`ContextStorage`], possibly after the stack went back to the pool (or was
//! unmapped). Dropping a corosensei coroutine that is suspended would unwind it (resume it
//! with an unwind request), and dropping one that never started reads its closure back
//! from the stack; both are wrong here. So the storage first calls `force_reset`, which
//! marks the fiber as finished without touching its stack: nothing on a dead fiber's stack
//! needs dropping (the entry function has done its work), and the closure of a fiber that
//! never started only holds a function pointer and a record pointer.
//!
//! Panics never reach this layer: the entry functions of the layers above catch them at the
//! root of each stack, and they are `extern "C"`, so a panic that escaped would abort. The
//! forced unwinding of a suspended verdant coroutine or greenlet (on drop) is done by the
//! layer above resuming it with an unwind request: for this backend an ordinary switch.
//!
//! Not supported: Windows (corosensei's `Stack` trait needs the TEB fields there, and
//! verdant's `sys` layer is Unix-only anyway).

use super::{Entry, EntryFn, StackPointer, INIT_FRAME_BYTES};
use core::cell::{Cell, UnsafeCell};
use core::convert::Infallible;
use core::fmt;
use core::num::NonZeroUsize;
use core::ptr::{self, NonNull};
use corosensei::{stack, Coroutine, CoroutineResult, Yielder};

#[cfg(windows)]
compile_error!("verdant's fallback context backend does not support Windows");

/// Name of this backend, for benchmarks and diagnostics.
pub(crate) const BACKEND: &str = "corosensei fallback";

/// The handle of the thread's root context (its original stack).
const ROOT: StackPointer = StackPointer(NonZeroUsize::MIN);

/// What travels through corosensei on every switch. Into a fiber: the context that switched
/// to it and the data word. Out of a fiber: the context to switch to and the data word.
type Message = (StackPointer, usize);

/// A verdant context other than the root: a corosensei coroutine whose body never returns.
type Fiber = Coroutine<Message, Message, Infallible, BorrowedStack>;

thread_local! {
    /// The record of the fiber running on this thread, or null while the root runs.
    /// Const-initialised and without destructor: reading it is a plain TLS load.
    static CURRENT: Cell<*const Record> = const { Cell::new(ptr::null()) };
}

/// Everything a fiber needs besides its stack. Boxed, so its address is the fiber's handle.
struct Record {
    /// `None` only between the allocation of the record and the creation of the fiber in
    /// [`init`]. Borrowed mutably only by the root's loop, while it resumes this fiber.
    fiber: UnsafeCell<Option<Fiber>>,
    /// The fiber's yielder (on the fiber's own stack); null until the fiber first runs.
    yielder: Cell<*const Yielder<Message, Message>>,
}

/// verdant's stack memory, lent to corosensei. Owning nothing: the stack belongs to the
/// coroutine or greenlet object and outlives every use of the fiber (see [`init`]).
struct BorrowedStack {
    base: NonZeroUsize,
    limit: NonZeroUsize,
}

// SAFETY: `base..limit` is the usable part of a verdant stack: 16-byte aligned top, page
// aligned bottom, at least `stack::MIN_STACK_SIZE` (16 KiB) usable bytes, with a guard page
// right below `limit` (the guard is not included in `limit`; corosensei only reads `limit`
// for sanitizers and Windows). The memory stays mapped while the fiber can run (the
// caller's contract of `init`).
unsafe impl stack::Stack for BorrowedStack {
    #[inline]
    fn base(&self) -> stack::StackPointer {
        self.base
    }

    #[inline]
    fn limit(&self) -> stack::StackPointer {
        self.limit
    }
}

/// Per-context storage of this backend: the context's boxed [`Record`], if [`init`] ran.
///
/// The owner may move it freely; dropping it frees the fiber without running anything on
/// (or reading) its stack. Drop it only once the context is dead or was never started.
#[derive(Default)]
pub(crate) struct ContextStorage {
    record: Option<NonNull<Record>>,
}

impl Drop for ContextStorage {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        debug_assert!(
            CURRENT.with(Cell::get) != record.as_ptr().cast_const(),
            "verdant: a context's storage dropped while it runs"
        );
        // SAFETY: the record came from `Box::into_raw` in `init` and is owned by this
        // storage alone. The context is dead or never started (contract of the owner), so
        // the root's loop is not resuming it and holds no borrow of it.
        let record = unsafe { Box::from_raw(record.as_ptr()) };
        if let Some(mut fiber) = record.fiber.into_inner() {
            // SAFETY: force_reset skips unwinding. A dead fiber sits in its final switch
            // with nothing left to drop on its stack; an unstarted one holds a closure of a
            // fn pointer and a raw pointer, neither of which needs dropping. After the reset
            // dropping the fiber touches neither the stack nor the closure.
            unsafe { fiber.force_reset() };
        }
    }
}

impl fmt::Debug for ContextStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextStorage")
            .field("handle", &self.record.map(NonNull::as_ptr))
            .finish()
    }
}

/// [`init`] for the entry `E` (no trampoline here to make for it).
///
/// # Safety
/// As [`init`].
pub(crate) unsafe fn init_for<E: Entry>(
    top: *mut u8,
    bottom: *mut u8,
    storage: &mut ContextStorage,
) -> StackPointer {
    // SAFETY: per the contract.
    unsafe { init(top, bottom, E::entry, storage) }
}

/// Creates a fiber on `bottom..top` whose first resume calls `entry(data, from)`.
///
/// Any record already in `storage` is freed first, as if `storage` were dropped.
///
/// # Safety
/// `top` must be the 16-byte aligned top and `bottom` the bottom of a writable stack of at
/// least 16 KiB above a guard page, with nothing running on it; it must stay mapped until
/// the context is dead. `storage` must then be kept (it may move) until the context is
/// dead or it is known never to be started, and be dropped on this OS thread.
pub(crate) unsafe fn init(
    top: *mut u8,
    bottom: *mut u8,
    entry: EntryFn,
    storage: &mut ContextStorage,
) -> StackPointer {
    debug_assert_eq!(top as usize % 16, 0);
    // corosensei's `Stack` contract: at least its MIN_STACK_SIZE usable bytes, besides the
    // initial frame it writes below `top` (as the asm backends do).
    assert!(
        (top as usize).saturating_sub(bottom as usize) >= stack::MIN_STACK_SIZE + INIT_FRAME_BYTES,
        "verdant: stack too small for the fallback context backend"
    );
    *storage = ContextStorage::default();
    let record: *mut Record = Box::into_raw(Box::new(Record {
        fiber: UnsafeCell::new(None),
        yielder: Cell::new(ptr::null()),
    }));
    let stack = BorrowedStack {
        base: NonZeroUsize::new(top as usize).expect("verdant: null stack top"),
        limit: NonZeroUsize::new(bottom as usize).expect("verdant: null stack bottom"),
    };
    let body = move |yielder: &Yielder<Message, Message>, (from, data): Message| -> Infallible {
        // SAFETY: the record outlives its fiber (it owns it), and only this fiber writes
        // its yielder field.
        unsafe { (*record).yielder.set(yielder) };
        // SAFETY: `entry` is the entry function the layer above chose for this context;
        // `data` and `from` are the first switch's, as the contract of `init` promises.
        unsafe { entry(data, from) }
    };
    // SAFETY: the record was just allocated and nothing else refers to it yet. The fiber
    // writes its initial frame on the stack, which the caller guarantees writable and idle.
    unsafe { *(*record).fiber.get() = Some(Coroutine::with_stack(stack, body)) };
    storage.record = NonNull::new(record);
    StackPointer(NonZeroUsize::new(record as usize).expect("Box::into_raw is non-null"))
}

/// Suspends the current context and resumes `to`, passing `data`.
///
/// Returns, once something switches back, the [`StackPointer`] of that context and the data
/// word it passed.
///
/// # Safety
/// `to` must be a suspended context of this OS thread that has not been resumed since it
/// was produced (by [`init`] or as the `from` of a switch), whose [`ContextStorage`] is
/// still alive, and no panic may unwind across this call.
#[inline]
pub(crate) unsafe fn switch(to: StackPointer, data: usize) -> (StackPointer, usize) {
    let current = CURRENT.with(Cell::get);
    if current.is_null() {
        // SAFETY: we are the root (CURRENT is null), and the caller's contract on `to` is
        // the loop's.
        return unsafe { run_root_loop(to, data) };
    }
    // SAFETY: CURRENT is the record of the running fiber, alive since its storage cannot be
    // dropped while it runs. Its yielder is set: the fiber stored it before its entry
    // function, the only code that can have called us, started.
    let yielder = unsafe { &*(*current).yielder.get() };
    // Hand the request to the root's loop; it resumes us with whoever switches back.
    yielder.suspend((to, data))
}

/// [`switch`] for the last time: the current context is finished and never resumed.
///
/// # Safety
/// As [`switch`]; the current context must never be resumed.
pub(crate) unsafe fn switch_final(to: StackPointer, data: usize) {
    // SAFETY: per the contract.
    unsafe { switch(to, data) };
}

/// The root's side of every switch: resumes fibers, as they ask, until one asks for the
/// root; returns who that was and its data word.
///
/// # Safety
/// Must run on the root (CURRENT is null); `to` and every context a fiber asks for must
/// satisfy the contract of [`switch`].
#[inline(never)]
unsafe fn run_root_loop(mut to: StackPointer, mut data: usize) -> (StackPointer, usize) {
    let mut from = ROOT;
    while to != ROOT {
        let record = to.0.get() as *const Record;
        CURRENT.with(|c| c.set(record));
        // SAFETY: `to` is a suspended fiber of this thread whose storage is alive, so its
        // record is. Nothing else borrows the fiber: it is suspended, fibers are only
        // resumed from here, and this loop has at most one activation per thread (only the
        // root runs it, and the root stays inside it while any fiber runs).
        let fiber = unsafe { (*(*record).fiber.get()).as_mut() };
        let fiber = fiber.expect("verdant: switch to a context that init did not finish");
        let result = fiber.resume((from, data));
        CURRENT.with(|c| c.set(ptr::null()));
        match result {
            CoroutineResult::Yield((next, next_data)) => {
                from = to;
                to = next;
                data = next_data;
            }
            CoroutineResult::Return(never) => match never {},
        }
    }
    (from, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{Stack, MIN_STACK_SIZE};
    use std::cell::RefCell;

    thread_local! {
        static LOG: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
        static HANDLES: RefCell<Vec<StackPointer>> = const { RefCell::new(Vec::new()) };
        static FROMS: RefCell<Vec<StackPointer>> = const { RefCell::new(Vec::new()) };
        static STARTS: Cell<usize> = const { Cell::new(0) };
    }

    fn stack() -> Stack {
        Stack::new(MIN_STACK_SIZE).expect("stack")
    }

    /// Makes a context on `stack`, moving its storage afterwards like its owners do.
    fn make(stack: &Stack, entry: EntryFn) -> (StackPointer, Box<ContextStorage>) {
        let mut storage = ContextStorage::default();
        // SAFETY: a fresh stack, which every test keeps alive while the context can run.
        let sp = unsafe { init(stack.top(), stack.bottom(), entry, &mut storage) };
        (sp, Box::new(storage))
    }

    /// Answers every switch with `2 * data` to whoever switched.
    unsafe extern "C" fn doubler(mut data: usize, mut from: StackPointer) -> ! {
        loop {
            // SAFETY: `from` just switched to us, so it is suspended.
            (from, data) = unsafe { switch(from, data * 2) };
        }
    }

    #[test]
    fn root_and_fiber_switch_back_and_forth() {
        let s = stack();
        let (sp, storage) = make(&s, doubler);
        assert_ne!(sp, ROOT);
        // SAFETY: `sp` is fresh, then suspended in its switch back to us.
        let (from, data) = unsafe { switch(sp, 21) };
        assert_eq!((from, data), (sp, 42));
        // SAFETY: as above.
        let (from, data) = unsafe { switch(from, 5) };
        assert_eq!((from, data), (sp, 10));
        // The fiber is suspended mid-loop, not dead; the test never resumes it again.
        drop(storage);
    }

    /// Ring member `ME`: logs, then passes `data + 1` to `HANDLES[ME + 1]`, or to the root
    /// after the last one.
    unsafe extern "C" fn ring<const ME: usize>(mut data: usize, mut from: StackPointer) -> ! {
        loop {
            LOG.with(|l| l.borrow_mut().push((ME, data)));
            FROMS.with(|f| f.borrow_mut().push(from));
            let to = HANDLES
                .with(|h| h.borrow().get(ME + 1).copied())
                .unwrap_or(ROOT);
            // SAFETY: the next ring member (or the root) is suspended, per the ring order.
            (from, data) = unsafe { switch(to, data + 1) };
        }
    }

    #[test]
    fn fibers_switch_directly_to_each_other() {
        let stacks = [stack(), stack(), stack()];
        let (a, sa) = make(&stacks[0], ring::<0>);
        let (b, sb) = make(&stacks[1], ring::<1>);
        let (c, sc) = make(&stacks[2], ring::<2>);
        HANDLES.with(|h| *h.borrow_mut() = vec![a, b, c]);
        for lap in 0..3 {
            // SAFETY: `a` is fresh, or suspended in its switch to `b`; the last ring member
            // switches to the root.
            let (from, data) = unsafe { switch(a, 10 * lap) };
            assert_eq!((from, data), (c, 10 * lap + 3));
            let expect: Vec<_> = (0..3).map(|i| (i, 10 * lap + i)).collect();
            assert_eq!(LOG.with(|l| l.take()), expect);
            assert_eq!(FROMS.with(|f| f.take()), vec![ROOT, a, b]);
        }
        drop((sa, sb, sc));
    }

    /// Starts a `doubler` from inside itself, checks it answers to us, then reports to the
    /// root with the doubler's answer.
    unsafe extern "C" fn starts_another(data: usize, root: StackPointer) -> ! {
        let s = stack();
        let (inner, storage) = make(&s, doubler);
        // SAFETY: `inner` is fresh; it answers to us.
        let (from, answer) = unsafe { switch(inner, data) };
        assert_eq!(from, inner);
        drop(storage);
        drop(s);
        // SAFETY: the root started us and is suspended; this is our final switch.
        unsafe { switch(root, answer) };
        unreachable!("a dead context was resumed")
    }

    #[test]
    fn a_fiber_can_start_and_resume_another() {
        let s = stack();
        let (outer, storage) = make(&s, starts_another);
        // SAFETY: `outer` is fresh.
        let (from, data) = unsafe { switch(outer, 8) };
        assert_eq!((from, data), (outer, 16));
        drop(storage);
    }

    /// Counts its start, then makes its final switch back.
    unsafe extern "C" fn finishes_at_once(data: usize, from: StackPointer) -> ! {
        STARTS.with(|s| s.set(s.get() + 1));
        // SAFETY: `from` started us; this is our final switch.
        unsafe { switch(from, data) };
        unreachable!("a dead context was resumed")
    }

    #[test]
    fn dropping_storage_never_touches_the_stack() {
        // Dead: the stack is unmapped before the storage goes, as when the pool is full.
        let s = stack();
        let (sp, storage) = make(&s, finishes_at_once);
        // SAFETY: `sp` is fresh.
        assert_eq!(unsafe { switch(sp, 3) }, (sp, 3));
        drop(s);
        drop(storage);
        // Never started: the entry function never runs.
        let s = stack();
        let (_, storage) = make(&s, finishes_at_once);
        drop(s);
        drop(storage);
        assert_eq!(STARTS.with(Cell::get), 1);
        assert_eq!(CURRENT.with(Cell::get), ptr::null());
    }

    #[test]
    fn re_init_replaces_the_record() {
        let s = stack();
        let (_, mut storage) = make(&s, finishes_at_once);
        // SAFETY: the first context never started; the stack is idle.
        let sp = unsafe { init(s.top(), s.bottom(), doubler, &mut storage) };
        // SAFETY: `sp` is fresh.
        assert_eq!(unsafe { switch(sp, 4) }, (sp, 8));
        assert_eq!(STARTS.with(Cell::get), 0);
    }
}
