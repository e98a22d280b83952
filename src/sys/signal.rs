//! Fault handling for stack overflow detection: a process-wide SIGSEGV/SIGBUS handler on an
//! alternate signal stack, chained to whatever handler was installed before (Rust's own
//! main-thread overflow handler, a sanitizer, a crash reporter).
//!
//! The handler asks a hook (provided by `stack.rs`) whether the faulting address lies in a
//! green-thread guard page. If it does, the hook reports and aborts. If not, the fault is
//! handed to the previous handler; if that was the default action, the default is
//! restored and the faulting instruction re-executes, so the process dies exactly as it
//! would have without verdant.
//!
//! Everything reachable from the handler is async-signal-safe: no allocation, no locks,
//! only `write(2)`, `sigaction(2)` and `abort(3)`.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::sync::Once;

/// Decides whether a fault at `addr` hit a green-thread guard page. If it did, the hook
/// reports it and does not return; if it returns, the fault was not ours.
pub(crate) type FaultHook = fn(addr: usize);

struct PrevHandlers {
    segv: UnsafeCell<libc::sigaction>,
    bus: UnsafeCell<libc::sigaction>,
    hook: Cell<Option<FaultHook>>,
}

// SAFETY: the cells are written only inside `INSTALL.call_once`, before the handler that
// reads them is installed, and never again; afterwards all access is read-only.
unsafe impl Sync for PrevHandlers {}

static PREV: PrevHandlers = PrevHandlers {
    // SAFETY: `sigaction` is a plain C struct for which all-zeroes is a valid value.
    segv: UnsafeCell::new(unsafe { core::mem::zeroed() }),
    // SAFETY: as above.
    bus: UnsafeCell::new(unsafe { core::mem::zeroed() }),
    hook: Cell::new(None),
};
static INSTALL: Once = Once::new();

/// Installs the fault handler once per process.
pub(crate) fn install_fault_handler(hook: FaultHook) {
    INSTALL.call_once(|| {
        PREV.hook.set(Some(hook));
        for (sig, slot) in [(libc::SIGSEGV, &PREV.segv), (libc::SIGBUS, &PREV.bus)] {
            // SAFETY: we build a valid sigaction for a handler with the SA_SIGINFO
            // signature, and `slot` is only written here, before the handler runs.
            unsafe {
                let mut action: libc::sigaction = core::mem::zeroed();
                action.sa_sigaction = fault_handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, slot.get());
            }
        }
    });
}

extern "C" fn fault_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands us a valid siginfo for SIGSEGV/SIGBUS.
    let addr = unsafe { fault_address(info) };
    if let Some(hook) = PREV.hook.get() {
        hook(addr);
    }
    let slot = if sig == libc::SIGBUS {
        &PREV.bus
    } else {
        &PREV.segv
    };
    // SAFETY: `slot` was filled before this handler was installed and is read-only now.
    let prev = unsafe { &*slot.get() };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again and
        // the process terminates as it would have without us.
        // SAFETY: resetting a signal to SIG_DFL is async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, core::ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was installed without SA_SIGINFO: one int argument.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn fault_address(info: *mut libc::siginfo_t) -> usize {
    // SAFETY: the caller passes the kernel's siginfo for a fault signal.
    unsafe { (*info).si_addr() as usize }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
unsafe fn fault_address(info: *mut libc::siginfo_t) -> usize {
    // SAFETY: the caller passes the kernel's siginfo for a fault signal.
    unsafe { (*info).si_addr as usize }
}

/// Size of the alternate signal stack verdant installs on threads that have none.
const ALT_STACK_SIZE: usize = 64 * 1024;

struct AltStack {
    base: *mut u8,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disable the alternate stack before unmapping it; both calls are on memory
        // we mapped in `ensure_alt_stack` and nothing else refers to it.
        unsafe {
            let mut disable: libc::stack_t = core::mem::zeroed();
            disable.ss_flags = libc::SS_DISABLE;
            libc::sigaltstack(&disable, core::ptr::null_mut());
            super::memory::unmap(self.base, self.len);
        }
    }
}

thread_local! {
    static ALT_STACK: Cell<bool> = const { Cell::new(false) };
    static ALT_STACK_OWNED: UnsafeCell<Option<AltStack>> = const { UnsafeCell::new(None) };
}

/// Makes sure the calling thread has an alternate signal stack, so that the fault handler
/// can run when a green thread's stack is exhausted. Threads started by `std` already have
/// one; others (a C program's threads) get one that is freed when the thread exits.
pub(crate) fn ensure_alt_stack() -> io::Result<()> {
    if ALT_STACK.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: querying the current alternate stack has no preconditions.
    let mut current: libc::stack_t = unsafe { core::mem::zeroed() };
    // SAFETY: `current` is a valid out-pointer.
    if unsafe { libc::sigaltstack(core::ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.ss_flags & libc::SS_DISABLE == 0 {
        ALT_STACK.with(|c| c.set(true));
        return Ok(());
    }
    let len = ALT_STACK_SIZE.max(libc::SIGSTKSZ);
    let base = super::memory::map_stack(len)?;
    let owned = AltStack { base, len };
    let stack = libc::stack_t {
        ss_sp: base.cast(),
        ss_flags: 0,
        ss_size: len,
    };
    // SAFETY: `stack` describes memory we own for as long as the thread lives (freed by the
    // thread-local's destructor, which disables it first).
    if unsafe { libc::sigaltstack(&stack, core::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the thread-local is only touched by this thread, here, once.
    ALT_STACK_OWNED.with(|slot| unsafe { *slot.get() = Some(owned) });
    ALT_STACK.with(|c| c.set(true));
    Ok(())
}

/// Writes `bytes` to standard error without allocating (async-signal-safe).
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing a valid buffer to fd 2.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Terminates the process abnormally (async-signal-safe).
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
