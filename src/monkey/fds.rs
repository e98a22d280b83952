//! Hooks of the calls that end a descriptor's life under green threads waiting on it:
//! `close`, `dup2` and `dup3`.
//!
//! The hub's reactor knows descriptors by number. Closing one that a green thread of this
//! OS thread waits on (in a hooked call, or in `verdant::net` / `wait_readable`) would
//! leave that green thread parked on a registration nobody will ever fire, and a later
//! descriptor with the same number would meet the old registration. So, once sockets are
//! patched, these hooks first deregister the descriptor from the reactor — every waiter
//! wakes: a hooked libc call fails with `EBADF`, a `verdant::net` call with `NotConnected`
//! — and only then make the real call. On Linux this also ends the registration that hooked
//! calls keep for a descriptor they waited on (see `cache.rs`): one `EPOLL_CTL_DEL`. A
//! descriptor that nothing waits or waited on costs one lookup in a thread-local map.
//!
//! `dup` needs no hook: its new descriptor number is free, so nobody can wait on it.

use super::{errno, original, set_errno, SOCKETS};
use crate::net::source;
use libc::c_int;
use std::sync::atomic::Ordering;

/// The address of the hook called `name`, for [`original`]'s self-lookup check.
#[cfg(not(target_os = "macos"))]
pub(super) fn address_of(name: &str) -> usize {
    match name {
        "close" => close as *const () as usize,
        "dup2" => dup2 as *const () as usize,
        "dup3" => dup3 as *const () as usize,
        _ => 0,
    }
}

/// Deregisters `fd` (waking its waiters) if green threads of this thread may wait on it
/// and `replaces` says the call about to be made will really close it. errno is unchanged.
#[inline]
fn forget_if(fd: c_int, replaces: impl FnOnce() -> bool) {
    if SOCKETS.load(Ordering::Relaxed) {
        forget_slow(fd, replaces);
    }
}

#[cold]
fn forget_slow(fd: c_int, replaces: impl FnOnce() -> bool) {
    let errno = errno();
    if source::is_registered(fd) && replaces() {
        source::forget(fd);
    }
    set_errno(errno);
}

/// A hooked call is about to close `fd`, or has closed it or made a new descriptor with
/// its number (see `cache::renumbered`; nothing to count off Linux, where no registration
/// is kept). errno is unchanged.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) use super::cache::renumbered;

/// See the Linux version: off Linux no registration is kept.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(super) fn renumbered(_fd: c_int) {}

/// `fd` is about to be closed: wakes the green threads of this OS thread that wait on it
/// and counts the number ([`renumbered`]; count it again once closed). errno is unchanged.
#[inline]
pub(super) fn closing(fd: c_int) {
    forget_if(fd, || true);
    renumbered(fd);
}

/// Whether `fd` is an open descriptor (so `dup2` onto another one will succeed).
fn is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD takes no pointer argument; a bad fd is reported as EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Hook of `close(2)`: wakes the green threads of this OS thread that wait on `fd` (see
/// the module docs), then closes it. Green threads of other OS threads are not woken.
///
/// # Safety
/// The contract of libc's `close`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    closing(fd);
    // SAFETY: the caller's contract is close's.
    let r = unsafe { original::close(fd) };
    renumbered(fd);
    r
}
crate::sys::interpose!(close);
// x86_64 macOS: the libc crate's `close` is libSystem's `close$NOCANCEL`, while C code
// binds plain `close`: interpose both names.
#[cfg(target_arch = "x86_64")]
crate::sys::interpose!(close => crate::sys::interpose::plain::close);

/// Hook of `dup2(2)`: replacing a descriptor that green threads wait on behaves like
/// `close` of it first. When the call will fail (`oldfd` not open) or do nothing
/// (`oldfd == newfd`), nobody is woken.
///
/// # Safety
/// The contract of libc's `dup2`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn dup2(oldfd: c_int, newfd: c_int) -> c_int {
    forget_if(newfd, || oldfd != newfd && is_open(oldfd));
    renumbered(newfd);
    // SAFETY: the caller's contract is dup2's.
    let r = unsafe { original::dup2(oldfd, newfd) };
    renumbered(newfd);
    r
}
crate::sys::interpose!(dup2);

/// Hook of `dup3(2)`: as the `dup2` hook; a call that fails with `EINVAL` (equal
/// descriptors, unknown flags) or `EBADF` wakes nobody.
///
/// # Safety
/// The contract of libc's `dup3`.
#[cfg(not(target_os = "macos"))]
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int {
    forget_if(newfd, || {
        oldfd != newfd && flags & !libc::O_CLOEXEC == 0 && is_open(oldfd)
    });
    renumbered(newfd);
    // SAFETY: the caller's contract is dup3's.
    let r = unsafe { original::dup3(oldfd, newfd, flags) };
    renumbered(newfd);
    r
}
