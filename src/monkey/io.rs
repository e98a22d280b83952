//! Hooks of the scatter/gather and message calls: `readv`, `writev`, `recvmsg`, `sendmsg`.
//!
//! They follow the hooks of `read`/`write`/`recv`/`send` ([`super::hooks`]) step for step:
//!
//! ```text
//!   readv/writev(fd, iov, n)
//!     not cooperative, n outside 0..=IOV_MAX, length overflows, readv of 0 bytes ──▶ original
//!     socket: recvmsg/sendmsg(fd, {iov, n}, MSG_DONTWAIT), wait on the hub on EAGAIN
//!     not a socket (ENOTSOCK): pipes, terminals as read/write; files pass through
//!   recvmsg/sendmsg(fd, msg, flags)
//!     not cooperative, MSG_DONTWAIT already, recvmsg with MSG_ERRQUEUE/MSG_OOB ─▶ original
//!     otherwise the call with MSG_DONTWAIT, wait on the hub on EAGAIN
//! ```
//!
//! What makes each one return what the blocking call would have:
//! * **`readv` on a socket** is the kernel's `recvmsg` with no name, no control buffer and
//!   no flags, except that a `readv` of zero bytes returns 0 at once even on a datagram
//!   socket (`recvmsg` would wait for, and consume, a datagram): zero-byte `readv`s pass
//!   through. Invalid counts (`iovcnt < 0`, `> IOV_MAX`, a total over `SSIZE_MAX`) pass
//!   through too, so they fail with `readv`'s own `EINVAL` rather than `recvmsg`'s
//!   `EMSGSIZE`.
//! * **`writev`/`sendmsg` on a stream socket** continue after a partial send, as the
//!   blocking calls do, and return the total, or the count so far if an error (or the
//!   `SO_SNDTIMEO` deadline) follows progress. The continuation sends the rest of the
//!   caller's iovecs from a copy (the caller's array is never written) and, for
//!   `sendmsg`, without the ancillary data, which went with the first part (the kernel
//!   attaches `SCM_RIGHTS` to the first part of a stream send only, too).
//! * **`recvmsg` with `MSG_WAITALL`** on a `SOCK_STREAM` socket receives until the iovecs
//!   are full, end of stream or error, like `recv`'s hook. Datagram and seqpacket sockets
//!   return one message, as the kernel does for them (it ignores `MSG_WAITALL` there). The
//!   continuation receives into the rest of the iovecs with no name (the first part
//!   filled it) and the caller's control buffer as long as no ancillary data has arrived;
//!   once a part brings ancillary data (or is truncated, `MSG_CTRUNC`), the call returns
//!   with it. The kernel stops there too when the data carry descriptors; with
//!   `SO_PASSCRED` it would go on gluing parts from the same writer, so such a call may
//!   return fewer bytes than the blocking one (still a valid `recvmsg` result).
//!   `msg_flags` is the union of the parts' flags, `msg_controllen` the ancillary data's.
//!   With `MSG_PEEK` a continuation would peek the same bytes again, so `MSG_PEEK |
//!   MSG_WAITALL` returns after the first non-empty peek (possibly fewer bytes than the
//!   blocking call, which waits until all of them can be peeked).
//! * **`recvmsg` with `MSG_ERRQUEUE` or `MSG_OOB`** passes through: those reads never
//!   wait, not even on a blocking socket.
//! * **Timeouts**: `SO_RCVTIMEO`/`SO_SNDTIMEO` end the wait with `EAGAIN` as for the other
//!   socket hooks (read with `getsockopt` when a call first has to wait).

use super::hooks::{poll_then_call, run, socket_io, socket_io_until, socket_send, Errno};
use super::{cooperative, original, SOCKETS};
use crate::reactor::Direction;
use libc::{c_int, iovec, msghdr, size_t, ssize_t};

/// Linux's `IOV_MAX` (`UIO_MAXIOV`): the most iovecs one call accepts.
const IOV_MAX: c_int = 1024;

/// The total length of `cnt` iovecs at `iov`, if the kernel would accept them as a
/// `readv`/`writev` argument (`0 <= cnt <= IOV_MAX`, total at most `SSIZE_MAX`).
///
/// # Safety
/// `iov` is null or valid for `cnt` reads of `iovec` when `cnt` is in range.
unsafe fn iov_total(iov: *const iovec, cnt: c_int) -> Option<size_t> {
    if !(0..=IOV_MAX).contains(&cnt) || (cnt > 0 && iov.is_null()) {
        return None;
    }
    if cnt == 0 {
        return Some(0);
    }
    // SAFETY: the caller's contract: `iov` is valid for `cnt` entries.
    let slice = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    slice
        .iter()
        .try_fold(0usize, |sum, v| sum.checked_add(v.iov_len))
        .filter(|&t| t <= isize::MAX as usize)
}

/// The iovecs at `iov` (`cnt` of them) without their first `skip` bytes.
///
/// # Safety
/// `iov` is valid for `cnt` reads of `iovec`; `skip` is at most their total length.
unsafe fn iov_after(iov: *const iovec, cnt: usize, skip: size_t) -> Vec<iovec> {
    let mut skip = skip;
    let mut rest = Vec::with_capacity(cnt);
    // SAFETY: the caller's contract: `iov` is valid for `cnt` entries.
    for v in unsafe { std::slice::from_raw_parts(iov, cnt) } {
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        rest.push(iovec {
            // SAFETY: `skip < iov_len`, so the pointer stays inside the caller's buffer.
            iov_base: unsafe { v.iov_base.cast::<u8>().add(skip).cast() },
            iov_len: v.iov_len - skip,
        });
        skip = 0;
    }
    rest
}

/// A `msghdr` with only the data part set (what `readv`/`writev` amount to on a socket).
fn data_only(iov: *const iovec, cnt: usize) -> msghdr {
    // SAFETY: an all-zero msghdr (null pointers, zero lengths) is a valid value.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.cast_mut();
    m.msg_iovlen = cnt as _;
    m
}

/// Receive flags with which the call never waits, not even on a blocking socket
/// (`MSG_ERRQUEUE` on Linux, `MSG_OOB`: an empty queue, or urgent data not there yet, is
/// `EAGAIN` or `EINVAL` at once): such receives pass straight through.
pub(super) const RECV_NEVER_WAITS: c_int =
    libc::MSG_DONTWAIT | crate::sys::MSG_ERRQUEUE | libc::MSG_OOB;

/// Whether a `MSG_WAITALL` receive that got part of what it asked for goes on, as the
/// blocking call does: on a stream socket, unless peeking (a second peek would return the
/// same bytes again). The kernel ignores `MSG_WAITALL` on datagram and seqpacket sockets.
pub(super) fn waitall_continues(fd: c_int, flags: c_int) -> bool {
    flags & libc::MSG_PEEK == 0 && socket_type(fd) == Some(libc::SOCK_STREAM)
}

/// `msg_iovlen` as a count (`size_t` in glibc, `int` in musl).
#[allow(clippy::unnecessary_cast)]
fn iovlen(m: &msghdr) -> usize {
    m.msg_iovlen as usize
}

/// `SO_TYPE` of a socket, or `None` if it cannot be learnt.
fn socket_type(fd: c_int) -> Option<c_int> {
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(ty)
}

/// Hook of `readv(2)`.
///
/// # Safety
/// The contract of libc's `readv`: `iov` is valid for `iovcnt` entries, each writable for
/// its length.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: the caller's contract is readv's (the iovecs are read only if the count is
    // valid, and only when cooperative).
    if !cooperative(&SOCKETS) || !matches!(unsafe { iov_total(iov, iovcnt) }, Some(1..)) {
        // SAFETY: the caller's contract is readv's.
        return unsafe { original::readv(fd, iov, iovcnt) };
    }
    run(|| {
        let mut msg = data_only(iov, iovcnt as usize);
        // SAFETY (both calls): the caller's contract is readv's; recvmsg with only the
        // data part and no flags is readv on a socket.
        match socket_io(fd, Direction::Read, |flags| unsafe {
            original::recvmsg(fd, &mut msg, flags)
        })? {
            Some(n) => Ok(n),
            None => poll_then_call(fd, Direction::Read, None, || unsafe {
                original::readv(fd, iov, iovcnt)
            }),
        }
    })
}
crate::sys::interpose!(readv);

/// Hook of `writev(2)`.
///
/// # Safety
/// The contract of libc's `writev`: `iov` is valid for `iovcnt` entries, each readable for
/// its length.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    if !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is writev's.
        return unsafe { original::writev(fd, iov, iovcnt) };
    }
    // SAFETY: the caller's contract is writev's.
    let Some(total) = (unsafe { iov_total(iov, iovcnt) }) else {
        // SAFETY: the caller's contract is writev's; it fails with EINVAL at once.
        return unsafe { original::writev(fd, iov, iovcnt) };
    };
    let cnt = iovcnt as usize;
    run(|| {
        // SAFETY (both calls): the caller's contract is writev's and `off <= total`;
        // sendmsg with only the data part and no flags is writev on a socket.
        match socket_send(fd, total, |off, flags| unsafe {
            if off == 0 {
                original::sendmsg(fd, &data_only(iov, cnt), flags)
            } else {
                let rest = iov_after(iov, cnt, off);
                original::sendmsg(fd, &data_only(rest.as_ptr(), rest.len()), flags)
            }
        })? {
            Some(n) => Ok(n),
            None => poll_then_call(fd, Direction::Write, None, || unsafe {
                original::writev(fd, iov, iovcnt)
            }),
        }
    })
}
crate::sys::interpose!(writev);

/// Hook of `recvmsg(2)`.
///
/// # Safety
/// The contract of libc's `recvmsg`: `msg` points to a valid, writable `msghdr` whose
/// buffers are valid for their lengths.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & RECV_NEVER_WAITS != 0 || msg.is_null() {
        // SAFETY: the caller's contract is recvmsg's (a null `msg` fails with EFAULT).
        return unsafe { original::recvmsg(fd, msg, flags) };
    }
    if flags & libc::MSG_WAITALL != 0 {
        // SAFETY: the caller's contract is recvmsg's.
        return run(|| unsafe { recvmsg_all(fd, msg, flags & !libc::MSG_WAITALL) });
    }
    run(|| {
        // SAFETY: the caller's contract is recvmsg's.
        socket_io(fd, Direction::Read, |extra| unsafe {
            original::recvmsg(fd, msg, flags | extra)
        })
        .map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(recvmsg);

/// `recvmsg` with `MSG_WAITALL` (already removed from `flags`): see the module docs.
///
/// # Safety
/// The contract of libc's `recvmsg`.
unsafe fn recvmsg_all(fd: c_int, msg: *mut msghdr, flags: c_int) -> Result<ssize_t, Errno> {
    // SAFETY: the caller's contract: `msg` is a valid msghdr.
    let (iov, cnt, control, capacity) = unsafe {
        let m = &*msg;
        (m.msg_iov, iovlen(m), m.msg_control, m.msg_controllen)
    };
    // One timeout for the whole call, as the kernel's MSG_WAITALL spends it.
    let mut deadline = None;
    // SAFETY: the caller's contract is recvmsg's.
    let first = socket_io_until(fd, Direction::Read, &mut deadline, |extra| unsafe {
        original::recvmsg(fd, msg, flags | extra)
    })?;
    let Some(n) = first else { return Ok(-1) };
    // SAFETY: as above; the iovecs are valid for `cnt` entries (the call just used them).
    let total = unsafe { iov_total(iov, cnt.min(c_int::MAX as usize) as c_int) };
    // SAFETY: `msg` is valid; the kernel just wrote its output fields.
    let (got_control, out_flags) = unsafe { ((*msg).msg_controllen, (*msg).msg_flags) };
    let stop_flags = libc::MSG_TRUNC | libc::MSG_CTRUNC | libc::MSG_EOR | libc::MSG_OOB;
    let more = matches!(total, Some(t) if n > 0 && (n as size_t) < t)
        && got_control == 0
        && out_flags & stop_flags == 0
        && waitall_continues(fd, flags);
    if !more {
        return Ok(n);
    }
    let mut got = n as size_t;
    let total = total.unwrap_or(0);
    while got < total {
        // SAFETY: `got < total`, the iovecs' length.
        let rest = unsafe { iov_after(iov, cnt, got) };
        let mut part = data_only(rest.as_ptr(), rest.len());
        part.msg_control = control;
        part.msg_controllen = capacity;
        // SAFETY: `part` describes the rest of the caller's buffers and its control
        // buffer, all valid per the caller's contract.
        let r = socket_io_until(fd, Direction::Read, &mut deadline, |extra| unsafe {
            original::recvmsg(fd, &mut part, flags | extra)
        });
        let k = match r {
            Ok(Some(k)) if k > 0 => k as size_t,
            // End of stream, or an error after progress: return what arrived.
            _ => break,
        };
        got += k;
        // SAFETY: `msg` is valid and not otherwise borrowed.
        unsafe {
            (*msg).msg_flags |= part.msg_flags;
            (*msg).msg_controllen = part.msg_controllen;
        }
        if part.msg_controllen != 0 || part.msg_flags & stop_flags != 0 {
            break;
        }
    }
    Ok(got as ssize_t)
}

/// Hook of `sendmsg(2)`.
///
/// # Safety
/// The contract of libc's `sendmsg`: `msg` points to a valid `msghdr` whose buffers are
/// valid for their lengths.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !cooperative(&SOCKETS) || flags & libc::MSG_DONTWAIT != 0 || msg.is_null() {
        // SAFETY: the caller's contract is sendmsg's (a null `msg` fails with EFAULT).
        return unsafe { original::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's contract: `msg` is a valid msghdr.
    let m = unsafe { &*msg };
    let cnt = iovlen(m);
    // SAFETY: the caller's contract: `msg_iov` is valid for `msg_iovlen` entries.
    let total = match unsafe { iov_total(m.msg_iov, cnt.min(c_int::MAX as usize) as c_int) } {
        Some(t) => t,
        // SAFETY: the caller's contract is sendmsg's; it fails at once (EMSGSIZE, EINVAL).
        _ => return unsafe { original::sendmsg(fd, msg, flags) },
    };
    run(|| {
        // SAFETY: the caller's contract is sendmsg's and `off <= total`.
        socket_send(fd, total, |off, extra| unsafe {
            if off == 0 {
                original::sendmsg(fd, msg, flags | extra)
            } else {
                let rest = iov_after(m.msg_iov, cnt, off);
                let mut part = data_only(rest.as_ptr(), rest.len());
                part.msg_name = m.msg_name;
                part.msg_namelen = m.msg_namelen;
                original::sendmsg(fd, &part, flags | extra)
            }
        })
        .map(|n| n.unwrap_or(-1))
    })
}
crate::sys::interpose!(sendmsg);
