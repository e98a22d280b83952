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
//!   msg { from: C (owned handle), payload } ──switch──▶ takes msg:
//!                                                      C.sp := from (or, if C died,
//!                                                      free C's stack), drop handle
//! ```
//! The switching greenlet hands *its own handle* to the target in the message, so a
//! greenlet is never freed while code still runs on its stack: the receiver drops that
//! handle after the switch is complete.
//!
//! Greenlets are `!Send` and `!Sync`: they never leave the OS thread that made them.
//!
//! ```compile_fail
//! use verdant::greenlet::Greenlet;
//! let g = Greenlet::new(|v| v);
//! std::thread::spawn(move || g.switch(())); // error: `Rc<..>` cannot be sent between threads
//! ```

use crate::context::{self, ContextStorage, StackPointer};
use crate::stack::{self, Stack, StackError, DEFAULT_STACK_SIZE};
use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A value passed by [`Greenlet::switch`] and returned by a greenlet's body.
pub type Value = Box<dyn Any>;

/// The body of a greenlet.
type Body = Box<dyn FnOnce(Value) -> Value>;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Suspended,
    Dead,
}

struct Inner {
    id: u64,
    name: Option<String>,
    is_main: bool,
    state: Cell<State>,
    /// Saved context while suspended (or fresh, before the first switch).
    sp: Cell<Option<StackPointer>>,
    stack: Cell<Option<Stack>>,
    body: Cell<Option<Body>>,
    parent: RefCell<Option<Greenlet>>,
    storage: UnsafeCell<ContextStorage>,
}

/// A handle to a greenlet. Cloning it makes another handle to the same greenlet.
#[derive(Clone)]
pub struct Greenlet {
    inner: Rc<Inner>,
}

enum Payload {
    Value(Value),
    Throw(Box<dyn Any + Send>),
}

/// What every switch between greenlets carries (by address, in the switcher's frame or on
/// the dead greenlet's stack for a final switch).
struct Message {
    from: Option<Greenlet>,
    payload: Option<Payload>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CURRENT: Cell<Option<Greenlet>> = const { Cell::new(None) };
    static MAIN: Cell<Option<Greenlet>> = const { Cell::new(None) };
}

fn new_main() -> Greenlet {
    Greenlet {
        inner: Rc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: Some("main".into()),
            is_main: true,
            state: Cell::new(State::Running),
            sp: Cell::new(None),
            stack: Cell::new(None),
            body: Cell::new(None),
            parent: RefCell::new(None),
            storage: UnsafeCell::new(ContextStorage::default()),
        }),
    }
}

/// The running greenlet of this thread (creating the main greenlet on first use).
fn current() -> Greenlet {
    CURRENT.with(|c| {
        let cur = c.take().unwrap_or_else(|| {
            let main = new_main();
            MAIN.with(|m| m.set(Some(main.clone())));
            main
        });
        let out = cur.clone();
        c.set(Some(cur));
        out
    })
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
        let stack = stack::take(self.stack_size.unwrap_or(DEFAULT_STACK_SIZE))?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        stack.set_owner(id, self.name.as_deref());
        let mut storage = ContextStorage::default();
        // SAFETY: the stack is fresh or pooled and owned by the new greenlet until it is
        // dead; nothing runs on it.
        let sp = unsafe { context::init(stack.top(), stack.bottom(), greenlet_entry, &mut storage) };
        let parent = self.parent.unwrap_or_else(current);
        Ok(Greenlet {
            inner: Rc::new(Inner {
                id,
                name: self.name,
                is_main: false,
                state: Cell::new(State::NotStarted),
                sp: Cell::new(Some(sp)),
                stack: Cell::new(Some(stack)),
                body: Cell::new(Some(Box::new(body))),
                parent: RefCell::new(Some(parent)),
                storage: UnsafeCell::new(storage),
            }),
        })
    }
}

/// Boxes a value for a switch, without boxing twice if it already is a [`Value`].
fn into_value<T: Any>(value: T) -> Value {
    let boxed: Value = Box::new(value);
    match boxed.downcast::<Value>() {
        Ok(inner) => *inner,
        Err(boxed) => boxed,
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
        let _ = current();
        MAIN.with(|m| {
            let main = m.take().expect("main greenlet exists once CURRENT is set");
            let out = main.clone();
            m.set(Some(main));
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
    pub fn switch<T: Any>(&self, value: T) -> Value {
        switch_to(self, Payload::Value(into_value(value)))
    }

    /// Raises a panic with `payload` inside this greenlet, at its pending `switch`
    /// (greenlet's `throw`), and transfers control to it. If the greenlet has not started,
    /// it never runs: it dies at once and the panic goes to its parent (or, for
    /// [`GreenletExit`], the parent receives the `GreenletExit` value). If it is dead, the
    /// panic is raised in its nearest live ancestor.
    pub fn throw(&self, payload: impl Any + Send) -> Value {
        switch_to(self, Payload::Throw(Box::new(payload)))
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

    /// The greenlet's process-unique id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The name given with [`Builder::name`] (`"main"` for a main greenlet).
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
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
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("state", &self.inner.state.get())
            .finish()
    }
}

impl Drop for Greenlet {
    fn drop(&mut self) {
        // The last handle of a suspended greenlet: kill it so its stack unwinds. (A running
        // greenlet is held by CURRENT, so this cannot be the running one.)
        // During thread teardown (CURRENT already destroyed) nothing can run any more: the
        // stack is released without unwinding.
        if Rc::strong_count(&self.inner) == 1
            && self.inner.state.get() == State::Suspended
            && CURRENT.try_with(|_| ()).is_ok()
        {
            kill_on_drop(self);
        }
    }
}

#[cold]
fn kill_on_drop(g: &Greenlet) {
    let me = current();
    // Temporarily parent it to us so that control comes back here when it dies.
    let old_parent = g.inner.parent.replace(Some(me));
    let mut rounds = 0;
    while g.inner.state.get() == State::Suspended && rounds < 8 {
        rounds += 1;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            switch_to(g, Payload::Throw(Box::new(GreenletExit)))
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

fn switch_to(target: &Greenlet, payload: Payload) -> Value {
    let target = live_target(target);
    let me = current();
    if target.ptr_eq(&me) {
        return match payload {
            Payload::Value(v) => v,
            Payload::Throw(p) => panic::resume_unwind(p),
        };
    }
    if target.inner.state.get() == State::NotStarted {
        if let Payload::Throw(p) = payload {
            return throw_unstarted(&target, p);
        }
    }
    let sp = target.inner.sp.take().expect("a suspended greenlet has a saved context");
    me.inner.state.set(State::Suspended);
    target.inner.state.set(State::Running);
    CURRENT.with(|c| c.set(Some(target)));
    let mut msg = Message {
        from: Some(me),
        payload: Some(payload),
    };
    // SAFETY: `sp` is the target's saved (or fresh) context, taken out of its record so it
    // is resumed once. `msg` lives in this frame until something switches back here.
    let (from, data) = unsafe { context::switch(sp, &mut msg as *mut Message as usize) };
    // SAFETY: every switch to a greenlet passes the address of a live `Message`.
    unsafe { receive(from, data) }
}

/// Bookkeeping on arrival in a greenlet: record where the previous greenlet was suspended
/// (or free its stack if it died), then take the payload.
///
/// # Safety
/// `data` must be the address of the live `Message` of the greenlet that switched to us.
unsafe fn receive(from: StackPointer, data: usize) -> Value {
    // SAFETY: per the contract.
    let msg = unsafe { &mut *(data as *mut Message) };
    let payload = msg.payload.take();
    if let Some(prev) = msg.from.take() {
        if prev.inner.state.get() == State::Dead {
            release(&prev);
        } else {
            prev.inner.sp.set(Some(from));
        }
        drop(prev);
    }
    match payload {
        Some(Payload::Value(v)) => v,
        Some(Payload::Throw(p)) => panic::resume_unwind(p),
        None => unreachable!("verdant: greenlet switch without a payload"),
    }
}

/// Frees a dead greenlet's stack (it is never resumed again).
fn release(g: &Greenlet) {
    g.inner.sp.set(None);
    if let Some(stack) = g.inner.stack.take() {
        stack::give_back(stack);
    }
    // SAFETY: the greenlet is dead: its context will never run again, so nothing else
    // uses its storage; replacing it drops the backend's per-context state.
    unsafe { *g.inner.storage.get() = ContextStorage::default() };
    drop(g.inner.body.take());
}

/// `throw` into a greenlet that never ran: it dies without running.
fn throw_unstarted(target: &Greenlet, payload: Box<dyn Any + Send>) -> Value {
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

unsafe extern "C" fn greenlet_entry(data: usize, from: StackPointer) -> ! {
    // SAFETY: the first switch to a greenlet passes a live `Message` like any other.
    let first = panic::catch_unwind(AssertUnwindSafe(|| unsafe { receive(from, data) }));
    // No handle to ourselves may stay on this stack while the body runs: the last user
    // handle being dropped is what kills a suspended greenlet.
    let body = current().inner.body.take().expect("a fresh greenlet has a body");
    let result = match first {
        Ok(arg) => panic::catch_unwind(AssertUnwindSafe(move || body(arg))),
        Err(payload) => Err(payload),
    };
    let me = current();
    let payload = match result {
        Ok(v) => Payload::Value(v),
        Err(p) if p.is::<GreenletExit>() => Payload::Value(Box::new(GreenletExit)),
        Err(p) => Payload::Throw(p),
    };
    me.inner.state.set(State::Dead);
    let parent = live_target(&me.parent().expect("non-main greenlets have a parent"));
    let sp = parent.inner.sp.take().expect("a live parent has a saved context");
    parent.inner.state.set(State::Running);
    CURRENT.with(|c| c.set(Some(parent)));
    // The message lives on this (dying) stack; the receiver frees the stack only after
    // taking everything out of it, and `me` travels inside it, so nothing is left here.
    let mut msg = Message {
        from: Some(me),
        payload: Some(payload),
    };
    // SAFETY: final switch to the parent's saved context; this context is never resumed.
    unsafe { context::switch(sp, &mut msg as *mut Message as usize) };
    crate::sys::signal::abort()
}
