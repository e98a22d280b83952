//! Socket calls that std does not offer in non-blocking form: creating a non-blocking,
//! close-on-exec socket, a `connect` that returns `EINPROGRESS` instead of blocking, and
//! `listen` with a chosen backlog. Everything else (accept, read, write, options) goes
//! through std's safe socket types, which take these fds over with `From<OwnedFd>`.
//!
//! Addresses are converted to their C layout here (`sockaddr_in`, `sockaddr_in6`,
//! `sockaddr_un`), including the BSD `*_len` field where the OS has one.

use super::syscall;
use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Address families of the sockets `net` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
    /// Unix-domain (a path in the file system).
    Unix,
}

impl Domain {
    /// The family of an IP socket address.
    pub(crate) fn of(addr: &SocketAddr) -> Domain {
        match addr {
            SocketAddr::V4(_) => Domain::Inet,
            SocketAddr::V6(_) => Domain::Inet6,
        }
    }

    fn raw(self) -> libc::c_int {
        match self {
            Domain::Inet => libc::AF_INET,
            Domain::Inet6 => libc::AF_INET6,
            Domain::Unix => libc::AF_UNIX,
        }
    }
}

/// A new non-blocking, close-on-exec stream socket (`SOCK_STREAM`) of `domain`.
pub(crate) fn stream_socket(domain: Domain) -> io::Result<OwnedFd> {
    socket(domain.raw(), libc::SOCK_STREAM)
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    let ty = ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes no pointers; a bad argument is reported through errno.
    let fd = unsafe { syscall!(socket(domain, ty, 0)) }?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: socket takes no pointers; a bad argument is reported through errno.
    let fd = unsafe { syscall!(socket(domain, ty, 0)) }?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    super::set_cloexec(fd.as_raw_fd())?;
    super::set_nonblocking(fd.as_raw_fd(), true)?;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and the length passed is its size.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))
    }?;
    Ok(fd)
}

/// Starts connecting `fd` to `addr`. A non-blocking socket returns
/// `Err(EINPROGRESS)` (Unix sockets: `Err(EAGAIN)` when the listener's backlog is full).
pub(crate) fn connect_inet(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let raw = RawAddr::from_inet(addr);
    raw.connect(fd)
}

/// Starts connecting `fd` to the Unix socket at `path` (see [`connect_inet`]).
pub(crate) fn connect_unix(fd: RawFd, path: &Path) -> io::Result<()> {
    let raw = RawAddr::from_path(path)?;
    raw.connect(fd)
}

/// Sets the backlog of a listening socket. Calling `listen` again on a socket that
/// already listens only changes its backlog (Linux and the BSDs); the kernel caps it at
/// its own limit (`net.core.somaxconn`, `kern.ipc.somaxconn`).
pub(crate) fn listen(fd: RawFd, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen takes no pointers; a bad fd is reported as EBADF.
    unsafe { syscall!(listen(fd, backlog)) }.map(|_| ())
}

/// Sends `buf` with `MSG_OOB` (its last byte becomes TCP urgent data). Tests only: verdant
/// has no urgent-data API, but the reactor must not lose data behind an urgent mark.
#[cfg(test)]
pub(crate) fn send_oob(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice and the length passed is its own.
    unsafe { syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_OOB)) }.map(|n| n as usize)
}

/// Whether `fd` is ready now (a zero-timeout `poll`): readable (or at end of file, or in
/// error) for `read`, writable for `!read`.
pub(crate) fn poll_now(fd: RawFd, read: bool) -> io::Result<bool> {
    let events = if read { libc::POLLIN } else { libc::POLLOUT };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one live pollfd and the count passed is 1.
        match unsafe { syscall!(poll(&mut pfd, 1, 0)) } {
            Ok(0) => return Ok(false),
            Ok(_) => {
                if pfd.revents & libc::POLLNVAL != 0 {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                }
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A socket address in its C layout, with its length.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn zeroed() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is a plain C struct for which all zeroes is valid.
            storage: unsafe { mem::zeroed() },
            len: 0,
        }
    }

    fn from_inet(addr: &SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::from_v4(a),
            SocketAddr::V6(a) => RawAddr::from_v6(a),
        }
    }

    fn from_v4(addr: &SocketAddrV4) -> RawAddr {
        let mut raw = RawAddr::zeroed();
        // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
        let sin = unsafe {
            &mut *(&mut raw.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
        };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = addr.port().to_be();
        sin.sin_addr = libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        };
        raw.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        set_len(&mut raw);
        raw
    }

    fn from_v6(addr: &SocketAddrV6) -> RawAddr {
        let mut raw = RawAddr::zeroed();
        // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
        let sin6 = unsafe {
            &mut *(&mut raw.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
        };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = addr.port().to_be();
        sin6.sin6_flowinfo = addr.flowinfo();
        sin6.sin6_addr.s6_addr = addr.ip().octets();
        sin6.sin6_scope_id = addr.scope_id();
        raw.len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        set_len(&mut raw);
        raw
    }

    fn from_path(path: &Path) -> io::Result<RawAddr> {
        let bytes = path.as_os_str().as_bytes();
        let mut raw = RawAddr::zeroed();
        // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
        let sun = unsafe {
            &mut *(&mut raw.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_un>()
        };
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix socket path must not contain NUL bytes",
            ));
        }
        // One byte stays for the terminating NUL.
        if bytes.len() >= sun.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix socket path must be shorter than SUN_LEN",
            ));
        }
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let path_offset = mem::size_of::<libc::sockaddr_un>() - sun.sun_path.len();
        raw.len = (path_offset + bytes.len() + 1) as libc::socklen_t;
        set_len(&mut raw);
        Ok(raw)
    }

    fn connect(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `storage` holds a valid address of `len` bytes for the duration of the call.
        let r = unsafe {
            syscall!(connect(
                fd,
                (&self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>(),
                self.len,
            ))
        };
        r.map(|_| ())
    }
}

/// BSD socket addresses carry their own length in their first byte.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]
fn set_len(raw: &mut RawAddr) {
    raw.storage.ss_len = raw.len as u8;
}

#[cfg(not(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
)))]
fn set_len(_raw: &mut RawAddr) {}

/// `EINPROGRESS`: a non-blocking `connect` has started.
pub(crate) fn is_in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS)
}
