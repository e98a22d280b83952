//! The operating system: memory mappings and fault signals (and, merged from the sys
//! branch, the selector and waker). `cfg(target_os)` lives only below this module.

pub(crate) mod memory;
pub(crate) mod signal;
