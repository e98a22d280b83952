//! Cooperative sockets: the API of `std::net` and `std::os::unix::net` whose blocking
//! calls block the *green thread*, never the OS thread or its hub (gevent's
//! `gevent.socket`).
//!
//! ```
//! use std::io::{Read, Write};
//! use verdant::net::{TcpListener, TcpStream};
//!
//! // An echo server: one green thread per connection.
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! verdant::spawn(move || {
//!     for conn in listener.incoming() {
//!         let mut conn = conn.unwrap();
//!         verdant::spawn(move || {
//!             let mut buf = [0; 1024];
//!             while let Ok(n @ 1..) = conn.read(&mut buf) {
//!                 conn.write_all(&buf[..n]).unwrap();
//!             }
//!         });
//!     }
//! });
//! let clients: Vec<_> = (0..10u8)
//!     .map(|i| {
//!         verdant::spawn(move || {
//!             let mut s = TcpStream::connect(addr).unwrap();
//!             s.write_all(&[i; 3]).unwrap();
//!             let mut back = [0; 3];
//!             s.read_exact(&mut back).unwrap();
//!             back == [i; 3]
//!         })
//!     })
//!     .collect();
//! assert!(verdant::joinall(clients).into_iter().all(|r| r.unwrap()));
//! ```
//!
//! # How a call blocks
//!
//! Every socket is non-blocking and registered with its thread's hub (edge-triggered, both
//! directions) for its whole life. A call tries the operation first; on `WouldBlock` it
//! parks the green thread in the hub until the fd becomes ready, then tries again (the
//! reactor's protocol, see `src/reactor.rs`):
//!
//! ```text
//!   read(buf) ─▶ recv() ──ok/err──▶ return
//!                  │ WouldBlock
//!                  ▼
//!            hub::wait_fd(id, Read, deadline) ──Ready──▶ retry recv()
//!                  ├─ Deadline (read timeout) ─────────▶ Err(TimedOut)
//!                  ├─ Timeout in scope fired ──────────▶ Err(TimedOut)
//!                  ├─ fd deregistered (closed) ────────▶ Err(NotConnected)
//!                  ├─ another reader already waits ────▶ Err(ResourceBusy)
//!                  └─ kill ────────────────────────────▶ unwinds
//! ```
//!
//! Whichever way the wait ends, nothing stays registered for the green thread.
//!
//! # Rules
//!
//! * **Sockets are `!Send`**: a socket is registered with the hub of the OS thread that
//!   created it. To hand one to another OS thread, convert it to its std type
//!   (`into_std`, `From`), move that, and convert it back there (`from_std`).
//! * **Clones share one registration.** `try_clone` returns another handle to the same fd
//!   (not a `dup`): the reactor parks at most one green thread per fd and direction. So
//!   one green thread may read while another writes, but a second green thread that
//!   blocks reading (or writing) the same socket gets `ResourceBusy`.
//! * **Closing needs the last handle.** Dropping a clone does nothing to the socket; the
//!   last handle to drop deregisters the fd (waking anything still waiting on it, e.g. a
//!   [`wait_readable`] of its fd, with `NotConnected`) and then closes it. To end a
//!   connection that other clones still hold, call `shutdown`: a green thread blocked
//!   reading is woken and reads end-of-file.
//! * **Timeouts**: `set_read_timeout`/`set_write_timeout` bound each call (`TimedOut`), as
//!   `SO_RCVTIMEO` does for std; a [`Timeout`](crate::Timeout) in scope bounds it too.
//! * **Listen backlog**: listeners use [`LISTEN_BACKLOG`] (4096, capped by the kernel),
//!   not std's 128, which makes a burst of 10,000 connections take a minute to accept.
//! * **Name resolution** never blocks the hub: numeric addresses are parsed on the spot,
//!   host names are looked up on the blocking thread pool while the green thread waits
//!   (see [`ToSocketAddrs`]).
//!
//! [`wait_readable`] and [`wait_writable`] wait for *any* fd: a pipe, stdin, the socket of
//! a C library (gevent's `wait_read`/`wait_write`).
//!
//! The one `unsafe` in this module is the body of `FromRawFd::from_raw_fd`, which std's
//! trait declares `unsafe`: it forwards the caller's ownership promise to std.

mod resolve;
pub(crate) mod source;
mod tcp;
mod udp;
mod unix;

#[cfg(test)]
mod tests;

pub use resolve::ToSocketAddrs;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixIncoming, UnixListener, UnixStream};

use crate::reactor::Direction;
use crate::sys::socket::poll_now;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The listen backlog of [`TcpListener`] and [`UnixListener`]: the kernel caps it to its
/// own maximum (`net.core.somaxconn`, 4096 by default on Linux since 5.4; `kern.ipc.somaxconn`
/// on the BSDs). With std's 128, a burst of 10,000 connections took 56–79 s to accept on
/// this project's machines; with 4096, about 1.2 s.
pub const LISTEN_BACKLOG: i32 = if libc::SOMAXCONN > 4096 {
    libc::SOMAXCONN
} else {
    4096
};

/// Blocks the green thread until `fd` is readable (or at end of file, or in error), for
/// at most `timeout` (`TimedOut` after it). Works on any fd the kernel can poll: a pipe,
/// a terminal, a socket of a C library, or one of verdant's own sockets.
///
/// It returns at once if `fd` is readable now. Otherwise the fd is registered with the
/// hub for the duration of the wait (shared with other green threads waiting on it, or
/// the registration of a verdant socket that owns it) and deregistered afterwards. The
/// fd must stay open while a green thread waits on it. A second green thread waiting for
/// the same direction of the same fd gets `ResourceBusy`; a [`Timeout`](crate::Timeout)
/// gives `TimedOut`; a kill unwinds.
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::time::Duration;
///
/// // Any fd: here a std (blocking-mode) socket pair, as a C library might hold.
/// let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
/// let waiter = verdant::spawn(move || verdant::net::wait_readable(reader.as_raw_fd(), None));
/// verdant::sleep(Duration::from_millis(1)).unwrap();
/// writer.write_all(b"x").unwrap();
/// waiter.join().unwrap().unwrap();
/// ```
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<()> {
    wait_ready(fd, Direction::Read, timeout)
}

/// Blocks the green thread until `fd` is writable (see [`wait_readable`]).
///
/// ```
/// use std::os::fd::AsRawFd;
/// use std::time::Duration;
///
/// let (_reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
/// // An empty socket buffer has room: this returns at once.
/// verdant::net::wait_writable(writer.as_raw_fd(), Some(Duration::from_secs(5))).unwrap();
/// ```
pub fn wait_writable(fd: RawFd, timeout: Option<Duration>) -> io::Result<()> {
    wait_ready(fd, Direction::Write, timeout)
}

fn wait_ready(fd: RawFd, dir: Direction, timeout: Option<Duration>) -> io::Result<()> {
    let read = dir == Direction::Read;
    if poll_now(fd, read)? {
        return Ok(());
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    // Held for the whole wait: a temporary registration ends when the last waiter drops it.
    let (id, _temporary) = source::registration_for(fd)?;
    loop {
        source::wait(id, dir, deadline)?;
        if poll_now(fd, read)? {
            return Ok(());
        }
    }
}

/// The fd traits and std conversions every socket type has.
macro_rules! fd_conversions {
    ($ty:ident, $std:ty) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.source.get_ref().as_raw_fd()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(self.source.get_ref())
            }
        }

        /// Deregisters and gives the fd back in blocking mode (see `into_std`).
        impl std::os::fd::IntoRawFd for $ty {
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(<$std>::from(self))
            }
        }

        /// Deregisters and gives the fd back in blocking mode (see `into_std`).
        impl From<$ty> for std::os::fd::OwnedFd {
            fn from(s: $ty) -> std::os::fd::OwnedFd {
                <$std>::from(s).into()
            }
        }

        /// Deregisters and gives the socket back in blocking mode (see `into_std`).
        ///
        /// # Panics
        /// If restoring blocking mode or duplicating a shared socket fails.
        impl From<$ty> for $std {
            fn from(s: $ty) -> $std {
                s.into_std().unwrap_or_else(|e| {
                    panic!("verdant: converting a {} to std: {e}", stringify!($ty))
                })
            }
        }

        /// Makes the socket non-blocking and registers it with this thread's hub.
        ///
        /// # Panics
        /// If that fails (`from_std` returns the error instead).
        impl From<$std> for $ty {
            fn from(s: $std) -> $ty {
                <$ty>::from_std(s).unwrap_or_else(|e| {
                    panic!(
                        "verdant: registering a {} with the hub: {e}",
                        stringify!($ty)
                    )
                })
            }
        }

        /// Takes ownership of a socket fd (see `From<std type>`).
        impl From<std::os::fd::OwnedFd> for $ty {
            fn from(fd: std::os::fd::OwnedFd) -> $ty {
                <$std>::from(fd).into()
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// Takes ownership of a socket fd (see `From<std type>`).
            ///
            /// # Safety
            /// `fd` must be an open socket of the right type that nothing else owns.
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: our caller upholds exactly what std's `from_raw_fd` requires.
                let std = unsafe { <$std as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                std.into()
            }
        }
    };
}
pub(crate) use fd_conversions;
