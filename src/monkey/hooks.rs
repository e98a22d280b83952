//! The libc hooks (`#[no_mangle] extern "C"` on ELF systems; registered with dyld
//! interposing on macOS, see `crate::sys::interpose!`), and the waits behind them.
//!
//! Every hook starts with [`cooperative`]: when it says no, the hook's only other action is
//! a tail call of the original, so return value and errno are the original's. When it says
//! yes, the hook body runs inside [`run`]: nested hooks pass through ([`Nested`]), a kill
//! cannot unwind into the (C) caller, and an errno is set only together with a -1 return.
//!
//! See the module docs of [`crate::monkey`] for the semantics and the races of each choice.

use super::io::{waitall_continues, RECV_NEVER_WAITS};
use super::{cooperative, errno, original, set_errno, suspended, Nested, SOCKETS, TIME};
use crate::greenlet::GreenletExit;
use crate::hub::{self, FdWait, Killed, WaitError};
use crate::reactor::{Direction, SourceId};
use libc::{c_int, c_uint, c_void, nfds_t, pollfd, size_t, sockaddr, socklen_t};
use libc::{ssize_t, timespec, useconds_t};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// The address of the hook called `name`, for [`original`]'s self-lookup check (not on
/// macOS, where the originals are not looked up).
#[cfg(not(target_os = "macos"))]
pub(super) fn address_of(name: &str) -> usize {
    match name {
        "ppoll" | "select" | "pselect" | "epoll_wait" | "epoll_pwait" => {
            super::poll::address_of(name)
        }
        "close" | "dup2" | "dup3" => super::fds::address_of(name),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        "fcntl" | "fcntl64" | "ioctl" | "setsockopt" | "socket" | "socketpair" | "dup"
        | "fclose" => super::cache::address_of(name),
        "getaddrinfo" | "getnameinfo" => super::dns::address_of(name),
        "read" => read as *const () as usize,
        "write" => write as *const () as usize,
        "recv" => recv as *const () as usize,
        "send" => send as *const () as usize,
        "recvfrom" => recvfrom as *const () as usize,
        "sendto" => sendto as *const () as usize,
        "connect" => connect as *const () as usize,
        "accept" => accept as *const () as usize,
        #[cfg(not(target_os = "macos"))]
        "accept4" => accept4 as *const () as usize,
        "poll" => poll as *const () as usize,
        "nanosleep" => nanosleep as *const () as usize,
        #[cfg(not(target_os = "macos"))]
        "clock_nanosleep" => clock_nanosleep as *const () as usize,
        "usleep" => usleep as *const () as usize,
        "sleep" => sleep as *const () as usize,
        "readv" => super::io::readv as *const () as usize,
        "writev" => super::io::writev as *const () as usize,
        "recvmsg" => super::io::recvmsg as *const () as usize,
        "sendmsg" => super::io::sendmsg as *const () as usize,
        _ => 0,
    }
}

/// Why a cooperative call failed: the errno to report with -1.
pub(super) type Errno = c_int;

/// Runs a hook body: nested calls pass through meanwhile, `Ok(n)` is returned as is,
/// `Err(e)` as -1 with errno `e`. A kill (which cannot unwind through the C ABI) becomes
/// `ECANCELED`; the green thread's kill flag stays set, so it unwinds at its next verdant
/// blocking call.
pub(super) fn run<T: From<i8>>(body: impl FnOnce() -> Result<T, Errno>) -> T {
    let _nested = Nested::enter();
    let result = match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        // A kill, or the last handle of a suspended greenlet dropped (greenlet's
        // `GreenletExit`, thrown once).
        Err(payload) if payload.is::<Killed>() || payload.is::<GreenletExit>() => {
            Err(libc::ECANCELED)
        }
        // A bug in verdant: there is no way to report it across the C ABI.
        Err(payload) => panic::resume_unwind(payload),
    };
    match result {
        Ok(n) => n,
        Err(e) => {
            set_errno(e);
            T::from(-1)
        }
    }
}

/// How long a wait on `fd` may last: `SO_RCVTIMEO`/`SO_SNDTIMEO` for sockets (as blocking
/// libc honours them), none otherwise.
fn socket_deadline(fd: c_int, dir: Direction) -> Option<Instant> {
    socket_timeout(fd, dir).map(|t| Instant::now() + t)
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` of `fd` (`None`: none, or not a socket).
pub(super) fn socket_timeout(fd: c_int, dir: Direction) -> Option<Duration> {
    let opt = match dir {
        Direction::Read => libc::SO_RCVTIMEO,
        Direction::Write => libc::SO_SNDTIMEO,
    };
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: `tv` and `len` are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if r != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0) {
        return None;
    }
    Some(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
}

/// `fcntl(F_GETFL)`: `Ok(true)` if the caller made `fd` non-blocking.
pub(super) fn is_nonblocking(fd: c_int) -> Result<bool, Errno> {
    // SAFETY: F_GETFL takes no pointer argument; a bad fd is reported as EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(errno());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Whether `fd` is a descriptor `poll` reports as always ready (regular file, block
/// device, directory): waiting on the hub cannot help, the call passes through. A failing
/// `fstat` (bad fd) also passes through, so the original reports the error.
fn passes_through(fd: c_int) -> bool {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return true;
    }
    matches!(
        st.st_mode & libc::S_IFMT,
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR
    )
}

/// Whether `fd` is ready in `dir` now (a zero-timeout `poll` through the original).
fn ready_now(fd: c_int, dir: Direction) -> bool {
    let events = match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    let mut pfd = pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one live pollfd and the count passed is 1.
    unsafe { original::poll(&mut pfd, 1, 0) != 0 }
}

/// How a hooked wait on a descriptor ended, when it did not end with readiness.
pub(super) enum Interrupted {
    /// The deadline (a socket timeout) passed.
    Deadline,
    /// A verdant `Timeout` fired, or the hub reported that nothing can wake us.
    Errno(Errno),
}

/// Waits on the hub until `fd` may be ready in `dir` (wake-ups can be spurious: retry).
pub(super) fn wait(
    fd: c_int,
    dir: Direction,
    deadline: Option<Instant>,
) -> Result<(), Interrupted> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // Proven current at every wait (no generation): the descriptors waited on here
    // (pipes, terminals, poll sets, listeners, connecting sockets) may come from calls
    // that are not hooked, such as `pipe` or `epoll_create1`.
    let registration = crate::net::source::hooked_registration(fd, false, None).map(|r| match r {
        crate::net::source::HookedRegistration::Kept(id, _) => (id, None),
        crate::net::source::HookedRegistration::Shared(id, temporary) => (id, temporary),
    });
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let registration = crate::net::source::registration_for(fd);
    let (id, _temporary) =
        registration.map_err(|e| Interrupted::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    wait_on(id, dir, deadline, false)
}

/// Waits on the hub until the registered `id` may be ready in `dir`; with `drained`
/// after a drained read ([`hub::wait_fd_drained`]) rather than an `EAGAIN`.
fn wait_on(
    id: SourceId,
    dir: Direction,
    deadline: Option<Instant>,
    drained: bool,
) -> Result<(), Interrupted> {
    suspended(|| {
        let waited = if drained {
            // `read_drained` cleared the cached readiness already.
            hub::wait_fd_drained(id, dir, deadline, false)
        } else {
            hub::wait_fd(id, dir, deadline)
        };
        match waited {
            Ok(FdWait::Ready) => Ok(()),
            Ok(FdWait::Deadline) => Err(Interrupted::Deadline),
            Ok(FdWait::Closed) => Err(Interrupted::Errno(libc::EBADF)),
            // Another green thread waits on this fd in this direction (the reactor keeps
            // one waiter per fd and direction): look again shortly.
            Ok(FdWait::Busy) => match crate::time::sleep(Duration::from_millis(1)) {
                Ok(()) => Ok(()),
                Err(e) => Err(Interrupted::Errno(wait_errno(e))),
            },
            Err(e) => Err(Interrupted::Errno(wait_errno(e))),
        }
    })
}

fn wait_errno(e: WaitError) -> Errno {
    match e {
        WaitError::TimedOut => libc::ETIMEDOUT,
        WaitError::WouldBlockForever => libc::EDEADLK,
    }
}

/// A socket operation: `op(MSG_DONTWAIT)` until it does not fail with `EAGAIN`, waiting on
/// the hub in between. `Ok(None)` if `fd` is not a socket (`ENOTSOCK`).
pub(super) fn socket_io(
    fd: c_int,
    dir: Direction,
    op: impl FnMut(c_int) -> ssize_t,
) -> Result<Option<ssize_t>, Errno> {
    socket_io_with(fd, dir, None, &mut None, op)
}

/// [`socket_io`] for one step of a call that may wait several times (a send continued
/// after a partial write, `MSG_WAITALL`): `deadline` is the whole call's, set at its first
/// wait from `SO_RCVTIMEO`/`SO_SNDTIMEO` and kept across steps, because the kernel spends
/// one timeout on the whole call, not one per wait. Start with `None`.
pub(super) fn socket_io_until(
    fd: c_int,
    dir: Direction,
    deadline: &mut Option<Option<Instant>>,
    op: impl FnMut(c_int) -> ssize_t,
) -> Result<Option<ssize_t>, Errno> {
    socket_io_with(fd, dir, None, deadline, op)
}

/// [`socket_io`] for a plain stream read of `len` bytes (`read`, `recv` with no flags):
/// with the drained shortcut where it applies (see `cache::read_drained`).
fn socket_read(
    fd: c_int,
    len: size_t,
    op: impl FnMut(c_int) -> ssize_t,
) -> Result<Option<ssize_t>, Errno> {
    socket_io_with(fd, Direction::Read, Some(len), &mut None, op)
}

/// What a socket wait needs: the registration, and the caller's settings.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn socket_settings(fd: c_int, dir: Direction) -> Result<super::cache::Settings, Errno> {
    super::cache::settings(fd, dir)
}

/// What a socket wait needs: the registration, and the caller's settings, read afresh
/// (there is no cache off Linux).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn socket_settings(fd: c_int, dir: Direction) -> Result<Settings, Errno> {
    let (id, temporary) = crate::net::source::registration_for(fd)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok(Settings {
        id,
        _temporary: temporary,
        nonblocking: is_nonblocking(fd)?,
        timeout: socket_timeout(fd, dir),
        drained: false,
    })
}

/// What [`socket_settings`] returns off Linux.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
struct Settings {
    id: SourceId,
    _temporary: Option<std::rc::Rc<crate::net::source::Registration>>,
    nonblocking: bool,
    timeout: Option<Duration>,
    drained: bool,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::cache::DrainedRead;

/// What a stream read knows before its first attempt (see `cache::drained_read`; off
/// Linux nothing is cached, so it is always `Clear`).
#[allow(dead_code)]
#[cfg(not(any(target_os = "linux", target_os = "android")))]
enum DrainedRead {
    Clear,
    Wait(Settings),
    General,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn drained_read(fd: c_int) -> DrainedRead {
    super::cache::drained_read(fd)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn drained_read(_fd: c_int) -> DrainedRead {
    DrainedRead::Clear
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_drained(fd: c_int) {
    super::cache::read_drained(fd)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_drained(_fd: c_int) {}

/// The loop of [`socket_io`]; `stream_len`: a plain stream read of that many bytes;
/// `deadline`: see [`socket_io_until`].
///
/// Only the attempts happen here; every wait is [`socket_wait`]'s, out of line, so that
/// this frame, which stays on a parked green thread's stack and is read again when it
/// resumes, holds no settings, no registration and no wait bookkeeping.
fn socket_io_with(
    fd: c_int,
    dir: Direction,
    stream_len: Option<size_t>,
    deadline: &mut Option<Option<Instant>>,
    mut op: impl FnMut(c_int) -> ssize_t,
) -> Result<Option<ssize_t>, Errno> {
    // After a read that drained the socket, another attempt could only fail: wait first.
    if stream_len.is_some() {
        socket_wait(fd, dir, Before::Read, deadline)?;
    }
    loop {
        let n = op(libc::MSG_DONTWAIT);
        if n >= 0 {
            if stream_len.is_some_and(|len| n > 0 && (n as size_t) < len) {
                read_drained(fd);
            }
            return Ok(Some(n));
        }
        match errno() {
            libc::ENOTSOCK => return Ok(None),
            libc::EAGAIN => {}
            e => return Err(e),
        }
        socket_wait(fd, dir, Before::Retry, deadline)?;
    }
}

/// What [`socket_wait`] comes before.
#[derive(Clone, Copy)]
enum Before {
    /// The first attempt of a plain stream read: wait only if the last read drained the
    /// socket (in the common case with the settings found by the same lookup).
    Read,
    /// Another attempt, after one that failed with `EAGAIN`.
    Retry,
}

/// The wait of [`socket_io_with`] before its next attempt. `Ok(())`: attempt now (after a
/// wait, or at once: before a read that need not wait, or when the caller made the
/// descriptor non-blocking and wants the attempt's own answer after a drained read).
#[inline(never)]
fn socket_wait(
    fd: c_int,
    dir: Direction,
    before: Before,
    deadline: &mut Option<Option<Instant>>,
) -> Result<(), Errno> {
    let (settings, after_drain) = match before {
        Before::Read => match drained_read(fd) {
            DrainedRead::Clear => return Ok(()),
            DrainedRead::Wait(settings) => (settings, true),
            DrainedRead::General => (socket_settings(fd, dir)?, true),
        },
        Before::Retry => (socket_settings(fd, dir)?, false),
    };
    if after_drain && (settings.nonblocking || !settings.drained) {
        // Non-blocking (the caller wants the attempt's own answer), or the flag was void
        // (the number names another file now): try first after all.
        return Ok(());
    }
    if settings.nonblocking {
        return Err(libc::EAGAIN);
    }
    let deadline = *deadline.get_or_insert_with(|| settings.timeout.map(|t| Instant::now() + t));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _parked = super::cache::Parked::enter();
    match wait_on(settings.id, dir, deadline, after_drain) {
        Ok(()) => Ok(()),
        Err(Interrupted::Deadline) => Err(libc::EAGAIN),
        Err(Interrupted::Errno(e)) => Err(e),
    }
}

/// A socket send of `len` bytes: continues after partial sends, as blocking `send` does
/// on a stream socket, and returns the total, or the count so far if an error follows
/// progress. `op(offset, flags)` sends from `offset`.
pub(super) fn socket_send(
    fd: c_int,
    len: size_t,
    mut op: impl FnMut(size_t, c_int) -> ssize_t,
) -> Result<Option<ssize_t>, Errno> {
    let mut sent: size_t = 0;
    let mut deadline = None;
    loop {
        match socket_io_until(fd, Direction::Write, &mut deadline, |flags| op(sent, flags)) {
            Ok(None) => return Ok(None),
            Ok(Some(n)) => {
                sent += n as size_t;
                if sent >= len || n == 0 {
                    return Ok(Some(sent as ssize_t));
                }
            }
            Err(_) if sent > 0 => return Ok(Some(sent as ssize_t)),
            Err(e) => return Err(e),
        }
    }
}

/// A blocking call on a descriptor that has no per-call non-blocking flag (pipes,
/// terminals, listening sockets): wait on the hub until `poll` says ready, then `call`.
/// Non-blocking and never-blocking descriptors pass straight through.
pub(super) fn poll_then_call<T: From<i8>>(
    fd: c_int,
    dir: Direction,
    deadline: Option<Instant>,
    call: impl Fn() -> T,
) -> Result<T, Errno> {
    if passes_through(fd) || is_nonblocking(fd).unwrap_or(true) {
        return Ok(call());
    }
    loop {
        if ready_now(fd, dir) {
            return Ok(call());
        }
        match wait(fd, dir, deadline) {
            Ok(()) => {}
            Err(Interrupted::Deadline) => return Err(libc::EAGAIN),
            Err(Interrupted::Errno(e)) => return Err(e),
        }
    }
}

/// Hook of `read(2)`.
///
/// # Safety
/// The contract of libc's `read`: `buf` is valid for `count` bytes of writes.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is read's.
        return unsafe { original::read(fd, buf, count) };
    }
    run(|| {
        // SAFETY (both calls): the caller's contract is read's; recv on a socket with no
        // flags is read.
        match socket_read(fd, count, |flags| unsafe {
            original::recv(fd, buf, count, flags)
        })? {
            Some(n) => Ok(n),
            None => poll_then_call(fd, Direction::Read, None, || unsafe {
                original::read(fd, buf, count)
            }),
        }
    })
}
crate::sys::interpose!(read);

/// Hook of `write(2)`.
///
/// # Safety
/// The contract of libc's `write`: `buf` is valid for `count` bytes of reads.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is write's.
        return unsafe { original::write(fd, buf, count) };
    }
    run(|| {
        // SAFETY (both calls): the caller's contract is write's, and `off <= count`; send
        // on a socket with no flags is write.
        match socket_send(fd, count, |off, flags| unsafe {
            original::send(fd, buf.cast::<u8>().add(off).cast(), count - off, flags)
        })? {
            Some(n) => Ok(n),
            None => poll_then_call(fd, Direction::Write, None, || unsafe {
                original::write(fd, buf, count)
            }),
        }
    })
}
crate::sys::interpose!(write);

/// Hook of `recv(2)`.
///
/// # Safety
/// The contract of libc's `recv`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & RECV_NEVER_WAITS != 0 {
        // SAFETY: the caller's contract is recv's.
        return unsafe { original::recv(fd, buf, len, flags) };
    }
    if flags & libc::MSG_WAITALL != 0 {
        // SAFETY: the caller's contract is recv's.
        return run(|| unsafe { recv_all(fd, buf, len, flags & !libc::MSG_WAITALL) });
    }
    run(|| {
        // SAFETY: the caller's contract is recv's.
        let op = |extra| unsafe { original::recv(fd, buf, len, flags | extra) };
        let n = if flags == 0 {
            socket_read(fd, len, op)
        } else {
            socket_io(fd, Direction::Read, op)
        };
        n.map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(recv);

/// `recv` with `MSG_WAITALL`, which `MSG_DONTWAIT` would cut short: receives until `len`
/// bytes, end of stream, or an error (reported only if nothing was received), as the
/// blocking call does; on a stream socket only, and not when peeking
/// ([`waitall_continues`]).
///
/// # Safety
/// The contract of libc's `recv`.
unsafe fn recv_all(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> Result<ssize_t, Errno> {
    let mut got: size_t = 0;
    let mut deadline = None;
    loop {
        // SAFETY: `got < len` or this is the first call, so the range is inside `buf`.
        let r = socket_io_until(fd, Direction::Read, &mut deadline, |extra| unsafe {
            original::recv(
                fd,
                buf.cast::<u8>().add(got).cast(),
                len - got,
                flags | extra,
            )
        });
        match r {
            Ok(None) => return Ok(-1),
            Ok(Some(n)) => {
                got += n as size_t;
                if n == 0 || got >= len || !waitall_continues(fd, flags) {
                    return Ok(got as ssize_t);
                }
            }
            Err(_) if got > 0 => return Ok(got as ssize_t),
            Err(e) => return Err(e),
        }
    }
}

/// Hook of `send(2)`.
///
/// # Safety
/// The contract of libc's `send`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & libc::MSG_DONTWAIT != 0 {
        // SAFETY: the caller's contract is send's.
        return unsafe { original::send(fd, buf, len, flags) };
    }
    run(|| {
        // SAFETY: the caller's contract is send's, and `off <= len`.
        socket_send(fd, len, |off, extra| unsafe {
            original::send(
                fd,
                buf.cast::<u8>().add(off).cast(),
                len - off,
                flags | extra,
            )
        })
        .map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(send);

/// Hook of `recvfrom(2)`.
///
/// # Safety
/// The contract of libc's `recvfrom`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & RECV_NEVER_WAITS != 0 {
        // SAFETY: the caller's contract is recvfrom's.
        return unsafe { original::recvfrom(fd, buf, len, flags, addr, addrlen) };
    }
    run(|| {
        // SAFETY: the caller's contract is recvfrom's.
        socket_io(fd, Direction::Read, |extra| unsafe {
            original::recvfrom(fd, buf, len, flags | extra, addr, addrlen)
        })
        .map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(recvfrom);

/// Hook of `sendto(2)`.
///
/// # Safety
/// The contract of libc's `sendto`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & libc::MSG_DONTWAIT != 0 {
        // SAFETY: the caller's contract is sendto's.
        return unsafe { original::sendto(fd, buf, len, flags, addr, addrlen) };
    }
    run(|| {
        // SAFETY: the caller's contract is sendto's, and `off <= len`.
        socket_send(fd, len, |off, extra| unsafe {
            let at = buf.cast::<u8>().add(off).cast();
            original::sendto(fd, at, len - off, flags | extra, addr, addrlen)
        })
        .map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(sendto);

/// Hook of `connect(2)`.
///
/// # Safety
/// The contract of libc's `connect`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is connect's.
        return unsafe { original::connect(fd, addr, len) };
    }
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 || flags & libc::O_NONBLOCK != 0 {
        // SAFETY: the caller's contract is connect's.
        return unsafe { original::connect(fd, addr, len) };
    }
    run(|| {
        // Non-blocking for this one call only (see the module docs for the race).
        if set_flags(fd, flags | libc::O_NONBLOCK) == -1 {
            return Err(errno());
        }
        // SAFETY: the caller's contract is connect's.
        let r = unsafe { original::connect(fd, addr, len) };
        let e = errno();
        // The caller's own flags again.
        set_flags(fd, flags);
        if r == 0 {
            return Ok(0);
        }
        if e != libc::EINPROGRESS {
            return Err(e);
        }
        let deadline = socket_deadline(fd, Direction::Write);
        loop {
            match wait(fd, Direction::Write, deadline) {
                Ok(()) => {}
                // A blocking connect that times out (SO_SNDTIMEO) reports EINPROGRESS.
                Err(Interrupted::Deadline) => return Err(libc::EINPROGRESS),
                Err(Interrupted::Errno(e)) => return Err(e),
            }
            if !ready_now(fd, Direction::Write) {
                continue;
            }
            let mut err: c_int = 0;
            let mut n = std::mem::size_of::<c_int>() as socklen_t;
            // SAFETY: `err` and `n` are live locals of the sizes passed.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut c_int).cast(),
                    &mut n,
                )
            };
            return match (r, err) {
                (-1, _) => Err(errno()),
                (_, 0) => Ok(0),
                (_, e) => Err(e),
            };
        }
    })
}
crate::sys::interpose!(connect);

/// `fcntl(F_SETFL)`, on Linux past the `fcntl` hook: the `connect` hook's own toggle of
/// `O_NONBLOCK`, undone at once, must not void every descriptor's cached settings (as a
/// caller's `F_SETFL` does, see `cache.rs`).
fn set_flags(fd: c_int, flags: c_int) -> c_int {
    // SAFETY: F_SETFL takes an int argument (passed in the register a variadic one uses).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let r = unsafe { original::fcntl(fd, libc::F_SETFL, flags as libc::c_ulong) };
    // SAFETY: F_SETFL takes an int argument.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let r = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    r
}

/// Hook of `accept(2)`.
///
/// # Safety
/// The contract of libc's `accept`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let new = if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is accept's.
        unsafe { original::accept(fd, addr, len) }
    } else {
        run(|| {
            let deadline = socket_deadline(fd, Direction::Read);
            // SAFETY: the caller's contract is accept's.
            poll_then_call(fd, Direction::Read, deadline, || unsafe {
                original::accept(fd, addr, len)
            })
        })
    };
    super::fds::renumbered(new);
    new
}
crate::sys::interpose!(accept);

/// Hook of `accept4(2)`.
///
/// # Safety
/// The contract of libc's `accept4`.
// Linux only: macOS has no accept4.
#[cfg(not(target_os = "macos"))]
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let new = if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is accept4's.
        unsafe { original::accept4(fd, addr, len, flags) }
    } else {
        run(|| {
            let deadline = socket_deadline(fd, Direction::Read);
            // SAFETY: the caller's contract is accept4's.
            poll_then_call(fd, Direction::Read, deadline, || unsafe {
                original::accept4(fd, addr, len, flags)
            })
        })
    };
    super::fds::renumbered(new);
    new
}

/// Hook of `poll(2)`: with a non-zero timeout and at least one descriptor, the wait
/// happens on the hub. The descriptors go into a temporary level-triggered kernel set
/// ([`PollSet`](crate::sys::PollSet): epoll, kqueue on macOS), and the green thread waits
/// for that set to become readable (its fd is itself pollable), then asks the original
/// `poll` again with a zero timeout. Where the set cannot mirror the array (see `sys`), the
/// call blocks as the original does.
///
/// # Safety
/// The contract of libc's `poll`: `fds` is valid for `nfds` entries.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    if timeout == 0 || nfds == 0 || !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is poll's.
        return unsafe { original::poll(fds, nfds, timeout) };
    }
    // SAFETY: the caller's contract is poll's: `fds` is valid for `nfds` entries.
    let now = unsafe { original::poll(fds, nfds, 0) };
    if now != 0 {
        return now;
    }
    // SAFETY: `fds` is valid for `nfds` entries and nothing else aliases it during the call.
    let set = unsafe { std::slice::from_raw_parts(fds, nfds as usize) };
    let Some(poll_set) = crate::sys::PollSet::new(set) else {
        // SAFETY: the caller's contract is poll's.
        return unsafe { original::poll(fds, nfds, timeout) };
    };
    run(|| {
        let deadline =
            (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
        loop {
            match wait(poll_set.as_raw_fd(), Direction::Read, deadline) {
                Ok(()) => {}
                Err(Interrupted::Deadline) => return Ok(0),
                Err(Interrupted::Errno(e)) => return Err(e),
            }
            // SAFETY: as above.
            let n = unsafe { original::poll(fds, nfds, 0) };
            if n != 0 {
                return if n < 0 { Err(errno()) } else { Ok(n) };
            }
        }
    })
}
crate::sys::interpose!(poll);

/// Sleeps the green thread for `d` on the hub. A fired `Timeout` or a kill ends the sleep
/// early (it cannot be reported through a sleep's C interface).
fn green_sleep(d: Duration) {
    run::<i8>(|| {
        let _ = suspended(|| crate::time::sleep(d));
        Ok(0)
    });
}

/// `ts` as a duration, if it is a valid `timespec` (else the original reports `EINVAL`).
fn duration_of(ts: *const timespec) -> Option<Duration> {
    if ts.is_null() {
        return None;
    }
    // SAFETY: the caller of the hook passes a readable timespec (checked non-null).
    let ts = unsafe { *ts };
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Hook of `nanosleep(2)`.
///
/// # Safety
/// The contract of libc's `nanosleep`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    let d = match cooperative(&TIME).then(|| duration_of(req)).flatten() {
        Some(d) => d,
        // SAFETY: the caller's contract is nanosleep's.
        None => return unsafe { original::nanosleep(req, rem) },
    };
    green_sleep(d);
    0
}
crate::sys::interpose!(nanosleep);

/// Hook of `clock_nanosleep(2)` (what std's `thread::sleep` calls), for the realtime,
/// monotonic and boottime clocks, relative or `TIMER_ABSTIME`.
///
/// # Safety
/// The contract of libc's `clock_nanosleep`.
// Linux only: macOS has no clock_nanosleep.
#[cfg(not(target_os = "macos"))]
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let known = matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME
    );
    let d = match (known && cooperative(&TIME))
        .then(|| duration_of(req))
        .flatten()
    {
        Some(d) => d,
        // SAFETY: the caller's contract is clock_nanosleep's.
        None => return unsafe { original::clock_nanosleep(clock, flags, req, rem) },
    };
    let d = if flags & libc::TIMER_ABSTIME != 0 {
        let mut now = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a live timespec; `clock` is one of the known clocks.
        unsafe { libc::clock_gettime(clock, &mut now) };
        let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec as u32);
        d.saturating_sub(now)
    } else {
        d
    };
    green_sleep(d);
    0
}

/// Hook of `usleep(3)` (glibc's calls `nanosleep` internally, past any hook).
///
/// # Safety
/// None beyond libc's `usleep`: it takes no pointers.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn usleep(usec: useconds_t) -> c_int {
    if !cooperative(&TIME) {
        // SAFETY: usleep takes no pointers.
        return unsafe { original::usleep(usec) };
    }
    green_sleep(Duration::from_micros(usec.into()));
    0
}
crate::sys::interpose!(usleep);

/// Hook of `sleep(3)`: returns 0 (no unslept seconds).
///
/// # Safety
/// None beyond libc's `sleep`: it takes no pointers.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    if !cooperative(&TIME) {
        // SAFETY: sleep takes no pointers.
        return unsafe { original::sleep(secs) };
    }
    green_sleep(Duration::from_secs(secs.into()));
    0
}
crate::sys::interpose!(sleep);
