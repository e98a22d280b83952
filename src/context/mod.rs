//! Raw machine contexts: the lowest layer of verdant.
//!
//! A *context* is a suspended thread of execution on its own stack, represented by a single
//! [`StackPointer`]. The contract every backend implements is boost.context's:
//!
//! * [`init`]: lay out a fresh stack so that the first switch to it calls `entry(data, from)`.
//! * [`switch`]: suspend the current context and resume `to`, handing it a data word. When
//!   something later switches back, `switch` returns the [`StackPointer`] of the context that
//!   did so (the handle to resume *it* with) and the data word it passed.
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

pub(crate) use backend::{init, switch, ContextStorage, BACKEND};
