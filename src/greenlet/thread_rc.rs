//! [`ThreadRc`]: a thread's own `Rc<T>` (the hub), read with one thread-local load.
//!
//! A `thread_local!` of a type with a destructor costs a state test on every access: std
//! registers the destructor lazily, on first use, and must know whether it was. A value
//! that is released at thread exit *and* read on every hand-off between green threads is
//! therefore kept in two thread-locals, both declared by [`thread_rc!`] and private to it:
//!
//! ```text
//!   PTR   : Cell<*const T>        const-initialised, no destructor: an access is one load
//!                                 (no state byte, nothing registered)
//!   OWNER : Owner(Option<Rc<T>>)  has the destructor: touched when the value is installed
//!                                 (which registers it, on first use as before) and at thread
//!                                 exit, when it clears PTR, runs the exit hook, and only
//!                                 then drops the Rc
//! ```
//! Invariant: PTR is null, or `Rc::as_ptr` of the `Rc` that OWNER holds. Only the macro's
//! own expansion writes either, and no code outside it can name them. A reference handed
//! out by [`ThreadRc::with`] lives for that call only, and OWNER's destructor runs at
//! thread exit, when no such call is on the thread's stack any more (one on a suspended
//! greenlet's stack never resumes: the exit hook marks the thread's teardown), so the
//! value outlives every reference to it.

use std::marker::PhantomData;
use std::rc::Rc;

/// The two thread-locals behind a [`ThreadRc`], implemented by [`thread_rc!`] only.
///
/// # Safety
/// [`get`](Self::get) returns null or the `Rc::as_ptr` of an `Rc` that is kept alive
/// until `get` returns null again, and at least until the thread exits (when no
/// reference from [`ThreadRc::with`] can be alive any more); [`install`](Self::install)
/// moves the `Rc` it creates where it is kept so, and then `get` returns its address.
#[doc(hidden)]
pub(crate) unsafe trait ThreadRcSlot: 'static {
    type Value: 'static;
    /// The value's address, or null.
    fn get() -> *const Self::Value;
    /// Creates the value with `init` and keeps it; [`get`](Self::get) returns its address
    /// from now on, as this does. Panics, before `init` runs, once the thread has
    /// destroyed the owner (thread exit), as a destroyed thread-local does.
    fn install(init: fn() -> Rc<Self::Value>) -> *const Self::Value;
}

/// A thread's own `Rc<T>`, created on first use and released at thread exit: see the
/// module docs. Declared with [`thread_rc!`].
pub(crate) struct ThreadRc<S>(PhantomData<S>);

impl<S: ThreadRcSlot> ThreadRc<S> {
    #[doc(hidden)]
    pub(crate) const fn new() -> ThreadRc<S> {
        ThreadRc(PhantomData)
    }

    /// Runs `f` with the value, `None` before it is created or once the thread is tearing
    /// its locals down. Never creates it.
    #[inline(always)]
    pub(crate) fn with<R>(&'static self, f: impl FnOnce(Option<&S::Value>) -> R) -> R {
        // SAFETY: null, or the address of the `Rc` that is kept alive while it is set and
        // until the thread exits (`ThreadRcSlot`'s contract); the reference does not
        // outlive this call.
        f(unsafe { S::get().as_ref() })
    }

    /// Runs `f` with the value, created by `init` first if there is none.
    #[inline(always)]
    pub(crate) fn with_or_init<R>(
        &'static self,
        init: fn() -> Rc<S::Value>,
        f: impl FnOnce(&S::Value) -> R,
    ) -> R {
        let mut raw = S::get();
        if raw.is_null() {
            raw = Self::install_new(init);
        }
        // SAFETY: as in `with`; not null: set just above if it was.
        f(unsafe { &*raw })
    }

    /// A new handle to the value, created by `init` first if there is none.
    pub(crate) fn rc_or_init(&'static self, init: fn() -> Rc<S::Value>) -> Rc<S::Value> {
        self.with_or_init(init, |value| {
            let raw: *const S::Value = value;
            // SAFETY: `raw` is the `Rc::as_ptr` of the `Rc` kept by the slot
            // (`ThreadRcSlot`'s contract); the increment gives the new handle its own
            // reference.
            unsafe {
                Rc::increment_strong_count(raw);
                Rc::from_raw(raw)
            }
        })
    }

    /// A new handle to the value, if there is one (see [`with`](Self::with)).
    pub(crate) fn rc(&'static self) -> Option<Rc<S::Value>> {
        self.with(|value| {
            value.map(|value| {
                let raw: *const S::Value = value;
                // SAFETY: as in `rc_or_init`.
                unsafe {
                    Rc::increment_strong_count(raw);
                    Rc::from_raw(raw)
                }
            })
        })
    }

    /// Creates the value and installs it; its address.
    #[cold]
    #[inline(never)]
    fn install_new(init: fn() -> Rc<S::Value>) -> *const S::Value {
        S::install(init)
    }
}

/// Declares `static NAME: ThreadRc<..>` holding a `T` (see the module docs), and beside it
/// a module `NAME` with its two thread-locals; `at_exit` runs at thread exit, after the
/// value can no longer be reached and before it is dropped.
macro_rules! thread_rc {
    ($(#[$attr:meta])* static $name:ident: ThreadRc<$t:ty>, at_exit: $hook:expr;) => {
        $(#[$attr])*
        static $name: $crate::greenlet::ThreadRc<$name::Slot> = $crate::greenlet::ThreadRc::new();

        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use ::std::cell::Cell;
            use ::std::rc::Rc;

            pub(super) struct Slot;

            ::std::thread_local! {
                static PTR: Cell<*const $t> = const { Cell::new(::std::ptr::null()) };
                static OWNER: Owner = const { Owner(Cell::new(None)) };
            }

            struct Owner(Cell<Option<Rc<$t>>>);

            impl Drop for Owner {
                fn drop(&mut self) {
                    PTR.set(::std::ptr::null());
                    ($hook)();
                    drop(self.0.take());
                }
            }

            // SAFETY: `PTR` and `OWNER` are private to this module. `install` sets `PTR`
            // to the address of the `Rc` it has just moved into `OWNER`, which keeps it
            // until `Owner`'s destructor (thread exit) clears `PTR` and only then drops it;
            // nothing else writes either.
            unsafe impl $crate::greenlet::ThreadRcSlot for Slot {
                type Value = $t;

                #[inline(always)]
                fn get() -> *const $t {
                    PTR.get()
                }

                fn install(init: fn() -> Rc<$t>) -> *const $t {
                    // `init` runs inside: nothing is created once `OWNER` is destroyed.
                    OWNER.with(|owner| {
                        let value = init();
                        let raw = Rc::as_ptr(&value);
                        // The installed one (if `init` made one too) stays: `PTR` may point
                        // to it.
                        let installed = owner.0.take();
                        let twice = installed.is_some();
                        owner.0.set(installed.or(Some(value)));
                        assert!(
                            !twice,
                            "verdant: a thread's {} was created twice (its creation used it)",
                            stringify!($name)
                        );
                        PTR.set(raw);
                        raw
                    })
                }
            }
        }
    };
}
pub(crate) use thread_rc;

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What each step saw, in order: 1 = the exit hook ran, 2 = the value was dropped while
    /// the slot already read as empty.
    static STEPS: AtomicUsize = AtomicUsize::new(0);
    static CREATED: AtomicUsize = AtomicUsize::new(0);

    struct Probe {
        touched: Cell<u32>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let empty = PROBE.with(|p| p.is_none());
            let step = if empty { 2 } else { 20 };
            STEPS.store(STEPS.load(Ordering::SeqCst) * 10 + step, Ordering::SeqCst);
        }
    }

    fn exit_hook() {
        STEPS.store(STEPS.load(Ordering::SeqCst) * 10 + 1, Ordering::SeqCst);
    }

    fn new_probe() -> Rc<Probe> {
        CREATED.fetch_add(1, Ordering::SeqCst);
        Rc::new(Probe {
            touched: Cell::new(0),
        })
    }

    thread_rc! {
        static PROBE: ThreadRc<Probe>, at_exit: exit_hook;
    }

    /// Destroyed after `PROBE`'s owner (registered before it: destructors run in reverse
    /// order): asks for the value again, which must fail without creating one.
    struct Late;

    impl Drop for Late {
        fn drop(&mut self) {
            let again = std::panic::catch_unwind(|| PROBE.with_or_init(new_probe, |_| ()));
            assert!(again.is_err(), "no value once the thread has released it");
        }
    }

    thread_local! {
        static LATE: Late = const { Late };
    }

    #[test]
    fn created_once_per_thread_and_released_at_its_exit_after_the_hook() {
        std::thread::spawn(|| {
            LATE.with(|_| ());
            assert!(PROBE.with(|p| p.is_none()), "not created before first use");
            PROBE.with_or_init(new_probe, |p| p.touched.set(p.touched.get() + 1));
            PROBE.with_or_init(new_probe, |p| p.touched.set(p.touched.get() + 1));
            let handle = PROBE.rc_or_init(new_probe);
            assert_eq!(handle.touched.get(), 2, "the same value both times");
            assert_eq!(Rc::strong_count(&handle), 2, "the slot's and this one");
            drop(handle);
            assert!(PROBE.rc().is_some());
        })
        .join()
        .unwrap();
        assert_eq!(
            CREATED.load(Ordering::SeqCst),
            1,
            "created once, and not again at thread exit"
        );
        assert_eq!(
            STEPS.load(Ordering::SeqCst),
            12,
            "at thread exit: the hook, then the drop, with the slot already empty"
        );
    }
}
