//! verdant: greenlet + gevent for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub(crate) mod context;
pub mod stack;
pub(crate) mod sys;
pub mod coroutine;
pub mod greenlet;
