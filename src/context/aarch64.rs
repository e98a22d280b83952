//! AArch64 AAPCS64 backend: `arch/aarch64_aapcs.s` plus the inline-asm call site.
//!
//! The switch is inlined at every call site (seven instructions, documented with the saved
//! frame in the header of `arch/aarch64_aapcs.s`); the .s file holds the entry trampoline.
//! The call site declares every register the switch does not save as clobbered, so the
//! compiler saves exactly the callee-saved registers that are live at each call site.

use super::{Entry, EntryFn, StackPointer, INIT_FRAME_BYTES};
use core::arch::{asm, global_asm};
use core::num::NonZeroUsize;

global_asm!(concat!(
    asm_prelude!(),
    include_str!("../../arch/aarch64_aapcs.s")
));

extern "C" {
    // Not callable as a Rust function: custom register convention, see the .s header.
    fn verdant_trampoline();
}

/// Name of this backend, for benchmarks and diagnostics.
pub(crate) const BACKEND: &str = "aarch64 AAPCS64 asm";

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
    const _: () = assert!(INIT_FRAME_BYTES >= 48);
    let words = top.cast::<usize>();
    // SAFETY: the caller guarantees INIT_FRAME_BYTES writable bytes below `top`; we write
    // the six words of the initial frame, all within 48 bytes below `top`.
    unsafe {
        words.sub(1).write(0); // zero frame record slot
        words.sub(2).write(0); // zero frame record slot
        words.sub(3).write(0); // padding
        words.sub(4).write(verdant_trampoline as *const () as usize); // resume address
        words.sub(5).write(0); // x29 = 0: end of the frame chain
        words.sub(6).write(entry as *const () as usize); // x19 = entry function
        StackPointer(NonZeroUsize::new_unchecked(words.sub(6) as usize))
    }
}

/// [`init`] for the entry `E`: the resume address is a trampoline made for it
/// ([`trampoline_for`]), which calls it directly and zeroes x29 itself, so that neither the
/// entry's address (x19's slot) nor x29's zero is stored here, nor loaded at the start.
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
    const _: () = assert!(INIT_FRAME_BYTES >= 48);
    let words = top.cast::<usize>();
    // SAFETY: the caller guarantees INIT_FRAME_BYTES writable bytes below `top`; we write
    // four words of the initial frame, all within 48 bytes below `top`. The saved x19 and
    // x29 slots (`top - 48`, `top - 40`) are not read by this trampoline.
    unsafe {
        words.sub(1).write(0); // zero frame record slot
        words.sub(2).write(0); // zero frame record slot
        words.sub(3).write(0); // padding
        words
            .sub(4)
            .write(trampoline_for::<E> as *const () as usize); // resume address
        StackPointer(NonZeroUsize::new_unchecked(words.sub(6) as usize))
    }
}

/// `verdant_trampoline` (arch/aarch64_aapcs.s) for the entry `E`, called directly rather
/// than through the entry's address in x19's slot: the same register convention, stack
/// layout and CFI (the root of the coroutine's stack), x29 zeroed by an instruction rather
/// than loaded. Not callable as a Rust function: custom register convention.
#[unsafe(naked)]
unsafe extern "C" fn trampoline_for<E: Entry>() {
    core::arch::naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined x30",  // no caller: this is the root of the coroutine's stack
        "str x30, [sp, #16]",  // complete the switching context's frame
        "mov x2, sp",          // x2 = StackPointer of the context that started us
        "add sp, x1, #32",     // onto our fresh stack, past the initial frame: top - 16
        "mov x29, xzr",        // x29 = 0: the end of the frame chain
        "mov x1, x2",          // second argument: `from`
        "bl {entry}",          // entry(data, from); sets x30 for unwinders
        "brk #0x1",            // the entry function never returns
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
    // SAFETY: the sequence documented in arch/aarch64_aapcs.s: it saves x19, x29 and the
    // resume address on this stack, jumps to `to`'s resume address (valid per the caller's
    // contract) and continues after the `blr` only when some context switches to the
    // StackPointer it produced, with x1 = that StackPointer, x0 = the data word and x30 =
    // the switcher's resume address. Every other register is declared clobbered
    // (clobber_abi("C") includes x30).
    unsafe {
        asm!(
            "stp x19, x29, [sp, #-32]!", // save x19 and fp, reserve the 32-byte frame
            "ldr x2, [x1, #16]",         // x2 = the target's resume address
            "blr x2",                    // x30 = our resume address; jump to the target
            "str x30, [sp, #16]",        // (resumed) complete the switcher's frame
            "mov x2, sp",                // x2 = StackPointer of the context that switched
            "mov sp, x1",                // back on our own stack
            "ldp x19, x29, [sp], #32",   // restore x19 and fp, pop the frame
            inout("x0") data => data_out,
            inout("x1") to.0.get() => _,
            out("x2") from,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
            out("x25") _, out("x26") _, out("x27") _, out("x28") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            clobber_abi("C"),
        );
        (StackPointer(NonZeroUsize::new_unchecked(from)), data_out)
    }
}

/// Switches to `to` for the last time, passing `data`: the current context is finished and
/// never resumed, so no register is declared clobbered (the caller's frame needs no
/// callee-saved register spilled for this call site). The target resumes as from [`switch`]
/// (its resume code is the same, and completes the switcher's frame, reserved here as
/// there); the StackPointer it receives as the switcher's must never be switched to. It
/// never returns, but is not declared `noreturn` (nor `-> !`): see the x86_64 backend.
///
/// # Safety
/// As [`switch`] for `to`; the current context must never be resumed (its stack is dead:
/// nothing on it is dropped or used again except by whoever frees it).
#[inline(always)]
pub(crate) unsafe fn switch_final(to: StackPointer, data: usize) {
    // SAFETY: the first three instructions of the sequence in arch/aarch64_aapcs.s: the
    // frame is reserved as there (the target's resume code stores the switcher's resume
    // address into it), x1 is the target's StackPointer (valid per the caller's contract)
    // and x0 the data word. Control never comes back; x2 and x30 are declared clobbered
    // all the same, as what the sequence writes.
    unsafe {
        asm!(
            "stp x19, x29, [sp, #-32]!", // the switcher's frame, which the target completes
            "ldr x2, [x1, #16]",         // x2 = the target's resume address
            "blr x2",                    // jump to the target (never comes back)
            in("x0") data,
            in("x1") to.0.get(),
            out("x2") _,
            out("x30") _,
        );
    }
}
