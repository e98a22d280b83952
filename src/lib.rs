//! verdant: greenlet + gevent for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
