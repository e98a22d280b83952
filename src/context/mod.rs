//! Raw machine contexts: the lowest layer of verdant.
//!
//! A *context* is a suspended thread of execution on its own stack, represented by a single
//! [`StackPointer`]. The contract every backend implements is boost.context's:
//!
//! * [`init`]: lay out a fresh stack so that the first switch to it calls `entry(data, from)`
//!   ([`init_for`]: the same for an entry known by its type, [`Entry`]).
//! * [`switch`]: suspend the current context and resume `to`, handing it a data word. When
//!   something later switches back, `switch` returns the [`StackPointer`] of the context that
//!   did so (the handle to resume *it* with) and the data word it passed.
//! * [`switch_final`]: the last switch of a finished context, which is never resumed:
//!   nothing of it is saved, and the caller's frame spills no register for it.
//!
//! A [`StackPointer`] is consumed by switching to it: each suspension produces a new one.
//! The layers above (`coroutine`, `greenlet`) keep track of who is suspended where.
//!
//! Backends, chosen in one `cfg` ladder:
//!
//! | target                 | backend                                               |
//! |------------------------|-------------------------------------------------------|
//! | x86_64 (System V)      | `arch/x86_64_sysv.s` + inline asm call site           |
//! | aarch64 (AAPCS64)      | `arch/aarch64_aapcs.s` + inline asm call site         |
//! | anything else, or the `fallback-context` feature | corosensei coroutines, see `fallback.rs` |
//!
//! Invariants the layers above rely on:
//! * Nothing unwinds across a switch: panics are caught at the stack root (the entry
//!   function) and carried as values.
//! * `entry` never returns; a finished context switches away for the last time and its
//!   stack is then released by its owner.
//! * Contexts never migrate between OS threads.

use core::num::NonZeroUsize;

/// Opaque handle to a suspended context: the stack pointer at which its saved frame lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct StackPointer(pub(crate) NonZeroUsize);

/// The function a fresh context starts in: receives the data word of the first switch and
/// the [`StackPointer`] of the context that performed it. Must never return.
pub(crate) type EntryFn = unsafe extern "C" fn(data: usize, from: StackPointer) -> !;

/// An entry function known by its type, for [`init_for`]: the first switch to the context
/// reaches it through a trampoline made for it, which calls it directly. [`init`] stores the
/// entry's address in the initial frame, and the common trampoline loads it from there; a
/// typed entry costs neither (a store per context made, a load per start: the hub's spawn).
pub(crate) trait Entry {
    /// The entry function, as an [`EntryFn`]: the same contract.
    ///
    /// # Safety
    /// Called only by the first switch to a context made by [`init_for`] for this type.
    unsafe extern "C" fn entry(data: usize, from: StackPointer) -> !;
}

/// Bytes a stack must offer above its usable top for [`init`]'s initial frame.
pub(crate) const INIT_FRAME_BYTES: usize = 64;

/// Defines the `verdant_func` / `verdant_endfunc` assembler macros for the object format, so
/// one `.s` file per architecture serves ELF and Mach-O alike.
#[cfg(not(any(target_vendor = "apple", feature = "fallback-context")))]
macro_rules! asm_prelude {
    () => {
        ".macro verdant_func name
    .text
    .p2align 4
    .globl \\name
    .hidden \\name
    .type \\name, %function
\\name:
.endm
.macro verdant_endfunc name
    .size \\name, . - \\name
.endm
"
    };
}
#[cfg(all(target_vendor = "apple", not(feature = "fallback-context")))]
macro_rules! asm_prelude {
    () => {
        ".macro verdant_func name
    .text
    .p2align 4
    .globl _\\name
    .private_extern _\\name
_\\name:
.endm
.macro verdant_endfunc name
.endm
"
    };
}

#[cfg(all(target_arch = "x86_64", not(feature = "fallback-context")))]
#[path = "x86_64.rs"]
mod backend;

#[cfg(all(target_arch = "aarch64", not(feature = "fallback-context")))]
#[path = "aarch64.rs"]
mod backend;

#[cfg(any(
    feature = "fallback-context",
    not(any(target_arch = "x86_64", target_arch = "aarch64"))
))]
#[path = "fallback.rs"]
mod backend;

pub(crate) use backend::{init, init_for, switch, switch_final, ContextStorage, BACKEND};

/// Asks the CPU to bring the cache line holding `addr` into the L1 data cache, without
/// waiting for it: a hint, which never faults (any address will do, mapped or not) and
/// has no effect on what the program computes. The hub uses it to overlap the misses of
/// the next green thread to run (its records and the top of its suspended stack) with
/// the current one's work. A no-op on CPUs without a backend here.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` reads no register but `addr`, writes none (not even the flags),
    // touches no memory the program can observe and cannot fault.
    unsafe {
        core::arch::asm!(
            "prefetcht0 [{0}]",
            in(reg) addr,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint: it writes no register, cannot fault and has no
    // architecturally visible effect.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{0}]",
            in(reg) addr,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

/// How much of a suspended context's stack [`prefetch_stack`] brings in, from its stack
/// pointer up: a parked server connection resumes through some 600 bytes of frames (the
/// switch, the hub's park, the fd wait, the socket read and the handler's loop).
pub(crate) const STACK_PREFETCH_BYTES: usize = 640;

/// [`prefetch`] of the [`STACK_PREFETCH_BYTES`] from the stack pointer `sp` of a
/// suspended context up (ten lines, one instruction each), before switching to it.
#[inline(always)]
pub(crate) fn prefetch_stack(sp: StackPointer) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`: hints only, which cannot fault, at `sp` plus constants.
    unsafe {
        core::arch::asm!(
            "prefetcht0 [{0}]",
            "prefetcht0 [{0} + 64]",
            "prefetcht0 [{0} + 128]",
            "prefetcht0 [{0} + 192]",
            "prefetcht0 [{0} + 256]",
            "prefetcht0 [{0} + 320]",
            "prefetcht0 [{0} + 384]",
            "prefetcht0 [{0} + 448]",
            "prefetcht0 [{0} + 512]",
            "prefetcht0 [{0} + 576]",
            in(reg) sp.0.get(),
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as in `prefetch`: hints only, which cannot fault, at `sp` plus constants.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{0}]",
            "prfm pldl1keep, [{0}, #64]",
            "prfm pldl1keep, [{0}, #128]",
            "prfm pldl1keep, [{0}, #192]",
            "prfm pldl1keep, [{0}, #256]",
            "prfm pldl1keep, [{0}, #320]",
            "prfm pldl1keep, [{0}, #384]",
            "prfm pldl1keep, [{0}, #448]",
            "prfm pldl1keep, [{0}, #512]",
            "prfm pldl1keep, [{0}, #576]",
            in(reg) sp.0.get(),
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = sp;
}
const _: () = assert!(STACK_PREFETCH_BYTES == 10 * 64);
