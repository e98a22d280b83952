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
//! Values never live in registers across the switch: each side puts its message in a slot
//! on its own stack and passes the slot's address as the switch's data word; the other side
//! takes the value out of the slot before anything switches again. The word coming back
//! from the coroutine is tagged in its low bit: 0 = the address of a yielded value, 1 = the
//! address of how the body ended (returned, panicked, or unwound).
//!
//! ```text
//!   resumer stack                        coroutine stack
//!   ─────────────                        ───────────────
//!   Some(Resume(input)) ───switch(&in)──▶ take() → input
//!                                          body runs ...
//!   take() → y ◀─────switch(&slot | 0)─── Slot(Some(y))
//!   take() → end ◀───switch(&end  | 1)─── Slot(Some(Return(r)))   (final switch)
//! ```
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

/// What the resumer asks of the coroutine.
enum ToCoroutine<I> {
    Resume(I),
    Unwind,
}

/// How a coroutine ended.
enum Finish<R> {
    Return(R),
    Panic(Box<dyn Any + Send>),
    Unwound,
}

/// A value handed across a switch by address. The alignment of at least 2 leaves the low
/// bit of the address free for the yield/finish tag.
#[repr(C, align(2))]
struct Slot<T>(Option<T>);

/// Tag bit of the data word a coroutine switches back with: set = it finished.
const FINISHED: usize = 1;

/// What the first resume passes: the input and the body.
struct Start<I, Y, R> {
    input: Option<ToCoroutine<I>>,
    body: Option<Body<I, Y, R>>,
}

type Body<I, Y, R> = Box<dyn FnOnce(&Yielder<I, Y>, I) -> R>;

/// Panic payload used to unwind a suspended coroutine that is being dropped.
struct ForcedUnwind;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Handle given to a coroutine's body to suspend it.
///
/// It only exists on the coroutine's own stack, borrowed by the body, so it can only be
/// used from inside that coroutine.
pub struct Yielder<I, Y> {
    resumer: Cell<Option<StackPointer>>,
    _types: PhantomData<(fn(Y) -> I, *mut ())>,
}

impl<I, Y> Yielder<I, Y> {
    /// Suspends the coroutine, handing `value` to the resumer as
    /// [`CoroutineResult::Yield`]; returns the input of the next `resume`.
    #[inline]
    pub fn suspend(&self, value: Y) -> I {
        let Some(resumer) = self.resumer.take() else {
            not_running()
        };
        let mut slot = Slot(Some(value));
        // SAFETY: `resumer` is the suspended context that resumed us, not resumed since.
        // `slot` stays alive on this stack until we are resumed; the resumer takes the value
        // out before anything switches back here.
        let (from, data) = unsafe { context::switch(resumer, &mut slot as *mut Slot<Y> as usize) };
        self.resumer.set(Some(from));
        // SAFETY: whoever resumes a started coroutine passes the address of its live
        // `Option<ToCoroutine<I>>`.
        match unsafe { (*(data as *mut Option<ToCoroutine<I>>)).take() } {
            Some(ToCoroutine::Resume(input)) => input,
            _ => forced_unwind(),
        }
    }
}

#[cold]
fn not_running() -> ! {
    panic!("Yielder::suspend called while the coroutine is not running")
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
            state: State::NotStarted(Some(Box::new(body))),
            sp: Some(sp),
            stack: Some(stack),
            storage,
            id,
            name: self.name,
            _types: PhantomData,
        })
    }
}

enum State<I, Y, R> {
    NotStarted(Option<Body<I, Y, R>>),
    Suspended,
    Finished,
}

/// A stackful coroutine taking `I` on every resume, yielding `Y`, and returning `R`.
///
/// See the [module docs](self) for the protocol and an example.
pub struct Coroutine<I, Y, R> {
    state: State<I, Y, R>,
    sp: Option<StackPointer>,
    stack: Option<Stack>,
    storage: ContextStorage,
    id: u64,
    name: Option<String>,
    _types: PhantomData<*mut ()>,
}

unsafe extern "C" fn coroutine_entry<I, Y, R>(data: usize, from: StackPointer) -> ! {
    let yielder = Yielder::<I, Y> {
        resumer: Cell::new(Some(from)),
        _types: PhantomData,
    };
    // SAFETY: the first resume passes the address of its live `Start<I, Y, R>`.
    let (input, body) = unsafe {
        let start = &mut *(data as *mut Start<I, Y, R>);
        (start.input.take(), start.body.take())
    };
    let result = match (body, input) {
        (Some(body), Some(ToCoroutine::Resume(input))) => {
            panic::catch_unwind(AssertUnwindSafe(|| body(&yielder, input)))
        }
        _ => Err(Box::new(ForcedUnwind) as Box<dyn Any + Send>),
    };
    let mut end = Slot(Some(match result {
        Ok(value) => Finish::Return(value),
        Err(payload) if payload.is::<ForcedUnwind>() => Finish::Unwound,
        Err(payload) => Finish::Panic(payload),
    }));
    let resumer = yielder
        .resumer
        .take()
        .expect("verdant: coroutine finished while not running");
    // SAFETY: final switch to our resumer. `end` stays on this dead stack, which is only
    // released after the resumer has taken the value out; nothing else on this stack needs
    // dropping (`yielder` has no destructor), and a dead context is never resumed.
    unsafe { context::switch(resumer, (&mut end as *mut Slot<Finish<R>> as usize) | FINISHED) };
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
        match self.transfer(ToCoroutine::Resume(input)) {
            Ok(y) => CoroutineResult::Yield(y),
            Err(end) => self.ended(end),
        }
    }

    #[cold]
    fn ended(&mut self, end: Finish<R>) -> CoroutineResult<Y, R> {
        match end {
            Finish::Return(r) => CoroutineResult::Return(r),
            Finish::Panic(payload) => panic::resume_unwind(payload),
            Finish::Unwound => forced_unwind(),
        }
    }

    /// Switches into the coroutine with `request`; `Ok` if it yielded, `Err` if it ended.
    #[inline(always)]
    fn transfer(&mut self, request: ToCoroutine<I>) -> Result<Y, Finish<R>> {
        let (Some(sp), State::Suspended) = (self.sp, &self.state) else {
            return self.transfer_cold(request);
        };
        let mut input = Some(request);
        // SAFETY: `sp` is our suspended context, resumed only now (it is replaced below by
        // the fresh handle the coroutine hands back). `input` lives in this frame until the
        // coroutine switches back, which is the only way this call returns.
        let (from, data) =
            unsafe { context::switch(sp, &mut input as *mut Option<ToCoroutine<I>> as usize) };
        // SAFETY: the coroutine passed the address of its live slot, tagged as documented.
        unsafe { self.received(from, data) }
    }

    /// Takes the value the coroutine handed back.
    ///
    /// # Safety
    /// `data` must be the tagged slot address the coroutine switched back with.
    #[inline(always)]
    unsafe fn received(&mut self, from: StackPointer, data: usize) -> Result<Y, Finish<R>> {
        if data & FINISHED == 0 {
            self.sp = Some(from);
            // SAFETY: untagged: the address of the coroutine's live `Slot<Y>`.
            match unsafe { (*(data as *mut Slot<Y>)).0.take() } {
                Some(y) => Ok(y),
                None => unreachable!("verdant: coroutine yielded an empty slot"),
            }
        } else {
            // SAFETY: tagged: the address of the finished coroutine's `Slot<Finish<R>>`,
            // on its dead stack, which `finish_with` releases only after the take.
            let end = unsafe { (*((data & !FINISHED) as *mut Slot<Finish<R>>)).0.take() };
            Err(self.finish_with(end))
        }
    }

    /// The first resume, and resumes of a finished coroutine.
    #[cold]
    #[inline(never)]
    fn transfer_cold(&mut self, request: ToCoroutine<I>) -> Result<Y, Finish<R>> {
        let body = match (&mut self.state, self.sp) {
            (State::NotStarted(body), Some(_)) => body.take(),
            _ => panic!(
                "Coroutine::resume called on a finished coroutine (#{}{}); check is_finished() first",
                self.id,
                self.name.as_deref().map(|n| format!(" '{n}'")).unwrap_or_default()
            ),
        };
        let sp = self.sp.take().expect("checked above");
        self.state = State::Suspended;
        let mut start = Start {
            input: Some(request),
            body,
        };
        // SAFETY: `sp` is the fresh context `init` made for this coroutine's types; the entry
        // function takes the body and input out of `start`, which lives in this frame until
        // the coroutine switches back.
        let (from, data) =
            unsafe { context::switch(sp, &mut start as *mut Start<I, Y, R> as usize) };
        // SAFETY: the coroutine passed the address of its live slot, tagged as documented.
        unsafe { self.received(from, data) }
    }

    #[cold]
    fn finish_with(&mut self, end: Option<Finish<R>>) -> Finish<R> {
        let end = end.expect("verdant: coroutine finished without a value");
        self.finish();
        end
    }

    /// The context is dead: release the stack to the pool.
    fn finish(&mut self) {
        self.state = State::Finished;
        self.sp = None;
        if let Some(stack) = self.stack.take() {
            stack::give_back(stack);
        }
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
        while matches!(self.state, State::Suspended) {
            match self.transfer(ToCoroutine::Unwind) {
                Ok(_) => continue,
                // A panic while unwinding (a destructor that panics after catching): the
                // coroutine is finished; dropping must not panic, so the payload is dropped.
                _ => break,
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
            State::Suspended => "suspended",
            State::Finished => "finished",
        };
        f.debug_struct("Coroutine")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}
