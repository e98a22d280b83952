//! verdant: greenlet + gevent for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub(crate) mod context;
pub mod stack;
pub(crate) mod sys;
pub mod coroutine;

/// The context-switch backend compiled into this build, for benchmarks and diagnostics:
/// `"x86_64 System V asm"`, `"aarch64 AAPCS64 asm"`, or the corosensei fallback.
///
/// ```
/// println!("verdant switches contexts with: {}", verdant::CONTEXT_BACKEND);
/// assert!(!verdant::CONTEXT_BACKEND.is_empty());
/// ```
pub const CONTEXT_BACKEND: &str = context::BACKEND;
