//! verdant: greenlet + gevent for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The hub (L4) is the first user of these layers; until it lands they are only exercised by
// their own tests and benchmarks.
#[allow(dead_code)]
pub(crate) mod reactor;
#[allow(dead_code)]
pub(crate) mod sys;
#[allow(dead_code)]
pub(crate) mod timer;
