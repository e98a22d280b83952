//! Typed asymmetric coroutines: `resume(input)` runs the body until it calls
//! [`Yielder::suspend`] or returns.
//!
//! ```
//! use verdant::coroutine::{Coroutine, CoroutineResult};
//!
//! // Input = i32 sent by resume, Yield = i32 sent by suspend, Return = &str.
//! let mut running_total = Coroutine::new(|yielder, mut input: i32| {
//!     let mut total = 0;
//!     while input != 0 {
//!         total += input;
//!         input = yielder.suspend(total);
//!     }
//!     "done"
//! });
//! assert_eq!(running_total.resume(5), CoroutineResult::Yield(5));
//! assert_eq!(running_total.resume(10), CoroutineResult::Yield(15));
//! assert_eq!(running_total.resume(0), CoroutineResult::Return("done"));
//! assert!(running_total.is_finished());
//! ```
//!
//! ## How a resume travels
//!
//! Values never live in registers across the switch: each side moves its value into an
//! uninitialised-on-drop slot on its own stack and passes the slot's address as the
//! switch's data word; the other side moves the value out (`ptr::read`, exactly once) before
//! anything switches again, so neither side writes a discriminant or an "emptied" marker.
//! The word going in is 0 to ask a suspended body to unwind (drop), else the address of
//! the input. The word coming back is tagged in its low bit: 0 = the address of a yielded
//! value, 1 = the address of how the body ended (returned, panicked, or unwound).
//!
//! ```text
//!   resumer stack                        coroutine stack
//!   ─────────────                        ───────────────
//!   Slot(input) ────────switch(&in)─────▶ read → input     (0 instead: unwind)
//!                                          body runs ...
//!   read → y ◀──────switch(&slot | 0)──── Slot(y)
//!   read → end ◀────switch(&end  | 1)──── Slot(Return(r))  (final switch)
//! ```
//!
//! The resumer's fast path tests one field: `sp` is `Some` exactly while the body is
//! suspended at a `suspend` call. Starting the body and everything after it ended are
//! out-of-line cold paths.
//!
//! ## Panics and drop
//! A panic in the body is caught at the root of the coroutine's stack, carried across the
//! switch as a value and re-raised in the resumer with `resume_unwind`; the coroutine is
//! then finished. Dropping a coroutine that is suspended mid-body resumes it with a private
//! unwind payload so that every destructor on its stack runs exactly once, then frees the
//! stack. A `Coroutine` is `!Send`: it never changes OS thread.
//!
//! ```compile_fail
//! use verdant::coroutine::Coroutine;
//! let co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
//! std::thread::spawn(move || drop(co)); // error: `Coroutine` cannot be sent between threads
//! ```

use crate::context::{self, ContextStorage, StackPointer};
use crate::stack::{self, Stack, StackError, DEFAULT_STACK_SIZE};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

/// What [`Coroutine::resume`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoroutineResult<Y, R> {
    /// The body called [`Yielder::suspend`] with this value.
    Yield(Y),
    /// The body returned this value; the coroutine is finished.
    Return(R),
}

impl<Y, R> CoroutineResult<Y, R> {
    /// The yielded value, if any.
    pub fn as_yield(&self) -> Option<&Y> {
        match self {
            CoroutineResult::Yield(y) => Some(y),
            CoroutineResult::Return(_) => None,
        }
    }

    /// The returned value, if any.
    pub fn as_return(&self) -> Option<&R> {
        match self {
            CoroutineResult::Yield(_) => None,
            CoroutineResult::Return(r) => Some(r),
        }
    }
}

/// How a coroutine ended.
enum Finish<R> {
    Return(R),
    Panic(Box<dyn Any + Send>),
    Unwound,
}

/// A value handed across a switch by address: written by the sender, moved out exactly
/// once by the receiver, never dropped in place. The alignment of at least 2 leaves the low
/// bit of the address free for the yield/finish tag; a slot's address is never 0 (the
/// "unwind" word), not even for a zero-sized `T`.
#[repr(C, align(2))]
struct Slot<T>(MaybeUninit<T>);

impl<T> Slot<T> {
    #[inline(always)]
    fn new(value: T) -> Self {
        Slot(MaybeUninit::new(value))
    }

    #[inline(always)]
    fn addr(&mut self) -> usize {
        self as *mut Slot<T> as usize
    }

    /// Moves the value out of the slot at `addr`.
    ///
    /// # Safety
    /// `addr` must be the address of a live `Slot<T>` whose value has not been moved out.
    #[inline(always)]
    unsafe fn take(addr: usize) -> T {
        // SAFETY: per the contract; the sender never touches the value again.
        unsafe { (*(addr as *const Slot<T>)).0.assume_init_read() }
    }
}

/// Tag bit of the data word a coroutine switches back with: set = it finished.
const FINISHED: usize = 1;

/// Data word of a switch into a suspended body asking it to unwind (the coroutine is being
/// dropped). Every other word is the address of a `Slot<I>`.
const UNWIND: usize = 0;

/// What the first resume passes: the input and the body.
struct Start<I, Y, R> {
    input: I,
    body: Body<I, Y, R>,
}

type Body<I, Y, R> = Box<dyn FnOnce(&Yielder<I, Y>, I) -> R>;

/// A body not started yet, with the fresh context `init` made for it.
type Fresh<I, Y, R> = (Body<I, Y, R>, StackPointer);

/// Panic payload used to unwind a suspended coroutine that is being dropped.
struct ForcedUnwind;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Handle given to a coroutine's body to suspend it.
///
/// It only exists on the coroutine's own stack, borrowed by the body (which is `'static`
/// and so cannot hand the borrow to anything that outlives the call or runs on another
/// stack), so it can only be used from inside that coroutine, while it runs. Code runs on
/// the coroutine's stack only after a resume, so `resumer` then always holds the context of
/// the resumer, not resumed since.
pub struct Yielder<I, Y> {
    resumer: Cell<StackPointer>,
    _types: PhantomData<YielderTypes<I, Y>>,
}

/// Variance and auto-trait marker of a [`Yielder`]: it consumes `Y`, produces `I`, and is
/// neither `Send` nor `Sync`.
type YielderTypes<I, Y> = (fn(Y) -> I, *mut ());

impl<I, Y> Yielder<I, Y> {
    /// Suspends the coroutine, handing `value` to the resumer as
    /// [`CoroutineResult::Yield`]; returns the input of the next `resume`.
    #[inline]
    pub fn suspend(&self, value: Y) -> I {
        let mut slot = Slot::new(value);
        // SAFETY: `resumer` is the suspended context that resumed us, not resumed since (see
        // the type's docs). `slot` stays alive on this stack until we are resumed; the
        // resumer moves the value out before anything switches back here.
        let (from, data) = unsafe { context::switch(self.resumer.get(), slot.addr()) };
        self.resumer.set(from);
        if data == UNWIND {
            forced_unwind()
        }
        // SAFETY: whoever resumes a suspended body passes UNWIND or the address of a live
        // `Slot<I>`, which we are the only ones to read.
        unsafe { Slot::take(data) }
    }
}

#[cold]
fn forced_unwind() -> ! {
    panic::resume_unwind(Box::new(ForcedUnwind))
}

impl<I, Y> fmt::Debug for Yielder<I, Y> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder").finish_non_exhaustive()
    }
}

/// Configures a coroutine before it is created.
///
/// ```
/// use verdant::coroutine::{Builder, Coroutine};
/// let mut co: Coroutine<u8, (), u8> = Builder::new()
///     .name("parser")
///     .stack_size(64 * 1024)
///     .spawn(|_, x: u8| x * 2)
///     .expect("stack");
/// assert_eq!(co.resume(21).as_return(), Some(&42));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the default stack size ([`DEFAULT_STACK_SIZE`]) and no name.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Names the coroutine (shown in stack-overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes (rounded up to whole pages, at least
    /// [`MIN_STACK_SIZE`](crate::stack::MIN_STACK_SIZE)).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Creates the coroutine. The body runs on the first [`Coroutine::resume`].
    ///
    /// Fails only when no stack can be allocated (out of memory or of memory mappings).
    pub fn spawn<I, Y, R, F>(self, body: F) -> Result<Coroutine<I, Y, R>, StackError>
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        let stack = stack::take(self.stack_size.unwrap_or(DEFAULT_STACK_SIZE))?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        stack.set_owner(id, self.name.as_deref());
        let mut storage = ContextStorage::default();
        // SAFETY: `stack` is a fresh or pooled stack nothing runs on; it stays mapped (owned
        // by the Coroutine) until the context is dead.
        let sp = unsafe {
            context::init(
                stack.top(),
                stack.bottom(),
                coroutine_entry::<I, Y, R>,
                &mut storage,
            )
        };
        Ok(Coroutine {
            sp: None,
            state: State::NotStarted(Some((Box::new(body), sp))),
            stack: Some(stack),
            storage,
            id,
            name: self.name,
            _types: PhantomData,
        })
    }
}

enum State<I, Y, R> {
    /// The body and the fresh context `init` made for it (taken by the first resume).
    NotStarted(Option<Fresh<I, Y, R>>),
    /// Started and not finished: suspended (with `sp` set) or running.
    Started,
    Finished,
}

/// A stackful coroutine taking `I` on every resume, yielding `Y`, and returning `R`.
///
/// See the [module docs](self) for the protocol and an example.
pub struct Coroutine<I, Y, R> {
    /// The suspended body's context: `Some` exactly while the body waits in `suspend`.
    /// Left stale while it runs, which is harmless: `resume` needs `&mut self`, so nothing
    /// can resume it again until the switch has come back and replaced it.
    sp: Option<StackPointer>,
    state: State<I, Y, R>,
    stack: Option<Stack>,
    /// The backend's per-context state (empty for the asm backends), held for exactly as
    /// long as the context can run.
    #[allow(dead_code)]
    storage: ContextStorage,
    id: u64,
    name: Option<String>,
    _types: PhantomData<*mut ()>,
}

unsafe extern "C" fn coroutine_entry<I, Y, R>(data: usize, from: StackPointer) -> ! {
    let yielder = Yielder::<I, Y> {
        resumer: Cell::new(from),
        _types: PhantomData,
    };
    // SAFETY: the first resume passes the address of its live `Slot<Start<I, Y, R>>`.
    let Start { input, body } = unsafe { Slot::<Start<I, Y, R>>::take(data) };
    let result = panic::catch_unwind(AssertUnwindSafe(|| body(&yielder, input)));
    let mut end = Slot::new(match result {
        Ok(value) => Finish::Return(value),
        Err(payload) if payload.is::<ForcedUnwind>() => Finish::Unwound,
        Err(payload) => Finish::Panic(payload),
    });
    // SAFETY: final switch to our resumer, which is suspended in `context::switch` (its
    // `resumer` StackPointer). `end` stays on this dead stack, which is only released after
    // the resumer has moved the value out; nothing else on this stack needs dropping
    // (`yielder` has no destructor), and this context is never resumed: the resumer drops
    // the StackPointer it receives with a FINISHED word (`ended`), as `switch_final` needs.
    unsafe { context::switch_final(yielder.resumer.get(), end.addr() | FINISHED) };
    crate::sys::signal::abort()
}

impl<I, Y, R> Coroutine<I, Y, R> {
    /// Creates a coroutine with the default stack size.
    ///
    /// # Panics
    /// If no stack can be allocated; use [`Builder::spawn`] to handle that as an error.
    pub fn new<F>(body: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        match Builder::new().spawn(body) {
            Ok(co) => co,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs the coroutine until it yields or returns.
    ///
    /// If the body panics, the panic resumes in the caller and the coroutine is finished.
    ///
    /// # Panics
    /// If the coroutine has already finished (check [`is_finished`](Self::is_finished)).
    #[inline]
    pub fn resume(&mut self, input: I) -> CoroutineResult<Y, R> {
        let Some(sp) = self.sp else {
            return self.resume_cold(input);
        };
        let mut slot = Slot::new(input);
        // SAFETY: `sp` is our suspended body, resumed only now (it is replaced below by the
        // fresh handle the body hands back). `slot` lives in this frame until the body
        // switches back, which is the only way this call returns.
        let (from, data) = unsafe { context::switch(sp, slot.addr()) };
        if data & FINISHED == 0 {
            self.sp = Some(from);
            // SAFETY: untagged: the address of the body's live `Slot<Y>`.
            CoroutineResult::Yield(unsafe { Slot::take(data) })
        } else {
            // SAFETY: tagged: how the body ended, as documented.
            unsafe { self.ended(data) }
        }
    }

    /// The body switched back for the last time with `data`: release the stack and turn
    /// the way it ended into a result or a panic.
    ///
    /// # Safety
    /// `data` must be the tagged address of the finished body's `Slot<Finish<R>>`.
    #[cold]
    #[inline(never)]
    unsafe fn ended(&mut self, data: usize) -> CoroutineResult<Y, R> {
        // SAFETY: per the contract; the slot is on the dead stack, which `finish` releases
        // only after this read.
        let end = unsafe { Slot::<Finish<R>>::take(data & !FINISHED) };
        self.finish();
        match end {
            Finish::Return(r) => CoroutineResult::Return(r),
            Finish::Panic(payload) => panic::resume_unwind(payload),
            Finish::Unwound => forced_unwind(),
        }
    }

    /// The first resume, and resumes of a finished coroutine.
    #[cold]
    #[inline(never)]
    fn resume_cold(&mut self, input: I) -> CoroutineResult<Y, R> {
        let Some((body, sp)) = (match &mut self.state {
            State::NotStarted(start) => start.take(),
            _ => None,
        }) else {
            panic!(
                "Coroutine::resume called on a finished coroutine (#{}{}); check is_finished() first",
                self.id,
                self.name.as_deref().map(|n| format!(" '{n}'")).unwrap_or_default()
            )
        };
        self.state = State::Started;
        let mut start = Slot::new(Start { input, body });
        // SAFETY: `sp` is the fresh context `init` made for this coroutine's types, taken
        // out of `state` so it is resumed once; the entry function moves the body and input
        // out of `start`, which lives in this frame until the body switches back.
        let (from, data) = unsafe { context::switch(sp, start.addr()) };
        if data & FINISHED == 0 {
            self.sp = Some(from);
            // SAFETY: untagged: the address of the body's live `Slot<Y>`.
            CoroutineResult::Yield(unsafe { Slot::take(data) })
        } else {
            // SAFETY: tagged: how the body ended, as documented.
            unsafe { self.ended(data) }
        }
    }

    /// The context is dead: release the stack to the pool.
    fn finish(&mut self) {
        self.state = State::Finished;
        self.sp = None;
        if let Some(stack) = self.stack.take() {
            stack::give_back(stack);
        }
        // The context is dead: release the backend's per-context state too.
        self.storage = ContextStorage::default();
    }

    /// Whether the body has returned or panicked.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Whether the body has started running (it starts on the first `resume`).
    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::NotStarted(_))
    }

    /// The coroutine's process-unique id (shown in overflow reports).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Usable bytes of this coroutine's stack (`None` once finished: the stack is released).
    pub fn stack_size(&self) -> Option<usize> {
        self.stack.as_ref().map(Stack::size)
    }
}

impl<I, Y, R> Drop for Coroutine<I, Y, R> {
    fn drop(&mut self) {
        // Unwind a suspended body so its destructors run; loop in case the body catches the
        // unwind and suspends again.
        while let Some(sp) = self.sp.take() {
            // SAFETY: `sp` is our suspended body, taken out so it is resumed once; UNWIND
            // makes its pending `suspend` unwind its stack.
            let (from, data) = unsafe { context::switch(sp, UNWIND) };
            if data & FINISHED == 0 {
                self.sp = Some(from);
                // SAFETY: untagged: the address of the body's live `Slot<Y>`; the yielded
                // value is dropped.
                drop(unsafe { Slot::<Y>::take(data) });
            } else {
                // SAFETY: tagged: how the body ended. Finished either way; a panic while
                // unwinding (a destructor that panics after catching) is dropped, since
                // dropping must not panic.
                let end = unsafe { Slot::<Finish<R>>::take(data & !FINISHED) };
                self.finish();
                drop(end);
            }
        }
        if let Some(stack) = self.stack.take() {
            // Not started, or finished while unwinding: nothing runs on the stack.
            stack::give_back(stack);
        }
    }
}

impl<I, Y, R> fmt::Debug for Coroutine<I, Y, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::NotStarted(_) => "not started",
            State::Started if self.sp.is_some() => "suspended",
            State::Started => "running",
            State::Finished => "finished",
        };
        f.debug_struct("Coroutine")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}
