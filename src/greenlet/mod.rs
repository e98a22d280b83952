//! Greenlets: symmetric stackful coroutines with the semantics of Python's `greenlet`.
//!
//! Every OS thread has a *main* greenlet (the thread's own stack), created on first use.
//! [`Greenlet::new`] makes a greenlet whose *parent* is the greenlet current at the time.
//! [`Greenlet::switch`] transfers control to any greenlet of the same thread, passing a
//! value: a greenlet that has not started runs its body with that value as argument; a
//! suspended one sees its own pending `switch` call return it. When a greenlet's body
//! returns, its value goes to its parent (its pending `switch` returns it), and the greenlet
//! is dead. Switching to a dead greenlet switches to its nearest live ancestor instead.
//!
//! ```
//! use verdant::greenlet::Greenlet;
//!
//! let ping = Greenlet::new(|first| {
//!     let n = *first.downcast::<u32>().unwrap();
//!     // Switch back to the main greenlet (our parent) with a value...
//!     let next = Greenlet::main().switch(n + 1);
//!     // ...and return the next value we were given, times ten.
//!     Box::new(*next.downcast::<u32>().unwrap() * 10)
//! });
//! let r = ping.switch(1u32);
//! assert_eq!(*r.downcast::<u32>().unwrap(), 2);
//! let r = ping.switch(5u32);
//! assert_eq!(*r.downcast::<u32>().unwrap(), 50);
//! assert!(ping.is_dead());
//! ```
//!
//! ## Panics, throw and kill
//! A panic in a greenlet's body is caught at the root of its stack and re-raised in its
//! parent at the parent's pending `switch` call. [`Greenlet::throw`] raises a panic with the
//! given payload inside a suspended greenlet, at its pending `switch`; if the greenlet does
//! not catch it, the greenlet dies and the panic continues in its parent. [`GreenletExit`]
//! is special: a greenlet that ends by it returns normally, its parent receives the
//! `GreenletExit` value. Dropping the last [`Greenlet`] handle of a suspended greenlet
//! throws `GreenletExit` into it (with the dropping greenlet as its temporary parent), so
//! the destructors on its stack run exactly once.
//!
//! ## How a switch travels
//! ```text
//!   current greenlet C                     target T
//!   ─────────────────                      ────────
//!   CURRENT := T; T.state := running
//!   msg { from: C, payload } ───switch(&msg | thrown?)──▶ moves msg out:
//!                                                      C.sp := from, or, if C died,
//!                                                      release C's stack (and, with no
//!                                                      handle left, its own reference)
//! ```
//! A dead greenlet keeps its released stack (up to a per-thread limit, see `stack::keep`)
//! so that a scheduler re-arming the same record (the hub's spare task records) starts the
//! next body on it without a trip through the stack pool; dropping the record gives the
//! stack to the pool.
//! A switch with `()` (the hub's, and `switch(())`) carries no message at all: the data
//! word is C's own address with the `UNIT` tag bit, and the receiver's value is `()`.
//! Every greenlet owns one strong reference to itself, from its creation (a main one: its
//! first use) until its record is released, so a greenlet is never freed while code still
//! runs on its stack, and neither a switch nor a start nor a death touches a reference
//! count. The record is released once no handle is left: by the drop of the last *handle*
//! (the one that finds the count at 2) of a greenlet that is not running (killing a
//! suspended one first), or, when a running greenlet has no handle left (the count at 1),
//! by whoever receives its next switch (which kills it if it switched away alive, and frees
//! it if that was its final switch). `CURRENT` is a raw, non-owning pointer to the running
//! greenlet (const-initialised, no destructor: the cheapest thread-local there is). A switch to a
//! suspended greenlet is the inline fast path; starting a greenlet, switching to a dead
//! one or to oneself, and the first use on a thread are out of line.
//!
//! ### The own reference and a scheduler's records
//! A spawn + run + join of the hub touched the greenlet's count twice when the own
//! reference lived from the start to the receipt of the final switch: the start took it
//! (the increment as the unstarted greenlet became `CURRENT`: that is not `CURRENT`'s,
//! which owns nothing), and the receipt gave it up (the decrement after the tests of the
//! `UNIT` tag, of the dead state and of the kept stack). The hub's task record, which holds
//! a handle to the greenlet, would keep it alive most of the time, but not always, so the
//! own reference stays for the hub's green threads too:
//! * A detached green thread's record can lose its last handle while the green thread still
//!   runs: its finish drops it just before the final switch (`Hub::exit_last`), which then
//!   runs on the stack of a greenlet that only its own reference keeps.
//! * The kill of a suspended greenlet whose last handle goes (the count left at 2, or 1 at
//!   a switch away) is one test for every greenlet; one that borrowed its life from a
//!   record would need a flag of its own, tested at every handle's drop and every receipt.
//!
//! Giving the own reference up before the final switch, where a second handle provably
//! keeps the greenlet alive until the receipt and its stack is in the kept set already,
//! moves the decrement rather than removing it: the sender then tests the kept stack and
//! the count (or takes a caller's unsafe word for it), `Rc`'s decrement keeps its test of
//! the new count (LLVM drops it neither after a compare of the old one nor for an
//! `assert_unchecked`), and the receiver needs a state of its own to tell such a death from
//! the usual one. Built so (the hub's finish giving it up, on its word, when its record
//! has another handle; a `Released` state that the receipt turns into `Dead`), the sender
//! took 8 instructions more and the receiver 2 fewer, and the code around both was laid
//! out worse: spawn + run + join 307.6 -> 331.8 instructions, the other hand-offs 1 to 2
//! more each.
//!
//! What removes both is the own reference held for the record's whole life: a dead record
//! keeps it for the next life (`rearm` and `Builder::respawn` count it in their test of a
//! unique handle: 2, not 1), a start takes none, and the receipt of a final switch only
//! tests the count for 1 (no handle left: the record is freed, out of line), a load and a
//! compare where the decrement loaded and stored. `Drop for Greenlet` tests the count
//! first (2: the last handle) and then whether the greenlet is running, where it tested
//! the suspended state first: the same two tests, and a dead or unstarted greenlet's last
//! handle gives the own reference up with the record (`drop_last_handle`, out of line). A
//! greenlet made by `Builder::spawn` takes it at its creation, which is not on the hub's
//! usual path (it re-arms). Spawn + run + join 281.6 -> 276.5 instructions (the start's
//! increment and overflow test gone, the receipt's decrement a compare), a yield 80.1 ->
//! 79.1, an event 259.7 -> 259.2, the others the same. The hand-off's test of an unstarted
//! target was merged with that of a suspended one (`Suspended` and `NotStarted` are 0 and
//! 1: one compare, their switches being the same now): spawn + run + join 273.5, but a
//! channel hop 173.6 -> 175.1 (the registers of `channel_hops` allocated worse: a move and
//! a spill more), a queue hop +1.0, a semaphore +0.9; so the unstarted case keeps its own
//! test after the suspended one's.
//!
//! Greenlets are `!Send` and `!Sync`: they never leave the OS thread that made them.
//!
//! ```compile_fail
//! use verdant::greenlet::Greenlet;
//! let g = Greenlet::new(|v| v);
//! std::thread::spawn(move || g.switch(())); // error: `Rc<..>` cannot be sent between threads
//! ```

pub(crate) mod erased;
mod hand_off;
mod local_queue;
mod on_drop;
mod strong_rc;
mod thread_rc;

pub(crate) use hand_off::{HandOffCell, HandOffWriter};
pub(crate) use local_queue::LocalQueue;
pub(crate) use on_drop::{DropAction, OnDrop};
pub(crate) use strong_rc::StrongRc;
pub(crate) use thread_rc::{thread_rc, ThreadRc, ThreadRcSlot};

use crate::context::{self, ContextStorage, StackPointer};
use crate::stack::{self, Stack, StackError, DEFAULT_STACK_SIZE};
use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A value passed by [`Greenlet::switch`] and returned by a greenlet's body.
pub type Value = Box<dyn Any>;

/// The body of a greenlet made by [`Builder::spawn`] or [`Builder::respawn`]: takes the first
/// switch's value and returns the value of its final switch. A greenlet re-armed by
/// [`rearm`] has none stored: its unit body is the type its entry was made for
/// ([`unit_entry`]).
type Body = Box<dyn FnOnce(Value) -> Value>;

// `None` is a null box (no tag word of its own).
const _: () = assert!(std::mem::size_of::<Option<Body>>() == std::mem::size_of::<Body>());

/// Thrown into a greenlet to end it; a greenlet that ends by it counts as returning
/// normally, and its parent receives this value (greenlet's `GreenletExit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GreenletExit;

/// Why [`Greenlet::set_parent`] refused a new parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentError;

impl fmt::Display for ParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot set the parent of a greenlet to itself or to one of its descendants: parent chains must not form a cycle")
    }
}

impl std::error::Error for ParentError {}

/// `Suspended` is 0: the test a green thread's final switch makes of its usual target (a
/// joiner, or the next green thread that parked) needs no comparison of its own
/// (`exit_unit_to`: one instruction fewer per spawn + run + join, and its branch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Suspended,
    NotStarted,
    Running,
    Dead,
}

/// `repr(C)`, what every switch touches first (`sp`, `state`): with the `Rc`'s counts, which
/// a switch reads too, they fit in one cache line or two, where the compiler's order put
/// them on three (a parked green thread's record is out of cache when it is resumed).
#[repr(C)]
struct Inner {
    /// Saved context while suspended (or fresh, before the first switch). Always `Some`
    /// while the state is `Suspended` or `NotStarted`; stale while running or dead.
    sp: Cell<Option<StackPointer>>,
    state: Cell<State>,
    is_main: bool,
    /// Whether `stack` is in this thread's kept set (granted by [`stack::keep`], counted
    /// there until [`stack::unkeep`]): set at the first death that keeps it, and left set
    /// while [`rearm`] runs the next lives on it, so that a record that dies and is re-armed
    /// on its own stack touches the count at neither. Invariants: set only with a stack in
    /// `stack`; a dead greenlet with a stack has it set.
    kept: Cell<bool>,
    /// Its id and name, where its stack's overflow report reads them ([`own_stack`]): a
    /// re-arming spawn on the same stack writes the new id here only. The name is a box,
    /// not a `String`: its `None` is a null pointer, so the re-arming spawn's test of the
    /// old name ([`rearm`]) needs no constant for the niche (16 bytes, not 24).
    owner: stack::Owner,
    stack: Cell<Option<Stack>>,
    /// The value body to run, taken when the greenlet starts (or by [`release`], if it
    /// never does). A greenlet re-armed by [`rearm`] has none: its unit body is its entry's
    /// type ([`unit_entry`]), so that a re-arm stores no body (two stores fewer per
    /// spawn + run + join) and its start reads none.
    body: Cell<Option<Body>>,
    parent: RefCell<Option<Greenlet>>,
    storage: UnsafeCell<ContextStorage>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The stack's overflow report stops reading `owner` (dropped before `stack`).
        if let Some(stack) = self.stack.get_mut() {
            stack.set_owner(0, None);
        }
        // A kept stack leaves the kept set (it may be in use again: re-armed by `rearm`).
        if self.kept.get() {
            stack::unkeep();
        }
        // A dead greenlet's stack is one it kept for reuse (`release`): to the pool. Any
        // other greenlet's stack (never started, or suspended at thread teardown) is unmapped
        // by its own drop.
        if self.state.get() == State::Dead {
            if let Some(stack) = self.stack.get_mut().take() {
                stack::give_back(stack);
            }
        }
    }
}

/// A handle to a greenlet. Cloning it makes another handle to the same greenlet.
#[derive(Clone)]
pub struct Greenlet {
    /// No `Weak` of it is ever made (no `Rc::downgrade` in this module; the field is
    /// private): a strong count of 1 is a unique handle ([`rearm`] tests that count alone).
    inner: Rc<Inner>,
}

enum Payload {
    /// `()`: travels in the data word alone, with no [`Message`] and no box.
    Unit,
    Value(Value),
    Throw(Box<dyn Any + Send>),
}

/// What a switch delivered to the greenlet that receives it (the sender's bookkeeping done).
enum Incoming {
    Unit,
    Value(Value),
    Thrown(Box<dyn Any + Send>),
}

impl Incoming {
    /// As [`Greenlet::switch`] returns it; a thrown payload is raised.
    #[inline(always)]
    fn into_value(self) -> Value {
        match self {
            Incoming::Unit => Box::new(()),
            Incoming::Value(v) => v,
            Incoming::Thrown(p) => raise(p),
        }
    }

    /// For a switch whose caller ignores the value; a thrown payload is raised.
    #[inline(always)]
    fn into_unit(self) {
        match self {
            Incoming::Unit => {}
            Incoming::Value(v) => drop(v),
            Incoming::Thrown(p) => raise(p),
        }
    }
}

/// A [`Payload`] inside a [`Message`]; which field is live is the [`THROWN`] bit of the
/// switch's data word.
union PayloadBox {
    value: ManuallyDrop<Value>,
    thrown: ManuallyDrop<Box<dyn Any + Send>>,
}

/// Tag bit of a greenlet switch's data word: set = the message carries a panic to raise.
const THROWN: usize = 1;
/// Tag bit of a greenlet switch's data word: set = no message, the word is the sender's
/// `*const Inner` (aligned to 8, so the tag bits are free) and the value is `()`.
const UNIT: usize = 2;
/// Both tag bits.
const TAGS: usize = THROWN | UNIT;
const _: () =
    assert!(std::mem::align_of::<Inner>() > TAGS && std::mem::align_of::<Message>() > TAGS);

/// What every switch between greenlets carries (by address, in the switcher's frame or on
/// the dead greenlet's stack for a final switch). The receiver moves it out exactly once
/// (`ptr::read`); the sender never touches it again. Its alignment leaves the tag bit free.
struct Message {
    /// The greenlet that switched (kept alive by its own reference).
    from: *const Inner,
    payload: PayloadBox,
}

impl Message {
    /// The message and the tag bits of its data word.
    #[inline(always)]
    fn new(from: *const Inner, payload: Payload) -> (ManuallyDrop<Message>, usize) {
        let (payload, tag) = match payload {
            Payload::Unit => (
                PayloadBox {
                    value: ManuallyDrop::new(Box::new(())),
                },
                0,
            ),
            Payload::Value(v) => (
                PayloadBox {
                    value: ManuallyDrop::new(v),
                },
                0,
            ),
            Payload::Throw(p) => (
                PayloadBox {
                    thrown: ManuallyDrop::new(p),
                },
                THROWN,
            ),
        };
        (ManuallyDrop::new(Message { from, payload }), tag)
    }
}

/// The first id of the next block: 1, then only ever advanced by [`ID_BLOCK`] (by
/// [`id_block`] alone), so that every block begins one past a multiple of `ID_BLOCK` and
/// ends at the next multiple (the hub's `next_id` tests that instead of loading the end).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How many ids a thread takes from the process-wide counter at a time ([`id_block`]). A
/// power of two (the hub's block test is then a mask).
pub(crate) const ID_BLOCK: u64 = 1024;
const _: () = assert!(ID_BLOCK.is_power_of_two());

/// A block of fresh process-unique ids, `start..end`: each thread (and each hub, for its
/// green threads, which pass theirs to [`Builder::respawn`]) hands out ids from a block of
/// its own, without an atomic operation per id. Ids are unique, not ordered across threads.
/// `start` is one past a multiple of [`ID_BLOCK`] (see [`NEXT_ID`]), `end` the block after.
pub(crate) fn id_block() -> (u64, u64) {
    let start = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
    (start, start + ID_BLOCK)
}

/// A new greenlet id, from this thread's block ([`id_block`]).
fn next_id() -> u64 {
    thread_local! {
        /// The next id of this thread's block and the block's end.
        static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    IDS.try_with(|ids| {
        let (next, end) = ids.get();
        let (next, end) = if next < end { (next, end) } else { id_block() };
        ids.set((next + 1, end));
        next
    })
    // Thread teardown: straight from a block of its own.
    .unwrap_or_else(|_| id_block().0)
}

thread_local! {
    /// Set once the thread is exiting: suspended greenlets are then released without being
    /// unwound (nothing may run any more).
    static TEARDOWN: Cell<bool> = const { Cell::new(false) };
    /// The running greenlet (`Rc::as_ptr`; kept alive by its own reference), null before
    /// first use on this thread and after thread teardown.
    static CURRENT: Cell<*const Inner> = const { Cell::new(ptr::null()) };
    /// Owns the main greenlet; its destructor (thread exit) also releases the running
    /// greenlet's own reference. Once it is destroyed, greenlets of this thread can no
    /// longer run.
    static ROOT: ThreadRoot = const { ThreadRoot { main: Cell::new(None) } };
}

struct ThreadRoot {
    main: Cell<Option<Greenlet>>,
}

impl Drop for ThreadRoot {
    fn drop(&mut self) {
        let cur = CURRENT.with(|c| c.replace(ptr::null()));
        if !cur.is_null() {
            // SAFETY: the running greenlet owns a reference to itself, given up here (it
            // can never run again). Dropped as an `Rc`, not a `Greenlet`: nothing may run
            // any more on this thread. Suspended greenlets give up theirs when their last
            // handle is dropped (see `Drop for Greenlet`).
            drop(unsafe { Rc::from_raw(cur) });
        }
        drop(self.main.take());
    }
}

/// Whether this thread's greenlets can still run (false during thread teardown).
fn can_run() -> bool {
    ROOT.try_with(|_| ()).is_ok() && !TEARDOWN.with(Cell::get)
}

/// Marks this thread as exiting: from now on, dropping the last handle of a suspended
/// greenlet releases its stack without unwinding it.
pub(crate) fn begin_thread_teardown() {
    TEARDOWN.with(|t| t.set(true));
}

fn new_main() -> Greenlet {
    Greenlet {
        inner: Rc::new(Inner {
            owner: stack::Owner {
                id: next_id(),
                name: Some("main".into()),
            },
            is_main: true,
            kept: Cell::new(false),
            state: Cell::new(State::Running),
            sp: Cell::new(None),
            stack: Cell::new(None),
            body: Cell::new(None),
            parent: RefCell::new(None),
            storage: UnsafeCell::new(ContextStorage::default()),
        }),
    }
}

/// The running greenlet of this thread, as a raw pointer (creating the main greenlet on
/// first use). Valid until the next switch.
#[inline]
fn current_raw() -> *const Inner {
    let cur = CURRENT.get();
    if cur.is_null() {
        init_current()
    } else {
        cur
    }
}

#[cold]
#[inline(never)]
fn init_current() -> *const Inner {
    let main = new_main();
    // The main greenlet is running: it owns a reference to itself.
    let raw = Rc::into_raw(main.inner.clone());
    // Panics (cannot access a TLS value during or after destruction) during teardown.
    ROOT.with(|r| r.main.set(Some(main)));
    CURRENT.with(|c| c.set(raw));
    raw
}

/// The running greenlet of this thread (creating the main greenlet on first use).
fn current() -> Greenlet {
    let cur = current_raw();
    // SAFETY: `cur` is the running greenlet, kept alive by its own reference; the
    // increment gives the new handle its own.
    unsafe {
        Rc::increment_strong_count(cur);
        Greenlet {
            inner: Rc::from_raw(cur),
        }
    }
}

/// Configures a greenlet before it is created.
///
/// ```
/// use verdant::greenlet::Builder;
/// let g = Builder::new().name("worker").stack_size(64 * 1024).spawn(|v| v).unwrap();
/// assert_eq!(g.name(), Some("worker"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    parent: Option<Greenlet>,
    /// An id from the caller's own block ([`id_block`]), instead of a new one.
    id: Option<u64>,
}

impl Builder {
    /// Default stack size ([`DEFAULT_STACK_SIZE`]), no name, the current greenlet as parent.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Names the greenlet (shown in `Debug` and in stack-overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Gives the greenlet `id`, which the caller took from a block of [`id_block`] (the hub
    /// gives a green thread's greenlet the green thread's own id).
    pub(crate) fn id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// The greenlet that receives control and the value when this one finishes (default:
    /// the greenlet current when `spawn` is called).
    pub fn parent(mut self, parent: &Greenlet) -> Self {
        self.parent = Some(parent.clone());
        self
    }

    /// Creates the greenlet; it starts running on the first [`Greenlet::switch`] to it.
    /// Fails only when no stack can be allocated.
    pub fn spawn<F>(self, body: F) -> Result<Greenlet, StackError>
    where
        F: FnOnce(Value) -> Value + 'static,
    {
        let (id, stack, sp, storage) = self.new_context(None)?;
        let parent = self.parent.unwrap_or_else(current);
        let inner = Rc::new(Inner {
            owner: stack::Owner {
                id,
                name: self.name.map(String::into_boxed_str),
            },
            is_main: false,
            kept: Cell::new(false),
            state: Cell::new(State::NotStarted),
            sp: Cell::new(Some(sp)),
            stack: Cell::new(Some(stack)),
            body: Cell::new(Some(Box::new(body))),
            parent: RefCell::new(Some(parent)),
            storage: UnsafeCell::new(storage),
        });
        // SAFETY: `Rc::as_ptr` of the new greenlet's `Rc`.
        unsafe { own_stack(Rc::as_ptr(&inner)) };
        // Its own reference, from now until its record is released (see the module docs).
        let _ = Rc::into_raw(Rc::clone(&inner));
        Ok(Greenlet { inner })
    }
}

impl Builder {
    /// A fresh context for a new greenlet: its id, its stack (the one the record kept, or a
    /// pooled one if possible) and the initial frame on it.
    /// `kept`: the stack a dead record kept ([`stack::keep`], already reported to
    /// [`stack::unkeep`]), used again if it has the size asked for, else given back. The
    /// caller points the stack's overflow report at the greenlet once the stack is in it
    /// ([`own_stack`]).
    fn new_context(
        &self,
        kept: Option<Stack>,
    ) -> Result<(u64, Stack, StackPointer, ContextStorage), StackError> {
        let size = self.stack_size.unwrap_or(DEFAULT_STACK_SIZE);
        let stack = match kept {
            Some(stack) if stack.fits(size) => stack,
            other => {
                if let Some(stack) = other {
                    stack::give_back(stack);
                }
                stack::take(size)?
            }
        };
        let id = self.id.unwrap_or_else(next_id);
        let mut storage = ContextStorage::default();
        // SAFETY: the stack is fresh or pooled and owned by the new greenlet until it is
        // dead; nothing runs on it.
        let sp =
            unsafe { context::init(stack.top(), stack.bottom(), greenlet_entry, &mut storage) };
        Ok((id, stack, sp, storage))
    }

    /// Like [`spawn`](Self::spawn) with `parent` as the parent (the builder's own is not
    /// used), into `slot`: when `slot` is a dead greenlet with no other handle, its record
    /// is reused (a spawn that allocates nothing, on the stack the record kept at its death
    /// or a pooled one, and that keeps its parent handle when the parent is the same);
    /// otherwise `slot` is replaced by a new greenlet. On error `slot` is a dead greenlet
    /// still.
    pub(crate) fn respawn<F>(
        self,
        slot: &mut Greenlet,
        parent: &Greenlet,
        body: F,
    ) -> Result<(), StackError>
    where
        F: FnOnce(Value) -> Value + 'static,
    {
        let reusable = slot.inner.state.get() == State::Dead
            && !slot.inner.is_main
            && Rc::strong_count(&slot.inner) == 2;
        // SAFETY: as in `rearm`: `slot` is the only handle (the other reference is the
        // greenlet's own, which nothing uses while it is dead) and no weak one exists.
        let inner = reusable.then(|| unsafe { &mut *Rc::as_ptr(&slot.inner).cast_mut() });
        match inner {
            Some(inner) => {
                // The stack it kept at its death (`release`), if it did: the new life runs
                // on it when the size fits, without a trip through the pool.
                let kept = inner.stack.get_mut().take();
                if inner.kept.replace(false) {
                    stack::unkeep();
                }
                let (id, stack, sp, storage) = self.new_context(kept)?;
                inner.owner.id = id;
                inner.owner.name = self.name.map(String::into_boxed_str);
                inner.state.set(State::NotStarted);
                inner.sp.set(Some(sp));
                inner.stack.set(Some(stack));
                inner.body.set(Some(Box::new(body)));
                let old_parent = inner.parent.get_mut();
                if !old_parent
                    .as_ref()
                    .is_some_and(|p| Rc::ptr_eq(&p.inner, &parent.inner))
                {
                    *old_parent = Some(parent.clone());
                }
                *inner.storage.get_mut() = storage;
                // SAFETY: `Rc::as_ptr` of the greenlet's `Rc` (`inner` is not used again).
                unsafe { own_stack(Rc::as_ptr(&slot.inner)) };
                Ok(())
            }
            _ => {
                *slot = self.parent(parent).spawn(body)?;
                Ok(())
            }
        }
    }
}

/// Re-arms `slot` in place for a new life running the unit body `B` (the value of the
/// first switch to it is dropped; its final switch carries `()`), from its own entry
/// ([`unit_entry`]): the hub's spawn path, which allocates nothing. Granted when `slot` is a dead
/// greenlet (not a main one) with no other handle; then it gets `id`, `name` and
/// `parent`, and runs on the stack it kept at its death when that one has `stack_size`
/// usable bytes (else on a pooled or new one), and `Ok(true)` is returned. Otherwise
/// nothing changes and `Ok(false)` is returned (the caller makes a new greenlet). On error
/// `slot` is a dead greenlet still.
///
/// What [`Builder::respawn`] does for a reusable slot, without a builder to move around
/// and with the context made in the record's own fields.
///
/// Always inlined: its one caller, the hub's spawn, is generic, and a call would cost
/// more than the parts it inlines away (its argument tests, the record's fields kept in
/// registers).
#[inline(always)]
pub(crate) fn rearm<B: UnitBody>(
    slot: &mut Greenlet,
    parent: &Greenlet,
    id: u64,
    stack_size: usize,
    name: Option<&str>,
) -> Result<bool, StackError> {
    // The only handle: `Rc::get_mut` without its test of the weak count (no `Weak` of a
    // greenlet is ever made: see `Greenlet::inner`), the other reference being the
    // greenlet's own (kept while it is dead: see the module docs).
    if Rc::strong_count(&slot.inner) != 2 {
        return Ok(false);
    }
    // With the `Rc`'s provenance, not a reference's: the stack's overflow report reads the
    // greenlet's `owner` through pointers made from it (`own_stack`).
    let raw = Rc::as_ptr(&slot.inner);
    // SAFETY: `slot` is the greenlet's only strong handle (the other strong reference is
    // the greenlet's own, which nothing reaches through while it is dead: only the drop of
    // its last handle, or a receipt of a switch from it, which cannot happen while `slot`
    // is borrowed here) and no weak one exists (this module never downgrades a greenlet's
    // `Rc`, and no other module can reach it), so nothing else can reach the record while
    // `slot` is borrowed here, as `Rc::get_mut` would have found; `Rc::as_ptr` keeps the
    // (mutable) provenance of the `Rc`'s allocation.
    let inner = unsafe { &mut *raw.cast_mut() };
    // A main greenlet never dies (it runs no body): no test for it.
    if inner.state.get() != State::Dead {
        return Ok(false);
    }
    debug_assert!(!inner.is_main, "rearm: a main greenlet is dead");
    // The stack it kept at its death stays in place when it fits, and in the kept set (see
    // `Inner::kept`: a dead greenlet's stack is kept, and counted so, whatever its record
    // does next; no count to touch here, nor at the next death); else another one goes
    // there.
    let kept = inner.stack.get_mut();
    if !matches!(kept, Some(stack) if stack.fits(stack_size)) {
        // SAFETY: `raw` is `Rc::as_ptr` of the greenlet's `Rc`.
        let owner = unsafe { ptr::addr_of!((*raw).owner) };
        *kept = Some(rearm_other_stack(
            kept.take(),
            &inner.kept,
            owner,
            stack_size,
        )?);
    }
    // A kept stack's overflow report reads `inner.owner` already (`own_stack`): only the
    // id changes there, below.
    let stack = kept.as_ref().expect("a stack was just put in place");
    // The storage was reset when the greenlet died (`release`).
    // SAFETY: the stack is the record's own kept one, pooled or fresh, owned by this
    // greenlet until it is dead again; nothing runs on it.
    let sp = unsafe {
        context::init_for::<UnitEntry<B>>(stack.top(), stack.bottom(), inner.storage.get_mut())
    };
    inner.sp.set(Some(sp));
    inner.owner.id = id;
    if name.is_some() || inner.owner.name.is_some() {
        inner.owner.name = name.map(Box::from);
    }
    inner.state.set(State::NotStarted);
    // No body to store: the entry was made for it (`unit_entry::<B>`). A dead greenlet's
    // value body was taken when it started (or by `release`, if it never did).
    debug_assert!(
        inner.body.get_mut().is_none(),
        "rearm: a dead greenlet still had a value body"
    );
    let old_parent = inner.parent.get_mut();
    // The parent is kept when it is the same one (the hub, always): one compare of the
    // records' addresses (a `None` is a null one, never `parent`'s).
    let old_ptr = old_parent
        .as_ref()
        .map_or(ptr::null(), |p| Rc::as_ptr(&p.inner));
    if old_ptr != Rc::as_ptr(&parent.inner) {
        *old_parent = Some(parent.clone());
    }
    Ok(true)
}

/// [`rearm`] without a kept stack, or with one of another size: that one leaves its dead
/// owner (and the kept set: `in_kept_set` is the owner's [`Inner::kept`], cleared) for the
/// pool, and another is taken, not in the kept set, its overflow report reading `owner`
/// (the greenlet's `Inner::owner`, as [`own_stack`] points it).
#[cold]
#[inline(never)]
fn rearm_other_stack(
    kept: Option<Stack>,
    in_kept_set: &Cell<bool>,
    owner: *const stack::Owner,
    stack_size: usize,
) -> Result<Stack, StackError> {
    if let Some(kept) = kept {
        debug_assert!(in_kept_set.get(), "a dead greenlet's stack is kept");
        stack::unkeep();
        stack::give_back(kept);
    }
    // Cleared before the take, which may fail: the greenlet has no stack then.
    in_kept_set.set(false);
    let stack = stack::take(stack_size)?;
    // SAFETY: `owner` is as `own_stack` points a stack at, and the stack goes into its
    // greenlet (the caller's `rearm`).
    unsafe { stack.set_owner_at(owner) };
    Ok(stack)
}

/// Points the overflow report of `inner`'s stack at `inner.owner`: for a stack that has
/// just entered the greenlet (a re-armed record's kept stack points at it already).
///
/// # Safety
/// `inner` must be `Rc::as_ptr` of a live greenlet's `Rc` (a pointer with the `Rc`'s own
/// provenance, not a reference's: the report may read `owner` through it after writes
/// through a later `&mut Inner`).
#[inline(never)]
unsafe fn own_stack(inner: *const Inner) {
    // SAFETY: per the contract, a live greenlet. A `Cell`'s contents are only ever moved in
    // and out, never borrowed; this borrow ends before anything else touches the cell
    // (greenlets are !Send).
    if let Some(stack) = unsafe { (*(*inner).stack.as_ptr()).as_ref() } {
        // SAFETY: the greenlet lives in its `Rc` (a fixed address) while the stack is in
        // it, and `owner` is only written through `&mut Inner` (rearm, respawn), never
        // borrowed across a switch. The stack leaves it only for the pool
        // (`stack::give_back` sets another owner), in a re-arm or respawn (which point it
        // here again, or give it back), or with the record's drop, which sets another
        // owner before `owner` is dropped (`Drop for Inner`).
        unsafe { stack.set_owner_at(ptr::addr_of!((*inner).owner)) };
    }
}

/// Boxes a value for a switch, without boxing twice if it already is a [`Value`]. The type
/// test is on the static type, so it folds away at compile time (and `()` is not boxed at
/// all: a box of a zero-sized type does not allocate).
#[inline(always)]
fn into_value<T: Any>(value: T) -> Value {
    let mut value = Some(value);
    match (&mut value as &mut dyn Any).downcast_mut::<Option<Value>>() {
        Some(already) => already.take().expect("just set"),
        None => Box::new(value.take().expect("just set")),
    }
}

/// The payload of a switch with `value`: [`Payload::Unit`] for `()` (decided on the static
/// type, at compile time), otherwise a [`Value`] boxed once.
#[inline(always)]
fn into_payload<T: Any>(value: T) -> Payload {
    if (&value as &dyn Any).is::<()>() {
        Payload::Unit
    } else {
        Payload::Value(into_value(value))
    }
}

impl Greenlet {
    /// Creates a greenlet running `body` with the default stack size, parented to the
    /// current greenlet.
    ///
    /// # Panics
    /// If no stack can be allocated; use [`Builder::spawn`] to handle that as an error.
    pub fn new<F>(body: F) -> Greenlet
    where
        F: FnOnce(Value) -> Value + 'static,
    {
        match Builder::new().spawn(body) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// The greenlet running now on this thread (greenlet's `getcurrent()`).
    pub fn current() -> Greenlet {
        current()
    }

    /// This thread's main greenlet: the thread's own stack.
    pub fn main() -> Greenlet {
        current_raw();
        ROOT.with(|r| {
            let main = r
                .main
                .take()
                .expect("main greenlet exists once CURRENT is set");
            let out = main.clone();
            r.main.set(Some(main));
            out
        })
    }

    /// Transfers control to this greenlet, handing it `value` (boxed unless it already is a
    /// [`Value`]). Returns the value passed by whoever switches back to the caller.
    ///
    /// If the target has not started, its body runs with `value` as argument. If it is
    /// dead, control goes to its nearest live ancestor instead. Switching to the current
    /// greenlet returns `value` at once. A panic that reaches the caller (a child that
    /// panicked, or a [`throw`](Self::throw) aimed at the caller) resumes here.
    #[inline]
    pub fn switch<T: Any>(&self, value: T) -> Value {
        switch_to(self, into_payload(value)).into_value()
    }

    /// [`switch_into`](Self::switch_into) with `()`, ignoring the value that comes back.
    /// Always inlined, as [`switch_to`]: the hub's hand-off calls it once per switch.
    #[inline(always)]
    pub(crate) fn resume_into(self) {
        self.switch_into_payload(Payload::Unit).into_unit()
    }

    /// Puts `owner` into `slot` and switches with `()` to the greenlet `greenlet_of(&owner)`
    /// (ignoring the value that comes back), taking no handle to it: what keeps it alive
    /// is `owner`, now in `slot`, where nothing can take it before control has left (only
    /// this function runs in between). A scheduler hands control to its next green thread
    /// this way with no reference count traffic, and keeps no handle to it on the stack of
    /// the previous one.
    ///
    /// `greenlet_of` is a plain function, so the greenlet it returns is part of `owner` or
    /// outlives it. If `slot` is not empty, its value is dropped first, which may run any
    /// code: that (rare) case takes a handle for the switch, as [`resume_into`].
    #[inline(always)]
    pub(crate) fn resume_held_in<T>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) {
        Self::resume_held_in_with::<T, false>(slot, owner, greenlet_of)
    }

    /// [`resume_held_in`](Self::resume_held_in) into a `slot` the caller knows is empty
    /// (it took its value out, and nothing can have refilled it since): the slot is
    /// neither read nor tested. A value found there all the same would be forgotten
    /// (leaked, never dropped); debug builds assert that there is none.
    #[inline(always)]
    pub(crate) fn resume_held_in_empty<T>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) {
        Self::resume_held_in_with::<T, true>(slot, owner, greenlet_of)
    }

    #[inline(always)]
    fn resume_held_in_with<T, const EMPTY: bool>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) {
        let target = Rc::as_ptr(&greenlet_of(&owner).inner);
        let cur = CURRENT.get();
        // SAFETY: `target` is alive: `owner` keeps it alive.
        let state = unsafe { (*target).state.get() };
        let previous = slot.replace(Some(owner));
        let previous = if EMPTY {
            debug_assert!(
                previous.is_none(),
                "resume_held_in_empty: the slot was not empty"
            );
            // Not read at all in a release build (a dead load); the `None` in its place is
            // a constant, so its tests below fold away.
            std::mem::forget(previous);
            None
        } else {
            previous
        };
        // The unstarted target's case below tests `cur` a second time (LLVM does not
        // thread the first test's failure past it). Nested under one test of `cur` (the
        // unstarted case marked cold, else LLVM tests it first), it does not: spawn + run +
        // join 307.6 -> 305.6 and a channel hop 175.6 -> 174.6 instructions, but a yield
        // 81.1 -> 82.1 (its loop then loads the thread-local's offset twice instead of
        // keeping it in a register), so it was left as it is. Merged with the suspended
        // case (the same switch now: see the module docs), it costs the other hand-offs.
        if previous.is_none() && state == State::Suspended && !cur.is_null() {
            // `None`: nothing to drop, and no test of it left for after the switch.
            std::mem::forget(previous);
            // SAFETY: `cur` is the running greenlet; the target is a suspended greenlet of
            // this thread (greenlets are !Send), so not the caller, and it holds its own
            // reference; `owner` in `slot` keeps it alive until it runs: nothing but this
            // switch runs before control leaves.
            unsafe { switch_raw_ptr::<false>(cur, target, Payload::Unit) }.into_unit()
        } else if previous.is_none() && state == State::NotStarted && !cur.is_null() {
            // A spawned green thread's first run (tested after the suspended case, which
            // keeps its instructions): the same switch, with no reference count touched (a
            // greenlet holds its own reference from its creation: see the module docs).
            std::mem::forget(previous);
            // SAFETY: as above; the unstarted target has its fresh context saved.
            unsafe { switch_raw_ptr::<false>(cur, target, Payload::Unit) }.into_unit()
        } else {
            // SAFETY: `target` is alive (`owner`, in `slot`, keeps it: nothing ran since).
            let handle = unsafe { new_handle(target) };
            drop(previous);
            handle.resume_into()
        }
    }

    /// Ends the running greenlet now, as if its body had returned `()`, with its final switch
    /// going to `greenlet_of(&owner)` instead of its parent: `owner` is put into
    /// `slot` (what the slot held before is dropped first), which keeps the target alive
    /// until it runs, with no handle taken, and control never comes back. If the target
    /// cannot be switched to (not suspended or unstarted, or no longer in the slot once the
    /// old value was dropped), the final switch goes to the parent instead.
    ///
    /// The hub's green threads end this way, skipping the returns through their body's
    /// frames and the final switch's general case. Those frames are abandoned: nothing left
    /// in them is dropped (it is leaked; the stack is released by whoever receives the
    /// final switch). The caller must be a greenlet's body with nothing left to drop or
    /// unlink, in any of its frames, and not the main greenlet (which cannot end; that is
    /// checked).
    #[inline(always)]
    pub(crate) fn exit_held_in<T>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) -> ! {
        Self::exit_held_in_with::<T, false>(slot, owner, greenlet_of)
    }

    /// [`exit_held_in`](Self::exit_held_in) into a `slot` the caller knows is empty (it
    /// took its value out, and nothing can have refilled it since): the slot is neither
    /// read nor tested, and the target is read from `owner` before it goes in. A value
    /// found there all the same would be forgotten (leaked, never dropped); debug builds
    /// assert that there is none.
    #[inline(always)]
    pub(crate) fn exit_held_in_empty<T>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) -> ! {
        Self::exit_held_in_with::<T, true>(slot, owner, greenlet_of)
    }

    #[inline(always)]
    fn exit_held_in_with<T, const EMPTY: bool>(
        slot: &Cell<Option<T>>,
        owner: T,
        greenlet_of: fn(&T) -> &Greenlet,
    ) -> ! {
        // The address of `CURRENT`, read here and written by the final switch: one
        // thread-local look-up, at the top, where the compiler inlines it (the write's own
        // look-up, after the tests below, was left as a call of some 9 instructions).
        let current = CURRENT.with(Cell::as_ptr);
        // SAFETY: this thread's `CURRENT`, read at once (nothing holds a reference into a
        // `Cell`).
        let me = unsafe { *current };
        // SAFETY: not null: the running greenlet, alive by its own reference.
        if me.is_null() || unsafe { (*me).is_main } {
            exit_outside_body(owner);
        }
        let target = if EMPTY {
            let target = Rc::as_ptr(&greenlet_of(&owner).inner);
            let previous = slot.replace(Some(owner));
            debug_assert!(
                previous.is_none(),
                "exit_held_in_empty: the slot was not empty"
            );
            // Not read at all in a release build (a dead load).
            std::mem::forget(previous);
            target
        } else {
            let previous = slot.replace(Some(owner));
            if previous.is_some() {
                // May run any code (it may even refill the slot): the target is read after
                // it.
                drop(previous);
            } else {
                std::mem::forget(previous);
            }
            // SAFETY: a `Cell`'s contents are only ever moved in and out, never borrowed,
            // and this read ends before anything else touches the cell (greenlets are
            // !Send).
            match unsafe { &*slot.as_ptr() } {
                Some(owner) => Rc::as_ptr(&greenlet_of(owner).inner),
                None => ptr::null(),
            }
        };
        // SAFETY: the running greenlet, alive by its own reference; its body is over (per
        // this function's contract) and it never runs again. `target`, if not null, is
        // kept alive by the owner in `slot`, which nothing can take before control has
        // left: only the final switch runs in between.
        unsafe { exit_unit_to(&*me, target, current) }
    }
}

/// [`Greenlet::exit_held_in`] called outside a greenlet's body: `owner` is dropped, and
/// the caller panics. Out of line, with `owner` moved in: the caller's frame keeps no
/// landing pad (and no spill) to drop it.
#[cold]
#[inline(never)]
fn exit_outside_body<T>(owner: T) -> ! {
    drop(owner);
    panic!("Greenlet::exit_held_in: called outside a greenlet's body (on a thread's main greenlet, which cannot end)");
}

impl Greenlet {
    /// Like [`switch`](Self::switch), but consumes this handle: it is given up as control
    /// leaves the caller, so the caller keeps no handle to the target while suspended (a
    /// scheduler handing control from one green thread straight to the next must not keep
    /// the next one alive from the stack of the previous one).
    ///
    /// ```
    /// use verdant::greenlet::Greenlet;
    /// let main = Greenlet::current();
    /// let g = Greenlet::new(move |_| {
    ///     main.switch(1u8);
    ///     Box::new(())
    /// });
    /// g.switch(()); // started: now suspended in its switch to main
    /// let r = g.clone().switch_into(());
    /// assert!(r.is::<()>() && g.is_dead());
    /// ```
    #[inline]
    pub fn switch_into<T: Any>(self, value: T) -> Value {
        self.switch_into_payload(into_payload(value)).into_value()
    }

    #[inline(always)]
    fn switch_into_payload(self, payload: Payload) -> Incoming {
        let cur = CURRENT.get();
        let state = self.inner.state.get();
        if (state == State::Suspended || state == State::NotStarted) && !cur.is_null() {
            let me = ManuallyDrop::new(self);
            // SAFETY: `cur` is the running greenlet; the target is a suspended greenlet of
            // this thread, or one that starts now (not the caller: that one is running),
            // and it holds its own reference either way (from its creation); the forgotten
            // handle's reference is handed over.
            unsafe { switch_raw_ptr::<true>(cur, Rc::as_ptr(&me.inner), payload) }
        } else {
            // Dead or the caller itself: the handle is kept for the call.
            let r = switch_cold(&self, payload);
            drop(self);
            r
        }
    }

    /// Raises a panic with `payload` inside this greenlet, at its pending `switch`
    /// (greenlet's `throw`), and transfers control to it. If the greenlet has not started,
    /// it never runs: it dies at once and the panic goes to its parent (or, for
    /// [`GreenletExit`], the parent receives the `GreenletExit` value). If it is dead, the
    /// panic is raised in its nearest live ancestor.
    pub fn throw(&self, payload: impl Any + Send) -> Value {
        switch_to(self, Payload::Throw(Box::new(payload))).into_value()
    }

    /// Whether the body has finished (returned, or ended by a panic).
    pub fn is_dead(&self) -> bool {
        self.inner.state.get() == State::Dead
    }

    /// Whether the greenlet has started running (the main greenlet always has).
    pub fn is_started(&self) -> bool {
        self.inner.state.get() != State::NotStarted
    }

    /// Whether this is the running greenlet.
    pub fn is_current(&self) -> bool {
        self.inner.state.get() == State::Running
    }

    /// Whether this is its thread's main greenlet.
    pub fn is_main(&self) -> bool {
        self.inner.is_main
    }

    /// Usable bytes of the greenlet's stack; `None` for a main greenlet or a greenlet
    /// without a stack (one whose stack was released). For tests that check which stack a
    /// green thread got without overflowing a wrong one.
    #[cfg(test)]
    pub(crate) fn stack_size(&self) -> Option<usize> {
        let stack = self.inner.stack.take();
        let size = stack.as_ref().map(Stack::size);
        self.inner.stack.set(stack);
        size
    }

    /// The greenlet's process-unique id.
    pub fn id(&self) -> u64 {
        self.inner.owner.id
    }

    /// The name given with [`Builder::name`] (`"main"` for a main greenlet).
    pub fn name(&self) -> Option<&str> {
        self.inner.owner.name.as_deref()
    }

    /// The greenlet that receives control when this one finishes (`None` for main).
    pub fn parent(&self) -> Option<Greenlet> {
        self.inner.parent.borrow().clone()
    }

    /// Changes the parent. Refused if it would make a cycle (the new parent is this
    /// greenlet or one of its descendants), or for a main greenlet, which has none.
    pub fn set_parent(&self, parent: &Greenlet) -> Result<(), ParentError> {
        if self.inner.is_main {
            return Err(ParentError);
        }
        let mut p = Some(parent.clone());
        while let Some(g) = p {
            if Rc::ptr_eq(&g.inner, &self.inner) {
                return Err(ParentError);
            }
            p = g.parent();
        }
        *self.inner.parent.borrow_mut() = Some(parent.clone());
        Ok(())
    }

    /// Whether two handles refer to the same greenlet.
    pub fn ptr_eq(&self, other: &Greenlet) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other)
    }
}

impl Eq for Greenlet {}

impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Greenlet")
            .field("id", &self.inner.owner.id)
            .field("name", &self.inner.owner.name)
            .field("state", &self.inner.state.get())
            .finish()
    }
}

impl Drop for Greenlet {
    fn drop(&mut self) {
        // The last handle (the other reference is the greenlet's own) of a greenlet that
        // is not running: see `drop_last_handle`. A running one's own reference is given
        // up when it dies or switches away with no handle left (`arrived_from`).
        if Rc::strong_count(&self.inner) == 2 && self.inner.state.get() != State::Running {
            drop_last_handle(self);
        }
    }
}

/// The last handle of a greenlet that is not running is being dropped: a suspended one is
/// killed first so its stack unwinds (during thread teardown, ROOT destroyed or TEARDOWN
/// set, nothing can run any more: it is released without unwinding); then its own
/// reference is given up, and the handle's drop frees the record. An unstarted one's body
/// is dropped with its record; a dead one's kept stack goes to the pool (`Drop for
/// Inner`). The kill runs code that may take new handles and keep them: the count is
/// tested again after it, and a greenlet that has one left keeps its own reference (the
/// drop of that handle releases it).
#[cold]
#[inline(never)]
fn drop_last_handle(g: &Greenlet) {
    if g.inner.state.get() == State::Suspended && can_run() {
        kill_on_drop(g);
    }
    // Dead (killed), still suspended (it refused to die, or the thread is exiting), or
    // unstarted or dead already; not running (the kill's final switch came back here).
    if Rc::strong_count(&g.inner) == 2 && g.inner.state.get() != State::Running {
        // SAFETY: every greenlet owns one reference to itself until its record is
        // released, which is here: the other reference is this handle, which keeps it
        // alive until the end of its drop.
        unsafe { Rc::decrement_strong_count(Rc::as_ptr(&g.inner)) };
    }
}

/// Unwinds a suspended greenlet whose last handle is being dropped. If it refuses to die
/// (catches `GreenletExit` eight times), it is left suspended and freed without unwinding.
#[cold]
fn kill_on_drop(g: &Greenlet) {
    let me = current();
    // Temporarily parent it to us so that control comes back here when it dies.
    let old_parent = g.inner.parent.replace(Some(me));
    let mut rounds = 0;
    while g.inner.state.get() == State::Suspended && rounds < 8 {
        rounds += 1;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            switch_to(g, Payload::Throw(Box::new(GreenletExit))).into_unit()
        }));
        // A panic other than GreenletExit escaping the dying greenlet is dropped: drop must
        // not panic, and the greenlet is dead either way.
        drop(result);
    }
    drop(g.inner.parent.replace(old_parent));
}

/// The first live greenlet among `g` and its ancestors.
fn live_target(g: &Greenlet) -> Greenlet {
    let mut t = g.clone();
    while t.inner.state.get() == State::Dead {
        let parent = t.parent().expect("a main greenlet is never dead");
        t = parent;
    }
    t
}

/// Switches to `target` with `payload`; returns (or raises) what the next switch back to
/// the caller carries. Always inlined: the fast path is a few dozen instructions, and
/// having the switch at the caller's call site keeps `ret`s out of the way between
/// switches (a `ret` after a stack change mispredicts).
#[inline(always)]
fn switch_to(target: &Greenlet, payload: Payload) -> Incoming {
    let cur = CURRENT.get();
    // A suspended target is live, not the caller and has a saved context; a non-null
    // CURRENT means this thread's greenlets can run. Everything else is the cold path.
    if target.inner.state.get() == State::Suspended && !cur.is_null() {
        // SAFETY: `cur` is the running greenlet; `target` is a suspended greenlet of this
        // thread (greenlets are !Send).
        unsafe { switch_raw(cur, &target.inner, payload) }
    } else {
        switch_cold(target, payload)
    }
}

/// Switching to an unstarted, dead or running (our own) greenlet, or the first use on a
/// thread.
#[cold]
#[inline(never)]
fn switch_cold(target: &Greenlet, payload: Payload) -> Incoming {
    let target = live_target(target);
    let cur = current_raw();
    if ptr::eq(cur, Rc::as_ptr(&target.inner)) {
        return match payload {
            Payload::Unit => Incoming::Unit,
            Payload::Value(v) => Incoming::Value(v),
            Payload::Throw(p) => panic::resume_unwind(p),
        };
    }
    if target.inner.state.get() == State::NotStarted {
        if let Payload::Throw(p) = payload {
            return throw_unstarted(&target, p);
        }
    }
    // SAFETY: `cur` is the running greenlet; `target` is live (suspended, or not started),
    // holding its own reference (from its creation), not the caller, and of this thread.
    unsafe { switch_raw(cur, &target.inner, payload) }
}

/// The switch proper: `cur` (running) becomes suspended, `target` running.
///
/// # Safety
/// `cur` must be CURRENT's (non-null) value; `target` a greenlet of this thread other than
/// `cur`, suspended, or not started but already holding its own reference.
#[inline(always)]
unsafe fn switch_raw(cur: *const Inner, target: &Rc<Inner>, payload: Payload) -> Incoming {
    // SAFETY: per the contract.
    unsafe { switch_raw_ptr::<false>(cur, Rc::as_ptr(target), payload) }
}

/// [`switch_raw`] on a raw target; with `RELEASE`, also gives up one handle's reference
/// to the target once it is marked running, before control leaves (see
/// [`Greenlet::switch_into`]).
///
/// # Safety
/// As [`switch_raw`], `target` being the `Rc::as_ptr` of a live `Rc<Inner>`; with
/// `RELEASE`, the caller owns one strong reference to it (a forgotten handle), and the
/// target holds its own (it is suspended, or started and holding it already).
#[inline(always)]
unsafe fn switch_raw_ptr<const RELEASE: bool>(
    cur: *const Inner,
    target: *const Inner,
    payload: Payload,
) -> Incoming {
    // SAFETY: per the contract, `cur` is running, so it holds its own reference.
    let me = unsafe { &*cur };
    // SAFETY: per the contract, `target` is alive.
    let t = unsafe { &*target };
    // SAFETY: suspended and not-started greenlets always have a saved context.
    let sp = unsafe { t.sp.get().unwrap_unchecked() };
    me.state.set(State::Suspended);
    t.state.set(State::Running);
    CURRENT.with(|c| c.set(target));
    if RELEASE {
        // SAFETY: the caller's reference is given up; the target's own keeps it alive while
        // it runs. It is running now, so this is not a handle drop that would kill it (if
        // no handle is left, it is killed when it next switches away, by `receive`).
        unsafe { Rc::decrement_strong_count(target) };
    }
    let (from, data) = if matches!(payload, Payload::Unit) {
        // Consumed before the switch: nothing of it is left to drop afterwards (the asm
        // call hides from the optimiser that it was `Unit`).
        std::mem::forget(payload);
        // SAFETY: as below, with no message: the data word is our own (aligned) address.
        unsafe { context::switch(sp, cur as usize | UNIT) }
    } else {
        // Moved out by the receiver, so never dropped here.
        let (mut msg, tag) = Message::new(cur, payload);
        // SAFETY: `sp` is the target's saved (or fresh) context; the target is now marked
        // running, so nothing resumes `sp` again. `msg` lives in this frame until something
        // switches back here, and the receiver moves it out before that.
        unsafe { context::switch(sp, (&mut *msg as *mut Message as usize) | tag) }
    };
    // SAFETY: every switch to a greenlet passes a unit word or the address of a live `Message`.
    unsafe { receive(from, data) }
}

/// Bookkeeping on arrival in a greenlet: record where the previous greenlet was suspended
/// (or, if it died, release its stack, and its own reference if it has no handle left; if
/// it is alive with no handle left, kill it), then take the payload.
///
/// # Safety
/// `data` must be the [`UNIT`]-tagged address of the live greenlet that switched to us,
/// or the tagged address of its live, not yet received `Message`; `from` the context it
/// switched from.
#[inline(always)]
unsafe fn receive(from: StackPointer, data: usize) -> Incoming {
    if data & UNIT != 0 {
        // No message: the bookkeeping comes first, with nothing of the payload alive
        // across it (the hot hand-off path: nothing to keep for an unwind).
        // SAFETY: per the contract, the word is the sender's address with the `UNIT` bit
        // (and only that one) set. Subtracted rather than masked: the constant folds into
        // the field offsets of the accesses that follow.
        unsafe { arrived_from((data - UNIT) as *const Inner, from) };
        return Incoming::Unit;
    }
    // SAFETY: per the contract; moved out exactly once, the sender never reads it again.
    // Read before the bookkeeping: a dead sender's message lives on the stack it frees.
    let Message {
        from: prev,
        payload,
    } = unsafe { ptr::read((data & !TAGS) as *const Message) };
    let incoming = if data & THROWN == 0 {
        // SAFETY: untagged: the value field is live.
        Incoming::Value(ManuallyDrop::into_inner(unsafe { payload.value }))
    } else {
        // SAFETY: tagged: the thrown field is live.
        Incoming::Thrown(ManuallyDrop::into_inner(unsafe { payload.thrown }))
    };
    // SAFETY: per the contract, `prev` is the live greenlet that switched to us.
    unsafe { arrived_from(prev, from) };
    incoming
}

/// The bookkeeping of [`receive`] for the greenlet `prev` that switched to us from `from`.
///
/// # Safety
/// `prev` must be the greenlet that switched to us, not yet received (so alive: a greenlet
/// holds its own reference until its record is released, at the earliest here).
#[inline(always)]
unsafe fn arrived_from(prev: *const Inner, from: StackPointer) {
    // SAFETY: per the contract.
    if unsafe { arrived_from_live(prev, from) } {
        return;
    }
    // SAFETY: per the contract.
    if unsafe { (*prev).state.get() } == State::Dead {
        // SAFETY: as above; `prev` is dead and this is the receipt of its final switch.
        unsafe { release_dead(prev) };
    } else {
        // SAFETY: as above; live, with no handle but its own (its context recorded by
        // `arrived_from_live`).
        unsafe { kill_unreferenced(prev) };
    }
}

/// The usual case of [`arrived_from`], with no call: `prev` is not dead and keeps a handle
/// besides its own, and its context is recorded (`true`). Otherwise `false`: the rest is
/// [`arrived_from`]'s, which calls this first.
///
/// # Safety
/// As [`arrived_from`].
#[inline(always)]
unsafe fn arrived_from_live(prev: *const Inner, from: StackPointer) -> bool {
    // SAFETY: per the contract.
    let prev_inner = unsafe { &*prev };
    if prev_inner.state.get() == State::Dead {
        return false;
    }
    prev_inner.sp.set(Some(from));
    // SAFETY: as above; this only reads the count.
    let rc = ManuallyDrop::new(unsafe { Rc::from_raw(prev) });
    Rc::strong_count(&rc) != 1
}

/// A new handle to the greenlet at `raw` (strong count + 1).
///
/// # Safety
/// `raw` must be the `Rc::as_ptr` of a live `Rc<Inner>`.
unsafe fn new_handle(raw: *const Inner) -> Greenlet {
    // SAFETY: per the contract.
    unsafe {
        Rc::increment_strong_count(raw);
        Greenlet {
            inner: Rc::from_raw(raw),
        }
    }
}

/// The final switch of `raw` has been received: release its stack, and, if no handle is
/// left, the reference it holds to itself (which frees the record). Inlined into
/// [`arrived_from`]'s (untaken, on a hand-off between live greenlets) branch: the usual case
/// is a few instructions, with the rare ones out of line.
///
/// # Safety
/// `raw` must be a dead greenlet whose own reference has not been given up yet, and this
/// the receipt of its final switch.
#[inline(always)]
unsafe fn release_dead(raw: *const Inner) {
    // SAFETY: per the contract, alive by its own reference.
    let inner = unsafe { &*raw };
    release_context(inner);
    // Its value body was taken when it started (`entry_general`); a re-armed one has none
    // place, is a plain function: nothing to drop.
    debug_assert!(
        // SAFETY: only read, and the read ends at once (greenlets are !Send).
        unsafe { (*inner.body.as_ptr()).is_none() },
        "a greenlet that made its final switch still had a value body"
    );
    // Its own reference stays while a handle is left (the drop of the last one gives it
    // up, `drop_last_handle`; a record re-armed in place keeps it for its next life, whose
    // start takes none): one load and compare, no store. With no handle left (a detached
    // green thread's record dropped before its final switch, `Hub::exit_last`) the record
    // is freed, out of line.
    // SAFETY: per the contract, alive by its own reference.
    if Rc::strong_count(&ManuallyDrop::new(unsafe { Rc::from_raw(raw) })) == 1 {
        // SAFETY: per the contract: the greenlet's own reference, given up once.
        unsafe { free_dead(raw) };
    }
}

/// A dead greenlet with no handle left, its final switch received: its own reference is
/// given up, which frees the record.
///
/// # Safety
/// `raw` must be a dead greenlet holding its own reference and no other.
#[cold]
#[inline(never)]
unsafe fn free_dead(raw: *const Inner) {
    // SAFETY: per the contract: the last reference, given up once.
    unsafe { Rc::decrement_strong_count(raw) };
}

/// A greenlet switched away with no handle left (only its own reference): dropping a new
/// last handle kills it (see `Drop for Greenlet`).
///
/// # Safety
/// `raw` must be a suspended greenlet of this thread.
#[cold]
#[inline(never)]
unsafe fn kill_unreferenced(raw: *const Inner) {
    // SAFETY: per the contract, alive by its own reference.
    drop(unsafe { new_handle(raw) });
}

#[cold]
fn raise(payload: Box<dyn Any + Send>) -> ! {
    panic::resume_unwind(payload)
}

/// Frees a dead greenlet's stack (it is never resumed again) and drops its body if it never
/// started: see [`release_context`].
#[inline(always)]
fn release(g: &Greenlet) {
    release_context(&g.inner);
    drop(g.inner.body.take());
}

/// Frees a dead greenlet's context: the greenlet keeps its stack for a next life in place
/// ([`Builder::respawn`], [`rearm`]) if [`stack::keep`] allows, else it goes back to the
/// pool. A kept stack goes to the pool when the record is dropped (`Drop for Inner`). The
/// saved stack pointer is left as it is: stale, as while running (only a suspended or
/// unstarted greenlet's is ever used, and a re-armed one gets a fresh one).
#[inline(always)]
fn release_context(inner: &Inner) {
    // A stack in the kept set already (this life was re-armed on it) stays there: no count
    // to touch. Else (a record's first death) it joins the set if the count allows.
    if !inner.kept.get() {
        // Tested in place: a stack that is kept is not moved out and back in.
        // SAFETY: a `Cell`'s contents are only ever moved in and out, never borrowed, and
        // this read ends before anything else touches the cell (greenlets are !Send).
        let has_stack = unsafe { (*inner.stack.as_ptr()).is_some() };
        if has_stack {
            if stack::keep() {
                inner.kept.set(true);
            } else {
                give_back_stack(inner);
            }
        }
    }
    // SAFETY: the greenlet is dead: its context will never run again, so nothing else
    // uses its storage; replacing it drops the backend's per-context state.
    unsafe { *inner.storage.get() = ContextStorage::default() };
}

/// A dead greenlet's stack goes back to the pool ([`stack::keep`] refused to let it keep
/// it): out of line, so that the usual release keeps no frame of its own.
#[cold]
#[inline(never)]
fn give_back_stack(inner: &Inner) {
    if let Some(stack) = inner.stack.take() {
        stack::give_back(stack);
    }
}

/// `throw` into a greenlet that never ran: it dies without running.
fn throw_unstarted(target: &Greenlet, payload: Box<dyn Any + Send>) -> Incoming {
    target.inner.state.set(State::Dead);
    release(target);
    let parent = live_target(&target.parent().expect("non-main greenlets have a parent"));
    let payload = if payload.is::<GreenletExit>() {
        Payload::Value(Box::new(GreenletExit))
    } else {
        Payload::Throw(payload)
    };
    switch_to(&parent, payload)
}

/// What a greenlet re-armed by [`rearm`] runs: a unit body known by its type, so that the
/// context starts at [`unit_entry`] made for it, which calls it directly.
///
/// A type, not a `fn()`: the entry made for it has the body inlined (the hub's `run_task`),
/// with no look-up of the running greenlet to find the body, no test of the body's kind, no
/// load of a function pointer and no frame of its own for the body (spawn + run + join:
/// see [`unit_entry`]).
pub(crate) trait UnitBody: 'static {
    /// The body: takes and returns `()`. It may end the greenlet without returning
    /// ([`Greenlet::exit_held_in`]); a panic out of it ends the greenlet as a panic out of
    /// any body does (re-raised in the parent).
    fn run();
}

/// Where a greenlet re-armed by [`rearm`] for the unit body `B` starts. Its usual start,
/// by a unit switch from a live greenlet that keeps a handle besides its own, calls
/// nothing but the body (inlined here: the hub's `run_task`, whose usual start ends by a
/// call into the closure's run, usually never returning: [`Greenlet::exit_held_in`]).
/// Every other start goes out of line as a whole: from a dead greenlet or one with no
/// handle but its own ([`entry_unit_rare`]), or by a switch that carries a message
/// ([`entry_general`], given the body).
///
/// Against the common entry it replaced (one for every body, which found a unit body
/// through the running greenlet and called it through a pointer), spawn + run + join:
/// no read of `CURRENT`, of the body's kind or of its function pointer, no registers saved
/// for a frame that the body returns to (it seldom does: one `push` for the alignment of
/// its call is left), and the body's own frame gone, with the indirect call into it
/// (309.6 -> 299.6 instructions; the hub's `run_task` is the only thread-local look-up
/// left). Its trampoline is made for it too ([`UnitEntry`], [`context::init_for`]): the
/// entry's address is neither stored in the initial frame nor loaded from it (294.6 ->
/// 292.6).
///
/// # Safety
/// As [`greenlet_entry`]: `data` a live message or a unit word, `from` the switcher's
/// context; running at the root of the fresh greenlet's stack, re-armed for `B`.
#[inline(always)]
unsafe fn unit_entry<B: UnitBody>(data: usize, from: StackPointer) -> ! {
    if data & UNIT != 0 {
        // The first switch to a greenlet passes a unit word or a message like any other;
        // this one is a unit word (the sender's address, tagged).
        let prev = (data - UNIT) as *const Inner;
        // SAFETY: per this function's contract, `prev` is the live greenlet that switched
        // to us, not yet received.
        if unsafe { arrived_from_live(prev, from) } {
            let ran = panic::catch_unwind(B::run);
            // SAFETY: we are the running greenlet; our body is over.
            unsafe { unit_body_over(ran) }
        }
        // SAFETY: as above; the receipt is not done yet.
        unsafe { entry_unit_rare(prev, from, B::run) }
    }
    // SAFETY: per this function's contract (a live message).
    unsafe { entry_general(data, from, Some(B::run)) }
}

/// [`unit_entry`] for `B`, as the context's typed entry: its trampoline calls it directly
/// ([`context::init_for`]).
struct UnitEntry<B>(std::marker::PhantomData<B>);

impl<B: UnitBody> context::Entry for UnitEntry<B> {
    #[inline(always)]
    unsafe extern "C" fn entry(data: usize, from: StackPointer) -> ! {
        // SAFETY: per the contract (`rearm` made the context for `B`).
        unsafe { unit_entry::<B>(data, from) }
    }
}

/// Where every other greenlet starts (a value body: [`Builder::spawn`],
/// [`Builder::respawn`]).
///
/// # Safety
/// `data` must be a live message or a unit word, as a switch passes them ([`receive`]),
/// `from` the switcher's context; running at the root of the fresh greenlet's stack.
unsafe extern "C" fn greenlet_entry(data: usize, from: StackPointer) -> ! {
    // SAFETY: per this function's contract; the body is the stored one.
    unsafe { entry_general(data, from, None) }
}

/// [`unit_entry`]'s start when the greenlet that switched to us is dead, or holds
/// no handle but its own: the rest of the bookkeeping of `receive` for a unit switch,
/// under the same `catch_unwind` as the body (as the general case runs `receive` under
/// one): a panic in either ends us with it, and no body runs after a failed receive.
///
/// # Safety
/// As [`arrived_from`] for `prev` and `from`, running at the root of the fresh greenlet's
/// stack with its unit `body` taken.
#[cold]
#[inline(never)]
unsafe fn entry_unit_rare(prev: *const Inner, from: StackPointer, body: fn()) -> ! {
    let ran = panic::catch_unwind(AssertUnwindSafe(move || {
        // SAFETY: per the contract.
        unsafe { arrived_from(prev, from) };
        body()
    }));
    // SAFETY: we are the running greenlet; our body is over.
    unsafe { unit_body_over(ran) }
}

/// The unit body of the running greenlet returned (`Ok`) or ended by a panic: its final
/// switch. Out of line, with the running greenlet read again, so that [`unit_entry`]'s
/// usual start keeps nothing in registers across the body (its frame saves none: the hub's
/// green threads usually end inside the body, by [`Greenlet::exit_held_in`]).
///
/// # Safety
/// Called at the root of the running greenlet's stack, its body over.
#[inline(never)]
unsafe fn unit_body_over(ran: Result<(), Box<dyn Any + Send>>) -> ! {
    let payload = match ran {
        Ok(()) => Payload::Unit,
        Err(p) => final_payload(Err(p)),
    };
    // SAFETY: the running greenlet, alive by its own reference; its body is over.
    unsafe { finish(&*CURRENT.with(Cell::get), payload) }
}

/// The start of a greenlet with a value body ([`greenlet_entry`]: `unit` is `None`, the body
/// is the stored one), or of a re-armed one started by a switch that carries a message
/// ([`unit_entry`]: `unit` is its body, the message's value is dropped).
///
/// # Safety
/// As [`greenlet_entry`], running on the fresh greenlet's stack.
#[inline(never)]
unsafe fn entry_general(data: usize, from: StackPointer, unit: Option<fn()>) -> ! {
    // SAFETY: the first switch to a greenlet passes a live `Message` like any other.
    let first = panic::catch_unwind(AssertUnwindSafe(|| unsafe { receive(from, data) }));
    // No handle to ourselves may stay on this stack while the body runs: the last user
    // handle being dropped is what kills a suspended greenlet.
    // SAFETY: the switcher made CURRENT point at us before switching here.
    let me = unsafe { &*CURRENT.get() };
    enum Start {
        Value(Body),
        Unit(fn()),
    }
    // A value body is taken (and dropped, if it does not run) whatever the first switch.
    let body = match unit {
        Some(unit) => Start::Unit(unit),
        None => Start::Value(me.body.take().expect("a fresh greenlet has a body")),
    };
    // `Ok(None)`: the body returned `()` (a unit body).
    let result = match (first, body) {
        (Err(payload), _) | (Ok(Incoming::Thrown(payload)), _) => Err(payload),
        (Ok(arg), Start::Value(body)) => {
            panic::catch_unwind(AssertUnwindSafe(move || body(arg.into_value()))).map(Some)
        }
        (Ok(arg), Start::Unit(body)) => panic::catch_unwind(AssertUnwindSafe(move || {
            arg.into_unit();
            body()
        }))
        .map(|()| None),
    };
    // SAFETY: we are still the running greenlet; our body is over.
    unsafe { finish(me, final_payload(result)) }
}

/// What the final switch of a greenlet whose body ended with `result` carries (`Ok(None)`:
/// a unit body returned).
fn final_payload(result: Result<Option<Value>, Box<dyn Any + Send>>) -> Payload {
    match result {
        // A `()` result travels as a unit switch (no message; the receiver's value is the
        // same `()`): what the hub's green threads return.
        Ok(None) => Payload::Unit,
        Ok(Some(v)) if v.is::<()>() => Payload::Unit,
        Ok(Some(v)) => Payload::Value(v),
        Err(p) if p.is::<GreenletExit>() => Payload::Value(Box::new(GreenletExit)),
        Err(p) => Payload::Throw(p),
    }
}

/// The final switch of the running greenlet `me`, ending as if its unit body returned, to
/// `target` (kept alive by the caller until it runs) if it is suspended or unstarted, else
/// through [`finish`] (to the parent).
///
/// # Safety
/// `me` must be the running greenlet, with nothing that needs dropping in the frames of
/// its stack; `target` null or the `Rc::as_ptr` of a live `Rc<Inner>` that stays alive
/// until it runs; `current` the address of this thread's `CURRENT`.
#[inline(always)]
unsafe fn exit_unit_to(me: &Inner, target: *const Inner, current: *mut *const Inner) -> ! {
    if target.is_null() {
        // SAFETY: per the contract.
        unsafe { finish(me, Payload::Unit) }
    }
    // SAFETY: per the contract.
    let t = unsafe { &*target };
    // Suspended or unstarted (it starts: it holds its own reference from its creation).
    if !matches!(t.state.get(), State::Suspended | State::NotStarted) {
        // SAFETY: per the contract.
        unsafe { finish(me, Payload::Unit) }
    }
    me.state.set(State::Dead);
    // SAFETY: suspended or unstarted, so it has a saved context.
    let sp = unsafe { t.sp.get().unwrap_unchecked() };
    t.state.set(State::Running);
    // SAFETY: `current` is this thread's `CURRENT` (per the contract), written at once.
    unsafe { *current = target };
    // SAFETY: final switch to the target's saved context; this context is never resumed.
    // No message: the data word is our own (aligned) address, which the receiver only
    // reads to release us.
    unsafe { context::switch_final(sp, me as *const Inner as usize | UNIT) };
    crate::sys::signal::abort()
}

/// The final switch of the running greenlet `me` with `payload`, to its parent (or its
/// nearest live ancestor).
///
/// # Safety
/// `me` must be the running greenlet, at the root of its stack (nothing that needs
/// dropping in the frames above).
#[inline(never)]
unsafe fn finish(me_ref: &Inner, payload: Payload) -> ! {
    let me: *const Inner = me_ref;
    me_ref.state.set(State::Dead);
    // Nothing that needs dropping may stay in this frame: it never returns. The target is
    // found without a handle of its own (the usual parent, live, is not cloned and dropped).
    let parent: *const Inner = {
        let direct = me_ref.parent.borrow();
        let direct = direct.as_ref().expect("non-main greenlets have a parent");
        if direct.inner.state.get() == State::Dead {
            Rc::as_ptr(&live_target(direct).inner)
        } else {
            Rc::as_ptr(&direct.inner)
        }
    };
    // SAFETY: `parent` is alive: our parent chain holds a handle to it (our own `parent`
    // field or that of a dead ancestor, none of which is dropped before our final switch
    // is received), and once it runs it holds its own reference.
    let parent_ref = unsafe { &*parent };
    let sp = parent_ref
        .sp
        .take()
        .expect("a live parent has a saved context");
    // An unstarted parent starts: it holds its own reference from its creation.
    parent_ref.state.set(State::Running);
    CURRENT.with(|c| c.set(parent));
    if matches!(payload, Payload::Unit) {
        // Nothing of it to drop.
        std::mem::forget(payload);
        // SAFETY: final switch to the parent's saved context; this context is never
        // resumed. No message: the data word is our own (aligned) address, which the
        // receiver only reads to release us.
        unsafe { context::switch_final(sp, me as usize | UNIT) };
    } else {
        // The message lives on this (dying) stack; the receiver frees the stack only after
        // moving everything out of it, and nothing that needs dropping is left here.
        let (mut msg, tag) = Message::new(me, payload);
        // SAFETY: final switch to the parent's saved context; this context is never
        // resumed.
        unsafe { context::switch_final(sp, (&mut *msg as *mut Message as usize) | tag) };
    }
    crate::sys::signal::abort()
}

/// Prefetch hints for a scheduler that knows which greenlets it resumes next: what a
/// resumed greenlet touches first is its record (saved stack pointer and state) and the
/// top of its suspended stack, lines that a server with many connections finds long out
/// of cache. [`prefetch_stack`](Self::prefetch_stack) reads the record, which
/// [`prefetch_record`](Self::prefetch_record) should have brought in a step earlier.
impl Greenlet {
    /// Prefetches the greenlet's record: the line of its saved stack pointer and state.
    #[inline(always)]
    pub(crate) fn prefetch_record(&self) {
        context::prefetch(self.inner.sp.as_ptr() as usize);
    }

    /// Prefetches the top of the greenlet's suspended stack, the frames its switch back
    /// returns through ([`context::prefetch_stack`]). A running or dead greenlet's stale
    /// stack pointer only wastes the hints.
    #[inline(always)]
    pub(crate) fn prefetch_stack(&self) {
        if let Some(sp) = self.inner.sp.get() {
            context::prefetch_stack(sp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a scheduler keeps in its slot for [`Greenlet::resume_held_in`]: a record that
    /// owns the greenlet, counting its drops.
    struct Record {
        greenlet: Greenlet,
        drops: Rc<Cell<u32>>,
    }

    impl Drop for Record {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn greenlet_of(record: &Record) -> &Greenlet {
        &record.greenlet
    }

    #[test]
    fn resume_held_in_switches_with_the_record_in_the_slot_and_no_handle_taken() {
        let main = Greenlet::current();
        let handles_seen = Rc::new(Cell::new(0));
        let seen = handles_seen.clone();
        let g = Greenlet::new(move |_| loop {
            // While it runs: its own reference and the record's handle, nothing else.
            seen.set(Rc::strong_count(&Greenlet::current().inner) - 1);
            main.switch(());
        });
        g.switch(()); // started: suspended in its switch to main
        let drops = Rc::new(Cell::new(0));
        let slot = Cell::new(None);
        let record = Record {
            greenlet: g,
            drops: drops.clone(),
        };
        Greenlet::resume_held_in(&slot, record, greenlet_of);
        assert_eq!(
            handles_seen.get(),
            2,
            "no handle besides the record's was taken"
        );
        assert_eq!(drops.get(), 0);
        let record = slot.take().expect("the record stays in the slot");
        assert!(!record.greenlet.is_dead());
    }

    #[test]
    fn resume_held_in_drops_what_the_slot_held_and_starts_an_unstarted_greenlet() {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let drops = Rc::new(Cell::new(0));
        let slot = Cell::new(Some(Record {
            greenlet: Greenlet::new(|v| v),
            drops: drops.clone(),
        }));
        let record = Record {
            greenlet: Greenlet::new(move |v| {
                r.set(true);
                v
            }),
            drops: drops.clone(),
        };
        // Unstarted: it starts, returns to its parent (this greenlet), which goes on.
        Greenlet::resume_held_in(&slot, record, greenlet_of);
        assert!(ran.get());
        assert_eq!(
            drops.get(),
            1,
            "the record the slot held before was dropped"
        );
        let record = slot.take().expect("the new record is in the slot");
        assert!(record.greenlet.is_dead());
    }

    #[test]
    fn resume_held_in_to_the_running_greenlet_returns_at_once() {
        let drops = Rc::new(Cell::new(0));
        let slot = Cell::new(None);
        let record = Record {
            greenlet: Greenlet::current(),
            drops: drops.clone(),
        };
        Greenlet::resume_held_in(&slot, record, greenlet_of);
        assert_eq!(drops.get(), 0);
        assert!(slot.take().is_some_and(|r| r.greenlet.is_current()));
    }

    thread_local! {
        /// The slot of the `exit_held_in` tests (a thread-local, so that the ending
        /// greenlet's body holds nothing that would need dropping).
        static EXIT_SLOT: Cell<Option<Record>> = const { Cell::new(None) };
    }

    /// A body that ends by `exit_held_in`, handing control to `target` held in
    /// `EXIT_SLOT` by a record counting its drops in `drops`.
    fn exit_held_body(target: Greenlet, drops: Rc<Cell<u32>>) -> impl FnOnce(Value) -> Value {
        move |_| {
            EXIT_SLOT.with(|slot| {
                Greenlet::exit_held_in(
                    slot,
                    Record {
                        greenlet: target,
                        drops,
                    },
                    greenlet_of,
                )
            })
        }
    }

    #[test]
    fn exit_held_in_ends_the_greenlet_with_its_final_switch_to_the_held_target() {
        let drops = Rc::new(Cell::new(0));
        EXIT_SLOT.with(|slot| {
            slot.set(Some(Record {
                greenlet: Greenlet::new(|v| v),
                drops: drops.clone(),
            }))
        });
        let kept = stack::kept_count();
        let g = Greenlet::new(exit_held_body(Greenlet::current(), drops.clone()));
        // The target is this (suspended) greenlet: its switch returns the unit value.
        let r = g.switch(());
        assert!(r.is::<()>());
        assert!(g.is_dead());
        assert_eq!(
            drops.get(),
            1,
            "the record the slot held before was dropped"
        );
        assert_eq!(
            stack::kept_count(),
            kept + 1,
            "the dead greenlet kept its stack"
        );
        let record = EXIT_SLOT
            .with(Cell::take)
            .expect("the new record is in the slot");
        assert!(record.greenlet.is_current());
        assert_eq!(
            Rc::strong_count(&g.inner),
            2,
            "its own reference is kept while a handle is left"
        );
    }

    #[test]
    fn exit_held_in_empty_ends_the_greenlet_with_its_final_switch_to_the_held_target() {
        let drops = Rc::new(Cell::new(0));
        let main = Greenlet::current();
        let d = drops.clone();
        let g = Greenlet::new(move |_| {
            EXIT_SLOT.with(|slot| {
                Greenlet::exit_held_in_empty(
                    slot,
                    Record {
                        greenlet: main,
                        drops: d,
                    },
                    greenlet_of,
                )
            })
        });
        assert!(EXIT_SLOT.with(Cell::take).is_none());
        // The target is this (suspended) greenlet: its switch returns the unit value.
        let r = g.switch(());
        assert!(r.is::<()>() && g.is_dead());
        let record = EXIT_SLOT
            .with(Cell::take)
            .expect("the new record is in the slot");
        assert!(record.greenlet.is_current());
        assert_eq!(drops.get(), 0, "nothing was dropped");
        assert_eq!(
            Rc::strong_count(&g.inner),
            2,
            "its own reference is kept while a handle is left"
        );
    }

    #[test]
    fn exit_held_in_starts_an_unstarted_target_whose_final_switch_goes_to_its_parent() {
        let drops = Rc::new(Cell::new(0));
        let next = Greenlet::new(|_| Box::new(7u8));
        let g = Greenlet::new(exit_held_body(next.clone(), drops.clone()));
        // `next` starts with `()` and returns 7 to its parent, this greenlet.
        let r = g.switch(());
        assert_eq!(*r.downcast::<u8>().unwrap(), 7);
        assert!(g.is_dead() && next.is_dead());
        let record = EXIT_SLOT
            .with(Cell::take)
            .expect("the new record is in the slot");
        assert!(record.greenlet.ptr_eq(&next));
        assert_eq!(drops.get(), 0);
        drop(record);
        assert_eq!(
            Rc::strong_count(&next.inner),
            2,
            "no reference left behind but the handle and its own"
        );
    }

    #[test]
    fn exit_held_in_to_a_dead_target_ends_with_a_final_switch_to_the_parent() {
        let dead = Greenlet::new(|v| v);
        dead.switch(());
        let drops = Rc::new(Cell::new(0));
        let g = Greenlet::new(exit_held_body(dead.clone(), drops.clone()));
        let r = g.switch(());
        assert!(r.is::<()>() && g.is_dead());
        let record = EXIT_SLOT
            .with(Cell::take)
            .expect("the new record is in the slot");
        assert!(record.greenlet.ptr_eq(&dead));
    }

    #[test]
    fn exit_held_in_on_the_main_greenlet_panics_and_leaves_the_slot_alone() {
        let drops = Rc::new(Cell::new(0));
        let ended = panic::catch_unwind(AssertUnwindSafe(|| {
            exit_held_body(Greenlet::current(), drops.clone())(Box::new(()))
        }));
        let message = ended.expect_err("the main greenlet cannot end");
        assert!(message
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("main greenlet")));
        assert!(EXIT_SLOT.with(Cell::take).is_none());
        assert_eq!(drops.get(), 1, "the record given was dropped, once");
    }

    #[test]
    fn a_dead_greenlet_keeps_its_stack_until_reused_or_dropped() {
        let (kept, pooled) = (stack::kept_count(), stack::pooled_count());
        let g = Greenlet::new(|v| v);
        g.switch(());
        assert!(g.is_dead());
        assert_eq!(
            stack::kept_count(),
            kept + 1,
            "the dead greenlet kept its stack"
        );
        assert_eq!(stack::pooled_count(), pooled.saturating_sub(1));
        // Re-armed in place: the kept stack is its stack again, the pool is not touched.
        let mut slot = g;
        let before = stack::pooled_count();
        Builder::new()
            .respawn(&mut slot, &Greenlet::current(), |v| {
                Box::new(*v.downcast::<u32>().unwrap() + 1)
            })
            .unwrap();
        assert_eq!(stack::kept_count(), kept);
        assert_eq!(stack::pooled_count(), before);
        assert_eq!(*slot.switch(41u32).downcast::<u32>().unwrap(), 42);
        assert_eq!(stack::kept_count(), kept + 1);
        // Dropped: the kept stack goes to the pool.
        drop(slot);
        assert_eq!(stack::kept_count(), kept);
        assert_eq!(stack::pooled_count(), before + 1);
    }

    #[test]
    fn dead_greenlets_keep_at_most_pool_limit_stacks() {
        let before = stack::kept_count();
        let dead: Vec<Greenlet> = (0..stack::POOL_LIMIT + 8)
            .map(|_| {
                let g = Builder::new()
                    .stack_size(stack::MIN_STACK_SIZE)
                    .spawn(|v| v)
                    .unwrap();
                g.switch(());
                g
            })
            .collect();
        assert!(dead.iter().all(Greenlet::is_dead));
        assert_eq!(
            stack::kept_count(),
            stack::POOL_LIMIT,
            "the rest went back to the pool"
        );
        drop(dead);
        assert_eq!(stack::kept_count(), before);
    }

    #[test]
    fn a_kept_stack_of_another_size_goes_back_to_the_pool() {
        let kept = stack::kept_count();
        let mut slot = Builder::new().stack_size(64 * 1024).spawn(|v| v).unwrap();
        slot.switch(());
        assert_eq!(stack::kept_count(), kept + 1);
        let pooled = stack::pooled_count();
        Builder::new()
            .stack_size(128 * 1024)
            .respawn(&mut slot, &Greenlet::current(), |v| v)
            .unwrap();
        assert_eq!(stack::kept_count(), kept);
        assert_eq!(
            stack::pooled_count(),
            pooled + 1,
            "the 64 KiB stack went to the pool (no 128 KiB one was there to take)"
        );
        assert_eq!(*slot.switch(9u8).downcast::<u8>().unwrap(), 9);
    }

    #[test]
    fn a_panicked_greenlet_keeps_its_stack_and_runs_the_next_body_afresh() {
        let witness = Rc::new(());
        let w = witness.clone();
        let mut slot = Greenlet::new(move |_| {
            let _held = w;
            panic!("first life")
        });
        let first = panic::catch_unwind(AssertUnwindSafe(|| slot.switch(())));
        assert!(first.is_err());
        assert!(slot.is_dead());
        assert_eq!(
            Rc::strong_count(&witness),
            1,
            "the first life's locals were dropped"
        );
        let kept = stack::kept_count();
        Builder::new()
            .respawn(&mut slot, &Greenlet::current(), |v| v)
            .unwrap();
        assert_eq!(stack::kept_count(), kept - 1, "the kept stack was reused");
        assert_eq!(*slot.switch(5u8).downcast::<u8>().unwrap(), 5);
    }

    #[test]
    fn a_rearmed_greenlet_runs_its_own_unit_body_each_life() {
        thread_local!(static RAN: Cell<u32> = const { Cell::new(0) });
        struct First;
        impl UnitBody for First {
            fn run() {
                RAN.with(|r| r.set(r.get() * 10 + 1));
            }
        }
        struct Second;
        impl UnitBody for Second {
            fn run() {
                RAN.with(|r| r.set(r.get() * 10 + 2));
            }
        }
        fn rearm_with<B: UnitBody>(slot: &mut Greenlet) {
            let rearmed = rearm::<B>(slot, &Greenlet::current(), 7, DEFAULT_STACK_SIZE, None);
            assert!(rearmed.unwrap());
        }
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        for first in [true, false, true] {
            if first {
                rearm_with::<First>(&mut slot);
            } else {
                rearm_with::<Second>(&mut slot);
            }
            assert!(slot.switch(()).is::<()>());
            assert!(slot.is_dead());
        }
        assert_eq!(RAN.with(Cell::get), 121, "each life ran its own body, once");
        // Started by a switch that carries a value (dropped: the body takes `()`), its body
        // runs all the same (`entry_general`).
        rearm_with::<Second>(&mut slot);
        assert!(slot.switch(9u8).is::<()>());
        assert!(slot.is_dead());
        assert_eq!(RAN.with(Cell::get), 1212);
        // A value body after unit ones.
        Builder::new()
            .respawn(&mut slot, &Greenlet::current(), |v| v)
            .unwrap();
        assert_eq!(*slot.switch(4u8).downcast::<u8>().unwrap(), 4);
        assert_eq!(RAN.with(Cell::get), 1212);
    }

    #[test]
    fn a_backtrace_from_a_rearmed_body_stops_at_the_root_of_its_stack() {
        // The typed trampoline (`context::init_for`) marks the return address undefined,
        // as the common one does: an unwinder walking up from the body stops there, a few
        // frames up, instead of reading the unwritten words above the stack's top.
        thread_local!(static FRAMES: Cell<usize> = const { Cell::new(0) });
        struct Capture;
        impl UnitBody for Capture {
            fn run() {
                let trace = std::backtrace::Backtrace::force_capture();
                let frames = trace.to_string().lines().count();
                FRAMES.with(|f| f.set(frames));
            }
        }
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        assert!(
            rearm::<Capture>(&mut slot, &Greenlet::current(), 7, DEFAULT_STACK_SIZE, None).unwrap()
        );
        assert!(slot.switch(()).is::<()>());
        let frames = FRAMES.with(Cell::get);
        assert!(
            (1..200).contains(&frames),
            "a short backtrace: {frames} lines"
        );
    }

    #[test]
    fn a_rearmed_unit_body_that_panics_reraises_in_the_parent() {
        struct Boom;
        impl UnitBody for Boom {
            fn run() {
                panic!("boom");
            }
        }
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        for _ in 0..2 {
            assert!(
                rearm::<Boom>(&mut slot, &Greenlet::current(), 7, DEFAULT_STACK_SIZE, None)
                    .unwrap()
            );
            let r = panic::catch_unwind(AssertUnwindSafe(|| slot.switch(())));
            let payload = r.expect_err("the body's panic is re-raised here");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
            assert!(slot.is_dead());
        }
    }

    #[test]
    fn a_greenlet_rearmed_on_its_kept_stack_stays_in_the_kept_set() {
        struct Nothing;
        impl UnitBody for Nothing {
            fn run() {}
        }
        let rearm_here = |slot: &mut Greenlet| {
            rearm::<Nothing>(slot, &Greenlet::current(), 7, DEFAULT_STACK_SIZE, None).unwrap()
        };
        let kept = stack::kept_count();
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        let mut other = Greenlet::new(|v| v);
        other.switch(());
        assert_eq!(stack::kept_count(), kept + 2, "kept at their first death");
        let pooled = stack::pooled_count();
        for life in 0..3 {
            assert!(rearm_here(&mut slot), "life {life}: re-armed");
            assert_eq!(slot.id(), 7);
            assert_eq!(
                stack::kept_count(),
                kept + 2,
                "life {life}: still in the kept set while re-armed"
            );
            assert!(slot.switch(()).is::<()>());
            assert!(slot.is_dead());
            assert_eq!(
                (stack::kept_count(), stack::pooled_count()),
                (kept + 2, pooled),
                "life {life}: the count was not touched at its death"
            );
        }
        // Dead and dropped: the stack leaves the kept set for the pool.
        drop(slot);
        assert_eq!(stack::kept_count(), kept + 1);
        assert_eq!(stack::pooled_count(), pooled + 1);
        // Re-armed and dropped before it runs: it leaves the kept set, unmapped with it.
        assert!(rearm_here(&mut other));
        let live = stack::live_count();
        drop(other);
        assert_eq!(stack::kept_count(), kept);
        assert_eq!(stack::live_count(), live - 1);
    }

    /// How many records hold a handle to the running greenlet (their parent), less
    /// `base`: what a record that leaked (one more) or was freed twice (one fewer, if
    /// anything at all is left to see) shows.
    fn parented_records(base: usize) -> isize {
        Rc::strong_count(&Greenlet::current().inner) as isize - 1 - base as isize
    }

    #[test]
    fn a_greenlets_record_is_freed_once_whatever_its_life_ended_as() {
        struct Nothing;
        impl UnitBody for Nothing {
            fn run() {}
        }
        let rearm_here = |slot: &mut Greenlet| {
            rearm::<Nothing>(slot, &Greenlet::current(), 7, DEFAULT_STACK_SIZE, None).unwrap()
        };
        // Every greenlet below is parented to this one: its record holds one handle to it.
        let base = Rc::strong_count(&Greenlet::current().inner) - 1;
        let kept = stack::kept_count();

        // A user's own greenlet that finished: freed by the drop of its last handle.
        let g = Greenlet::new(|v| v);
        g.switch(());
        assert!(g.is_dead());
        assert_eq!(Rc::strong_count(&g.inner), 2, "the handle and its own");
        let other = g.clone();
        drop(g);
        assert_eq!(parented_records(base), 1, "a handle is left: not freed");
        drop(other);
        assert_eq!(parented_records(base), 0, "the last handle freed it, once");
        assert_eq!(stack::kept_count(), kept, "its kept stack went to the pool");

        // Re-armed lives, then dropped dead: the own reference went from life to life.
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        for _ in 0..3 {
            assert!(rearm_here(&mut slot));
            assert_eq!(Rc::strong_count(&slot.inner), 2);
            assert!(slot.switch(()).is::<()>() && slot.is_dead());
            assert_eq!(Rc::strong_count(&slot.inner), 2);
            assert_eq!(parented_records(base), 1);
        }
        drop(slot);
        assert_eq!(
            parented_records(base),
            0,
            "the dead re-armed record was freed, once"
        );
        assert_eq!(stack::kept_count(), kept);

        // Re-armed, then dropped before it started.
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        assert!(rearm_here(&mut slot));
        drop(slot);
        assert_eq!(
            parented_records(base),
            0,
            "the unstarted re-armed record was freed"
        );

        // Unstarted, then dropped (its body with it).
        let witness = Rc::new(());
        let w = witness.clone();
        drop(Greenlet::new(move |v| {
            let _w = w;
            v
        }));
        assert_eq!(parented_records(base), 0);
        assert_eq!(Rc::strong_count(&witness), 1, "the body was dropped");

        // Its last handle given to its own start, fresh or re-armed: it ends with no
        // handle left, and the receipt of its final switch frees it.
        assert!(Greenlet::new(|v| v).switch_into(()).is::<()>());
        assert_eq!(parented_records(base), 0, "freed by the receipt");
        let mut slot = Greenlet::new(|v| v);
        slot.switch(());
        assert!(rearm_here(&mut slot));
        assert!(slot.switch_into(()).is::<()>());
        assert_eq!(
            parented_records(base),
            0,
            "the re-armed record freed by the receipt"
        );

        // Killed by the drop of its last handle while suspended.
        let main = Greenlet::current();
        let g = Greenlet::new(move |_| {
            main.switch(());
            Box::new(())
        });
        g.switch(());
        drop(g);
        assert_eq!(parented_records(base), 0, "killed and freed");

        // A panic ended it: freed by the drop of its last handle.
        let g = Greenlet::new(|_| panic!("over"));
        assert!(panic::catch_unwind(AssertUnwindSafe(|| g.switch(()))).is_err());
        drop(g);
        assert_eq!(parented_records(base), 0);
        assert_eq!(stack::kept_count(), kept);
    }

    #[test]
    fn a_handle_taken_while_a_greenlet_is_killed_keeps_its_record_until_it_goes() {
        thread_local!(static ESCAPED: Cell<Option<Greenlet>> = const { Cell::new(None) });
        struct Escape;
        impl Drop for Escape {
            fn drop(&mut self) {
                // Runs as the kill unwinds the greenlet: a handle to it is kept.
                ESCAPED.with(|e| e.set(Some(Greenlet::current())));
            }
        }
        let base = Rc::strong_count(&Greenlet::current().inner) - 1;
        let main = Greenlet::current();
        let g = Greenlet::new(move |_| {
            let _escape = Escape;
            main.switch(());
            Box::new(())
        });
        g.switch(());
        drop(g);
        let escaped = ESCAPED
            .with(Cell::take)
            .expect("the kill ran the destructor");
        assert!(escaped.is_dead());
        assert_eq!(
            Rc::strong_count(&escaped.inner),
            2,
            "the handle and its own"
        );
        assert_eq!(
            parented_records(base),
            1,
            "not freed while a handle is left"
        );
        drop(escaped);
        assert_eq!(parented_records(base), 0, "freed by the last handle, once");
    }
}
