//! x86_64 System V backend: `arch/x86_64_sysv.s` plus the inline-asm call site.
//!
//! The switch is inlined at every call site (seven instructions, documented with the saved
//! frame in the header of `arch/x86_64_sysv.s`); the .s file holds the entry trampoline.
//! The call site declares every register the switch does not save as clobbered, so the
//! compiler saves exactly the callee-saved registers that are live at each call site.

use super::{Entry, EntryFn, StackPointer, INIT_FRAME_BYTES};
use core::arch::{asm, global_asm};
use core::num::NonZeroUsize;

global_asm!(concat!(
    asm_prelude!(),
    include_str!("../../arch/x86_64_sysv.s")
));

extern "C" {
    // Not callable as a Rust function: custom register convention, see the .s header.
    fn verdant_trampoline();
}

/// Name of this backend, for benchmarks and diagnostics.
pub(crate) const BACKEND: &str = "x86_64 System V asm";

/// Per-context storage this backend needs besides the stack: none.
#[derive(Debug, Default)]
pub(crate) struct ContextStorage {
    _none: (),
}

/// Lays out the initial frame (see the .s header) at the top of a stack.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a writable stack with at least
/// [`INIT_FRAME_BYTES`] bytes below it, which stays mapped until the context is dead.
pub(crate) unsafe fn init(
    top: *mut u8,
    _bottom: *mut u8,
    entry: EntryFn,
    _storage: &mut ContextStorage,
) -> StackPointer {
    debug_assert_eq!(top as usize % 16, 0);
    const _: () = assert!(INIT_FRAME_BYTES >= 40);
    let words = top.cast::<usize>();
    // SAFETY: the caller guarantees INIT_FRAME_BYTES writable bytes below `top`; we write
    // two words of the initial frame, all within 40 bytes below `top`.
    unsafe {
        // `top - 8` and `top - 16`: padding that keeps rsp 16-byte aligned at the
        // trampoline's call, never read (not even by a backtrace, which stops at the
        // trampoline's return address, pushed at `top - 24`, or at the rbp = 0 it sets):
        // not written, which saves a spawn on a reused stack two stores. `top - 24` is not
        // written either: the trampoline's `call` pushes its return address there.
        words.sub(4).write(entry as *const () as usize); // entry function
        words.sub(5).write(verdant_trampoline as *const () as usize); // resume address
        StackPointer(NonZeroUsize::new_unchecked(words.sub(5) as usize))
    }
}

/// [`init`] for the entry `E`: the resume address is a trampoline made for it
/// ([`trampoline_for`]), which calls it directly, so that the entry's address is neither
/// stored here nor loaded at the start (one word of the initial frame written, not two).
///
/// # Safety
/// As [`init`].
#[inline(always)]
pub(crate) unsafe fn init_for<E: Entry>(
    top: *mut u8,
    _bottom: *mut u8,
    _storage: &mut ContextStorage,
) -> StackPointer {
    debug_assert_eq!(top as usize % 16, 0);
    const _: () = assert!(INIT_FRAME_BYTES >= 40);
    let words = top.cast::<usize>();
    // SAFETY: the caller guarantees INIT_FRAME_BYTES writable bytes below `top`; we write
    // one word of the initial frame, 40 bytes below `top`. The others are as `init` leaves
    // them, and `top - 32` (the entry's address there) is not read by this trampoline.
    unsafe {
        words
            .sub(5)
            .write(trampoline_for::<E> as *const () as usize); // resume address
        StackPointer(NonZeroUsize::new_unchecked(words.sub(5) as usize))
    }
}

/// `verdant_trampoline` (arch/x86_64_sysv.s) for the entry `E`, called directly rather than
/// through the entry's address at `top - 32`: the same register convention, stack layout,
/// alignment and CFI (the root of the coroutine's stack), the same four instructions, one
/// load fewer. Not callable as a Rust function: custom register convention.
#[unsafe(naked)]
unsafe extern "C" fn trampoline_for<E: Entry>() {
    core::arch::naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined rip",  // no caller: this is the root of the coroutine's stack
        "xchg rsi, rsp",       // onto our fresh stack; rsi = `from`, the second argument
        "lea rsp, [rsp + 24]", // past the resume address and two unwritten words: top - 16
        "xor ebp, ebp",        // rbp = 0: the end of the frame-pointer chain
        "call {entry}",        // entry(data, from); pushes a return address for unwinders
        "ud2",                 // the entry function never returns
        ".cfi_endproc",
        entry = sym E::entry,
    )
}

/// Suspends the current context and resumes `to`, passing `data`.
///
/// Returns, once something switches back, the [`StackPointer`] of that context and the data
/// word it passed.
///
/// # Safety
/// `to` must be a suspended context of this OS thread that has not been resumed since it
/// was produced (by [`init`] or as the `from` of a switch), and no panic may unwind across
/// this call.
#[inline(always)]
pub(crate) unsafe fn switch(to: StackPointer, data: usize) -> (StackPointer, usize) {
    let from: usize;
    let data_out: usize;
    // SAFETY: the sequence documented in arch/x86_64_sysv.s: it saves rbx, rbp and the
    // resume address on this stack, jumps to `to`'s resume address (valid per the caller's
    // contract) and continues after the `call` only when some context switches to the
    // StackPointer it produced, with rsi = that StackPointer, rdi = the data word and rax =
    // the switcher's StackPointer. Every other register is declared clobbered; the asm
    // pushes to the stack, so `nostack` is not given and the red zone is not in use.
    unsafe {
        asm!(
            "push rbp",           // save rbp on our stack
            "push rbx",           // save rbx on our stack
            "call [rsi]",         // push our resume address, jump to the target's
            "mov rax, rsp",       // (resumed) rax = StackPointer of the context that switched
            "lea rsp, [rsi + 8]", // back on our stack, past our consumed resume address
            "pop rbx",            // restore rbx
            "pop rbp",            // restore rbp
            inout("rdi") data => data_out,
            inout("rsi") to.0.get() => _,
            out("rax") from,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("C"),
        );
        (StackPointer(NonZeroUsize::new_unchecked(from)), data_out)
    }
}

/// Switches to `to` for the last time, passing `data`: the current context is finished and
/// never resumed, so nothing of it is saved (no `rbx`/`rbp` pushed, no register declared
/// clobbered: the caller's frame needs no callee-saved register spilled for this call site).
/// It never returns, but is not declared `noreturn` (nor `-> !`): the caller aborts after
/// it, as after a [`switch`] that came back, so that LLVM keeps the path's shape (with
/// `noreturn` it took the path for a cold one and moved code before it out of line).
/// The target resumes as from [`switch`] (its resume code is the same); the StackPointer it
/// receives as the switcher's points at the resume address this `call` pushed and must never
/// be switched to.
///
/// # Safety
/// As [`switch`] for `to`; the current context must never be resumed (its stack is dead:
/// nothing on it is dropped or used again except by whoever frees it).
#[inline(always)]
pub(crate) unsafe fn switch_final(to: StackPointer, data: usize) {
    // SAFETY: the `call [rsi]` of the sequence in arch/x86_64_sysv.s, without the pushes of
    // rbx and rbp, which nobody restores: the target's resume code reads rsi (its own
    // StackPointer, valid per the caller's contract), rdi (the data word) and rsp (only as
    // the switcher's StackPointer). Control never comes back, so nothing needs to be
    // declared clobbered.
    unsafe {
        asm!(
            "call [rsi]", // jump to the target's resume address (the pushed one is never used)
            in("rdi") data,
            in("rsi") to.0.get(),
        );
    }
}
