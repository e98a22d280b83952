//! The real libc functions behind verdant's hooks (gevent's `get_original`).
//!
//! With the `monkey` feature the program's own definitions of `read`, `nanosleep`, ... are
//! verdant's hooks, so calling `libc::read` reaches the hook. These functions reach the C
//! library's definition instead: on Linux each is looked up once, on first use, with
//! `dlsym(RTLD_NEXT, name)` (the next definition after the object verdant is linked into,
//! i.e. glibc's) and cached in an atomic. errno is preserved across the lookup.
//!
//! On macOS the hooks are not exported under the libc names (they are registered with
//! dyld's interposing instead, see the `## macOS` section of [`crate::monkey`]), and dyld
//! does not interpose the calls the interposing image makes itself: each function here is a
//! plain call of `libc::name`, bound to libSystem's definition (or, if another dylib
//! interposed it first, to that one: dyld chains interposers). No lookup, nothing cached.
//!
//! ```
//! // Always the C library's read, patched or not, green thread or not.
//! // SAFETY: a zero-length read from fd -1 touches no memory; it only fails with EBADF.
//! let n = unsafe { verdant::monkey::original::read(-1, std::ptr::null_mut(), 0) };
//! assert_eq!(n, -1);
//! assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
//! ```
//!
//! Each function has the C signature and the contract of the libc function of the same
//! name (see its man page).

#[cfg(target_os = "linux")]
use libc::epoll_event;
use libc::{addrinfo, c_char, fd_set, sigset_t, timeval};
use libc::{c_int, c_uint, c_void, nfds_t, pollfd, size_t, sockaddr, socklen_t};
use libc::{iovec, msghdr, ssize_t, timespec, useconds_t};

#[cfg(not(target_os = "macos"))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Resolves `name` (NUL-terminated) with `dlsym(RTLD_NEXT, ..)`, aborting if the C library
/// does not define it (nothing sensible could be returned to the caller).
#[cfg(not(target_os = "macos"))]
#[cold]
fn resolve(slot: &AtomicUsize, name: &'static str) -> usize {
    let errno = super::errno();
    // SAFETY: `name` is a NUL-terminated literal (the macro below appends the NUL);
    // RTLD_NEXT is a valid pseudo-handle for dlsym.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    if p == 0 {
        // Linked into something that is itself last in the search order: take any.
        // SAFETY: as above, with the RTLD_DEFAULT pseudo-handle.
        p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) } as usize;
    }
    if p == 0 || p == own_definition(name) {
        let msg =
            b"verdant::monkey: the C library's definition of a hooked function was not found\n";
        // A bare write(2): it cannot recurse into a hook.
        crate::sys::write_stderr_raw(msg);
        std::process::abort();
    }
    slot.store(p, Ordering::Relaxed);
    super::set_errno(errno);
    p
}

/// The address of verdant's own hook of that name, so a lookup that found it (instead of
/// the C library's) is caught rather than recursing forever.
#[cfg(not(target_os = "macos"))]
fn own_definition(name: &str) -> usize {
    super::hooks::address_of(name.trim_end_matches('\0'))
}

macro_rules! originals {
    ($( $(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; )*) => {$(
        #[doc = concat!("The C library's `", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The contract of the libc function of the same name: pointer arguments must be
        /// valid for the sizes passed, as its man page says.
        $(#[$attr])*
        #[cfg(not(target_os = "macos"))]
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let mut p = SLOT.load(Ordering::Relaxed);
            if p == 0 {
                p = resolve(&SLOT, concat!(stringify!($name), "\0"));
            }
            // SAFETY: `p` is the address dlsym returned for this very symbol, whose C
            // signature is the one written here (the libc crate's declaration).
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
            // SAFETY: the caller upholds the libc contract (this function's # Safety).
            unsafe { f($($arg),*) }
        }

        #[doc = concat!("The C library's `", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The contract of the libc function of the same name: pointer arguments must be
        /// valid for the sizes passed, as its man page says.
        $(#[$attr])*
        #[cfg(target_os = "macos")]
        #[inline]
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the caller upholds the libc contract (this function's # Safety). This
            // image's own calls are not interposed, so this is libSystem's function.
            unsafe { ::libc::$name($($arg),*) }
        }
    )*};
}

// The waits on descriptor sets, descriptor lifetime and name lookups (`poll.rs`, `fds.rs`,
// `dns.rs`).
originals! {
    /// Not on macOS (no `ppoll` there).
    #[cfg(not(target_os = "macos"))]
    fn ppoll(
        fds: *mut pollfd,
        nfds: nfds_t,
        timeout: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int;
    fn select(
        nfds: c_int,
        readfds: *mut fd_set,
        writefds: *mut fd_set,
        exceptfds: *mut fd_set,
        timeout: *mut timeval,
    ) -> c_int;
    fn pselect(
        nfds: c_int,
        readfds: *mut fd_set,
        writefds: *mut fd_set,
        exceptfds: *mut fd_set,
        timeout: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int;
    /// Linux only.
    #[cfg(target_os = "linux")]
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int)
        -> c_int;
    /// Linux only.
    #[cfg(target_os = "linux")]
    fn epoll_pwait(
        epfd: c_int,
        events: *mut epoll_event,
        maxevents: c_int,
        timeout: c_int,
        sigmask: *const sigset_t,
    ) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn dup2(oldfd: c_int, newfd: c_int) -> c_int;
    /// Not on macOS (no `dup3` there).
    #[cfg(not(target_os = "macos"))]
    fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int;
    fn getaddrinfo(
        node: *const c_char,
        service: *const c_char,
        hints: *const addrinfo,
        res: *mut *mut addrinfo,
    ) -> c_int;
    fn getnameinfo(
        sa: *const sockaddr,
        salen: socklen_t,
        host: *mut c_char,
        hostlen: crate::sys::NameInfoLen,
        serv: *mut c_char,
        servlen: crate::sys::NameInfoLen,
        flags: c_int,
    ) -> c_int;
}

// The hooks that keep the socket hooks' cache right (`cache.rs`, Linux only).
originals! {
    /// Linux only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    /// Linux only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int;
    /// Linux only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn dup(fd: c_int) -> c_int;
    /// Linux only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn fclose(stream: *mut libc::FILE) -> c_int;
    /// Linux only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: socklen_t,
    ) -> c_int;
}

/// The C library's variadic functions with one optional argument, called with it (see
/// `cache.rs` for the calling conventions this relies on): Linux only.
#[cfg(any(target_os = "linux", target_os = "android"))]
macro_rules! variadic_originals {
    ($( $(#[$attr:meta])* fn $name:ident($a:ident: $ta:ty, $b:ident: $tb:ty, $c:ident: $tc:ty) -> $ret:ty; )*) => {$(
        #[doc = concat!("The C library's `", stringify!($name), "`, with its optional argument.")]
        ///
        /// # Safety
        /// The contract of the libc function of the same name: the third argument is
        /// what the second one takes (an int, a pointer, or anything if it takes none).
        $(#[$attr])*
        pub unsafe fn $name($a: $ta, $b: $tb, $c: $tc) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let mut p = SLOT.load(Ordering::Relaxed);
            if p == 0 {
                p = resolve(&SLOT, concat!(stringify!($name), "\0"));
            }
            // SAFETY: `p` is the address dlsym returned for this very symbol, a variadic C
            // function with these two named parameters.
            let f: unsafe extern "C" fn($ta, $tb, ...) -> $ret = unsafe { std::mem::transmute(p) };
            // SAFETY: the caller upholds the libc contract (this function's # Safety).
            unsafe { f($a, $b, $c) }
        }
    )*};
}

#[cfg(any(target_os = "linux", target_os = "android"))]
variadic_originals! {
    fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    /// glibc only.
    #[cfg(target_env = "gnu")]
    fn fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    fn ioctl(fd: c_int, request: libc::Ioctl, arg: *mut c_void) -> c_int;
}

originals! {
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: size_t,
        flags: c_int,
        addr: *mut sockaddr,
        addrlen: *mut socklen_t,
    ) -> ssize_t;
    fn sendto(
        fd: c_int,
        buf: *const c_void,
        len: size_t,
        flags: c_int,
        addr: *const sockaddr,
        addrlen: socklen_t,
    ) -> ssize_t;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    /// Not on macOS (no `accept4` there).
    #[cfg(not(target_os = "macos"))]
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int;
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int;
    /// Not on macOS (no `clock_nanosleep` there).
    #[cfg(not(target_os = "macos"))]
    fn clock_nanosleep(
        clock: libc::clockid_t,
        flags: c_int,
        req: *const timespec,
        rem: *mut timespec,
    ) -> c_int;
    fn usleep(usec: useconds_t) -> c_int;
    fn sleep(secs: c_uint) -> c_uint;
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
}
