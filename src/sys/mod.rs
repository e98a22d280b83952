//! L0: the operating system, behind one contract per concern.
//!
//! This is the only module that names a `target_os`. Everything above it (the timer queue, the
//! reactor, the hub) is written once against the items re-exported here.
//!
//! # The selector contract
//!
//! Exactly one backend is compiled: `epoll.rs` on Linux and Android, `kqueue.rs` on macOS, iOS
//! and the BSDs. Both export the same items with the same behaviour:
//!
//! | item | contract |
//! | --- | --- |
//! | `Selector::new()` | a new kernel queue; its fd is owned and close-on-exec |
//! | `Selector::register(fd, token, interest)` | watch `fd`, **edge-triggered** (`EPOLLET` / `EV_CLEAR`), for the directions in `interest`; events carry `token`. The fd stays registered for its whole life: the caller caches readiness and clears it only after an operation returned `WouldBlock` |
//! | `Selector::reregister(fd, token, interest)` | replace the token and directions of a registered fd |
//! | `Selector::deregister(fd)` | stop watching `fd`; must be called before the fd is closed |
//! | `Selector::select(events, timeout)` | wait for events. `None` blocks until an event or a [`Waker`]; `Some(d)` waits at least `d` rounded **up** to the backend's resolution (epoll: the next millisecond), so a nonzero timeout never becomes a zero one; `EINTR` returns `Ok` with no events. `events` is cleared first |
//! | `Selector::as_raw_fd()` | the kernel queue's fd, e.g. to nest it in another poller |
//! | `Events::with_capacity(n)` | a reusable buffer for up to `n` events per `select`; `iter()`, `len()`, `is_empty()`, `clear()` |
//! | `Event` | `token()`, `is_readable()`, `is_writable()`, `is_error()`, `is_read_closed()`, `is_write_closed()`, `is_hup()` (= both closed in one event), `is_priority()`, `is_plain()` (= none of `is_error()` to `is_priority()`: the event says readable and/or writable and nothing else, the reactor's short path) |
//! | `Waker::new(&selector, token)` | a handle any OS thread can use to make a `select` on `selector` return with an event for `token` |
//! | `Waker::wake()` | `Send + Sync`; after the first wake and until `reset`, further wakes are one atomic swap and no syscall |
//! | `Waker::reset()` | call once the owner of the selector saw the waker's event, before it drains whatever the wakers announced |
//!
//! Readiness reported by a backend can be spurious (a stale event after a deregistration, a
//! woken-then-drained socket): callers always try the operation, and wait only on `WouldBlock`.
//! Where a backend lacks a feature the method is a no-op or reports `false`
//! (kqueue reports the closed directions in separate events, so `is_hup()` is never true there);
//! no code outside `sys` ever needs a `cfg`.
//!
//! # The temporary poll set
//!
//! The libc shim's `poll` hook (`monkey`, only user) waits for a whole `poll` array on the hub
//! by watching one descriptor: a kernel set that mirrors the array, **level-triggered**, whose
//! own fd is readable while any mirrored descriptor is ready.
//!
//! | item | contract |
//! | --- | --- |
//! | `PollSet::new(&[libc::pollfd])` | the set, close-on-exec, closed on drop; entries with a negative fd are skipped. `None` when it cannot mirror the array exactly (the kernel refuses a descriptor, or an event the backend cannot express): the caller then makes the blocking call instead |
//! | `PollSet::as_raw_fd()` | the set's fd, to register with the reactor like any other |
//! | `PollSet::drop_hung_up()` | removes the descriptors reported hung up or in error right now (epoll `EPOLLHUP`/`EPOLLERR`, kqueue `EV_EOF`/`EV_ERROR`), for a caller that just found nothing ready for what it asks: such a persistent condition would keep the level-triggered set readable |
//!
//! epoll mirrors `POLLIN`, `POLLPRI`, `POLLOUT`, `POLLRDHUP` (and always errors and
//! hang-ups); kqueue mirrors `POLLIN`/`POLLRDNORM` (`EVFILT_READ`) and `POLLOUT`/`POLLWRNORM`
//! (`EVFILT_WRITE`) and refuses `POLLPRI`/`POLLRDBAND`/`POLLWRBAND`. Readiness of the set is a
//! hint: the caller asks `poll` again with a zero timeout.
//!
//! # Errors and `EINTR`
//!
//! Every libc call goes through [`syscall!`], which reads `errno` right after the call, before
//! anything else can overwrite it. `EINTR` is handled in exactly one place per backend: in
//! `select`, where it means "no events"; everything else is reported to the caller.
//!
//! # File descriptors
//!
//! Every fd created here is wrapped in an [`OwnedFd`](std::os::fd::OwnedFd) the moment it
//! exists, and created close-on-exec (atomically where the OS allows, otherwise with
//! [`set_cloexec`] before the constructor returns).

/// The `__DATA,__interpose` table of the libc shim on macOS (`interpose!`).
pub(crate) mod interpose;
#[allow(unused_imports)] // used only with the `monkey` feature
pub(crate) use interpose::interpose;
/// Memory mappings for green-thread stacks.
pub(crate) mod memory;
/// Fault signals: stack-overflow reporting.
pub(crate) mod signal;
/// Non-blocking socket creation, connect and listen backlog for `net`.
pub(crate) mod socket;
/// OS thread ids and the system call a thread is blocked in, for the stall monitor.
pub(crate) mod thread;

use std::io;
use std::ops::BitOr;
use std::os::fd::RawFd;

/// Calls `libc::$fn(args..)` and turns the C convention "-1 and `errno`" into an `io::Result`.
///
/// `errno` is captured immediately after the call. The macro contains no `unsafe` block of its
/// own: the caller writes `unsafe { syscall!(..) }` with a `// SAFETY:` comment saying why the
/// arguments are valid for that particular call.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
// Path-based access for code outside `sys` (modules declared below see it textually).
#[allow(unused_imports)]
pub(crate) use syscall;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unused_imports)] // `Event` is part of the contract even where unnamed
pub(crate) use epoll::{Event, Events, PollSet, Selector, Waker};

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]
mod kqueue;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]
#[allow(unused_imports)] // `Event` is part of the contract even where unnamed
pub(crate) use kqueue::{Event, Events, PollSet, Selector, Waker};

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
)))]
compile_error!("verdant: unsupported target OS (needs epoll or kqueue)");

/// This thread's `errno` (the libc slot, read without touching it). Every OS names the slot's
/// accessor differently: `__errno_location` (Linux, Android), `__error` (macOS, iOS, FreeBSD,
/// DragonFly), `__errno` (NetBSD, OpenBSD).
///
/// ```text
/// sys::set_errno(libc::EINTR);
/// assert_eq!(sys::errno(), libc::EINTR);
/// ```
/// A word of an `fd_set`'s bit array, as the C library lays it out (bit `fd % BITS` of
/// word `fd / BITS`): `unsigned long` on Linux and FreeBSD, a 32-bit `int` on macOS. The
/// `select` hook reads and restores the caller's sets in these words, so their size and
/// alignment must be the C type's (a 4-byte-aligned macOS `fd_set` read as `u64`s would be
/// misaligned).
#[cfg(not(target_os = "macos"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) type FdSetWord = libc::c_ulong;
/// A word of an `fd_set`'s bit array, as the C library lays it out (bit `fd % BITS` of
/// word `fd / BITS`): `unsigned long` on Linux and FreeBSD, a 32-bit `int` on macOS. The
/// `select` hook reads and restores the caller's sets in these words, so their size and
/// alignment must be the C type's (a 4-byte-aligned macOS `fd_set` read as `u64`s would be
/// misaligned).
#[cfg(target_os = "macos")]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) type FdSetWord = u32;

/// Linux's `MSG_ERRQUEUE` (a receive of queued socket errors, which never waits); 0 where
/// the flag does not exist, so `flags & MSG_ERRQUEUE` is never set there.
#[cfg(target_os = "linux")]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) const MSG_ERRQUEUE: libc::c_int = libc::MSG_ERRQUEUE;
/// Linux's `MSG_ERRQUEUE` (a receive of queued socket errors, which never waits); 0 where
/// the flag does not exist, so `flags & MSG_ERRQUEUE` is never set there.
#[cfg(not(target_os = "linux"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) const MSG_ERRQUEUE: libc::c_int = 0;

/// The type of `getnameinfo`'s `hostlen` and `servlen`: `socklen_t` on Linux and macOS,
/// `size_t` on FreeBSD (the libc shim's hook must have the C library's exact signature).
#[cfg(not(target_os = "freebsd"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) type NameInfoLen = libc::socklen_t;
/// The type of `getnameinfo`'s `hostlen` and `servlen`: `socklen_t` on Linux and macOS,
/// `size_t` on FreeBSD (the libc shim's hook must have the C library's exact signature).
#[cfg(target_os = "freebsd")]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) type NameInfoLen = libc::size_t;

// The libc shim (`monkey`) is the only user: it must hand errno back to C callers unchanged.
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) fn errno() -> i32 {
    // SAFETY: the accessor returns this thread's errno slot, valid for the thread's life.
    unsafe { *errno_slot() }
}

/// Sets this thread's `errno` (see [`errno`]).
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *errno_slot() = value }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
fn errno_slot() -> *mut libc::c_int {
    // SAFETY: takes no arguments; returns a pointer to the calling thread's errno.
    unsafe { libc::__errno_location() }
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
fn errno_slot() -> *mut libc::c_int {
    // SAFETY: takes no arguments; returns a pointer to the calling thread's errno.
    unsafe { libc::__error() }
}

#[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
fn errno_slot() -> *mut libc::c_int {
    // SAFETY: takes no arguments; returns a pointer to the calling thread's errno.
    unsafe { libc::__errno() }
}

/// Writes `msg` to stderr with the bare system call, past libc's exported `write` (which the
/// libc shim replaces on ELF systems): for the shim's last words before it aborts. Errors
/// are ignored (there is no one left to tell).
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn write_stderr_raw(msg: &[u8]) {
    // SAFETY: write(2) of a live buffer of `msg.len()` bytes; the syscall touches nothing else.
    unsafe { libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len()) };
}

/// Writes `msg` to stderr with the bare system call (see the Linux version).
#[cfg(all(feature = "monkey", target_os = "freebsd"))]
pub(crate) fn write_stderr_raw(msg: &[u8]) {
    extern "C" {
        // libc's raw system-call stub, which `write` (interposable) ends in.
        fn __sys_write(fd: libc::c_int, buf: *const libc::c_void, n: libc::size_t)
            -> libc::ssize_t;
    }
    // SAFETY: write(2) of a live buffer of `msg.len()` bytes.
    unsafe { __sys_write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The directions a registration watches.
///
/// ```text
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest(u8);

impl Interest {
    /// Wake when the fd becomes readable (or its read side closes).
    pub(crate) const READABLE: Interest = Interest(0b01);
    /// Wake when the fd becomes writable (or its write side closes).
    pub(crate) const WRITABLE: Interest = Interest(0b10);
    /// Both directions: what a socket registers for its whole life.
    pub(crate) const BOTH: Interest = Interest(0b11);

    /// Whether the readable direction is watched.
    pub(crate) const fn is_readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// Whether the writable direction is watched.
    pub(crate) const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

/// Puts `fd` in (or out of) non-blocking mode, keeping its other status flags.
pub(crate) fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument; an invalid fd is reported as EBADF.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an int argument; an invalid fd is reported as EBADF.
        unsafe { syscall!(fcntl(fd, libc::F_SETFL, new)) }?;
    }
    Ok(())
}

/// Sets `FD_CLOEXEC` on `fd`, for fds that could not be created close-on-exec atomically.
// Part of the documented contract; exercised by unit tests, not yet by the layers above.
#[allow(dead_code)]
pub(crate) fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no pointer argument; an invalid fd is reported as EBADF.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: F_SETFD takes an int argument; an invalid fd is reported as EBADF.
        unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
