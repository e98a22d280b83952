//! The selector contract (see [`super`]) on Linux and Android: epoll, woken by an eventfd.
//!
//! Registrations are `EPOLLET` with `EPOLLRDHUP` (and `EPOLLPRI` with `EPOLLIN`), so a socket is registered once and reports
//! each *change* of readiness; the reactor keeps the level in its own cache.
//!
//! ```text
//!   any OS thread                       owning thread
//!   Waker::wake ──write(1)──▶ eventfd ──EPOLLIN|EPOLLET──▶ epoll_wait ──▶ Event{token}
//!        │                                                          │
//!        └─ pending: AtomicBool (true ⇒ a write is outstanding) ◀── Waker::reset (read, clear)
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Interest;

/// An epoll instance. Dropping it closes the epoll fd (registrations die with it).
#[derive(Debug)]
pub(crate) struct Selector {
    ep: OwnedFd,
}

impl Selector {
    /// Creates a close-on-exec epoll instance.
    pub(crate) fn new() -> io::Result<Selector> {
        // SAFETY: epoll_create1 takes only flags.
        let fd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: epoll_create1 just returned this fd and nothing else owns it.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Selector { ep })
    }

    /// Starts watching `fd` (edge-triggered) for `interest`; events carry `token`.
    pub(crate) fn register(&self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the token and directions of an fd already registered here.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn reregister(&self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Stops watching `fd`.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9; invalid
        // or unregistered fds are reported as EBADF/ENOENT.
        unsafe {
            syscall!(epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut()
            ))
        }?;
        Ok(())
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let mut flags = libc::EPOLLET | libc::EPOLLRDHUP;
        if interest.is_readable() {
            // EPOLLPRI too: the reactor must know of TCP urgent data (see `is_priority`).
            flags |= libc::EPOLLIN | libc::EPOLLPRI;
        }
        if interest.is_writable() {
            flags |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call; the kernel copies it.
        unsafe { syscall!(epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev)) }?;
        Ok(())
    }

    /// Waits for events (see the contract in [`super`]); `EINTR` is `Ok` with no events.
    pub(crate) fn select(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let timeout_ms = timeout.map_or(-1, timeout_to_ms);
        events.buf.clear();
        let cap = events.buf.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: the buffer has room for `cap` epoll_events; the kernel writes at most that many
        // and returns how many it wrote.
        let res = unsafe {
            syscall!(epoll_wait(
                self.ep.as_raw_fd(),
                events.buf.as_mut_ptr(),
                cap,
                timeout_ms
            ))
        };
        match res {
            Ok(n) => {
                // SAFETY: epoll_wait initialised the first `n` (<= cap) entries.
                unsafe { events.buf.set_len(n as usize) };
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Selector {
    fn as_raw_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }
}

/// Milliseconds for epoll_wait, rounded up so that a nonzero duration never becomes 0 (a busy
/// loop) and a timer is never reached early; clamped to the largest wait epoll accepts.
fn timeout_to_ms(d: Duration) -> libc::c_int {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// A buffer that `select` fills.
pub(crate) struct Events {
    buf: Vec<libc::epoll_event>,
}

impl Events {
    /// Room for `capacity` events per `select` (at least 1).
    pub(crate) fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// How many events the last `select` returned.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the last `select` returned no event.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the buffer (`select` does this itself).
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// The events of the last `select`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf.iter().map(|e| Event {
            flags: e.events,
            token: e.u64,
        })
    }
}

/// One readiness change of one registration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    flags: u32,
    token: u64,
}

impl Event {
    fn has(&self, flag: libc::c_int) -> bool {
        self.flags & flag as u32 != 0
    }

    /// The token given at registration.
    pub(crate) fn token(&self) -> usize {
        self.token as usize
    }

    /// Data (or urgent data) can be read, or the read side reached EOF.
    pub(crate) fn is_readable(&self) -> bool {
        self.has(libc::EPOLLIN | libc::EPOLLPRI)
    }

    /// Data can be written.
    pub(crate) fn is_writable(&self) -> bool {
        self.has(libc::EPOLLOUT)
    }

    /// Priority data is pending (`EPOLLPRI`: TCP urgent data, where a read stops short).
    pub(crate) fn is_priority(&self) -> bool {
        self.has(libc::EPOLLPRI)
    }

    /// An error is pending on the fd (`SO_ERROR`).
    pub(crate) fn is_error(&self) -> bool {
        self.has(libc::EPOLLERR)
    }

    /// The peer will send no more data (EOF after the buffered data).
    pub(crate) fn is_read_closed(&self) -> bool {
        self.has(libc::EPOLLHUP) || (self.has(libc::EPOLLIN) && self.has(libc::EPOLLRDHUP))
    }

    /// Writing can no longer succeed.
    pub(crate) fn is_write_closed(&self) -> bool {
        self.has(libc::EPOLLHUP)
            || (self.has(libc::EPOLLOUT) && self.has(libc::EPOLLERR))
            || self.flags == libc::EPOLLERR as u32
    }

    /// Both directions are closed (`EPOLLHUP`).
    pub(crate) fn is_hup(&self) -> bool {
        self.has(libc::EPOLLHUP)
    }

    /// Readable and/or writable and nothing else (`EPOLLIN`, `EPOLLOUT`, no other flag): no
    /// error, closed direction, hang-up or priority data to report. One test for the event
    /// a server sees once per request.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.flags & !((libc::EPOLLIN | libc::EPOLLOUT) as u32) == 0
    }
}

/// Wakes a [`Selector`] blocked in `select` from any OS thread, through an eventfd.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
    /// True from the first `wake` until `reset`: exactly one write is outstanding then, so
    /// further wakes skip the syscall and the eventfd counter can never saturate.
    pending: AtomicBool,
}

impl Waker {
    /// Creates a waker whose `wake` makes `selector` report an event with `token`.
    pub(crate) fn new(selector: &Selector, token: usize) -> io::Result<Waker> {
        // SAFETY: eventfd takes an initial value and flags.
        let raw = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
        // SAFETY: eventfd just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        selector.register(fd.as_raw_fd(), token, Interest::READABLE)?;
        Ok(Waker {
            fd,
            pending: AtomicBool::new(false),
        })
    }

    /// Makes the selector's current or next `select` return. Cheap when already woken.
    pub(crate) fn wake(&self) -> io::Result<()> {
        // AcqRel: the caller's writes before `wake` (e.g. a queue push) are visible to the
        // owner once its `reset` reads this flag.
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let one: u64 = 1;
        // SAFETY: the buffer is a live u64, exactly the 8 bytes an eventfd write expects.
        let res = unsafe {
            syscall!(write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>()
            ))
        };
        match res {
            Ok(_) => Ok(()),
            // The counter is full, so the eventfd is readable already: the wake is delivered.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                self.pending.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Re-arms the waker after its event was seen. Drain first, then clear `pending`: a wake
    /// racing with this either finds `pending` still set (and its work is visible to whatever
    /// the owner drains next) or writes again after the clear and is seen by the next `select`.
    pub(crate) fn reset(&self) -> io::Result<()> {
        let mut buf: u64 = 0;
        // SAFETY: the buffer is a live, writable u64, exactly what an eventfd read fills.
        let res = unsafe {
            syscall!(read(
                self.fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>()
            ))
        };
        self.pending.swap(false, Ordering::AcqRel);
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The temporary poll set (see [`super`]): a level-triggered epoll set mirroring a `poll`
/// array; its fd is readable while any of the array's descriptors is ready for what it asks.
#[derive(Debug)]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) struct PollSet {
    ep: OwnedFd,
}

#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
impl PollSet {
    /// A set watching every entry of `set` with a non-negative fd, for the events it asks
    /// (`POLLIN`/`POLLRDNORM`, `POLLPRI`, `POLLOUT`/`POLLWRNORM`, `POLLRDHUP`; errors and
    /// hang-ups always). Entries for the same fd are merged. `None` if epoll refuses a
    /// descriptor (e.g. a regular file, `EPERM`) or cannot be created.
    pub(crate) fn new(set: &[libc::pollfd]) -> Option<PollSet> {
        // SAFETY: epoll_create1 takes only flags.
        let ep = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }.ok()?;
        // SAFETY: epoll_create1 just returned this fd and nothing else owns it.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut merged: Vec<(RawFd, u32)> = Vec::with_capacity(set.len());
        for p in set.iter().filter(|p| p.fd >= 0) {
            let mut events = 0u32;
            if p.events & (libc::POLLIN | libc::POLLRDNORM) != 0 {
                events |= libc::EPOLLIN as u32;
            }
            if p.events & libc::POLLPRI != 0 {
                events |= libc::EPOLLPRI as u32;
            }
            if p.events & (libc::POLLOUT | libc::POLLWRNORM) != 0 {
                events |= libc::EPOLLOUT as u32;
            }
            if p.events & libc::POLLRDHUP != 0 {
                events |= libc::EPOLLRDHUP as u32;
            }
            match merged.iter_mut().find(|m| m.0 == p.fd) {
                Some(m) => m.1 |= events,
                None => merged.push((p.fd, events)),
            }
        }
        for (fd, events) in merged {
            let mut ev = libc::epoll_event {
                events,
                u64: fd as u64,
            };
            // SAFETY: `ev` is a live epoll_event that outlives the call; errors are reported.
            unsafe { syscall!(epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev)) }
                .ok()?;
        }
        Some(PollSet { ep })
    }

    /// Removes the descriptors the set reports hung up (`EPOLLHUP`) or in error
    /// (`EPOLLERR`) right now. For a caller whose own zero-timeout check just found nothing
    /// ready (the `select` hook with a descriptor only in its except set, or in its write
    /// set with a hang-up but no room): such a condition persists, so the level-triggered
    /// set would otherwise stay readable and wake the waiter at once, forever. Errors are
    /// ignored: at worst the waiter looks again.
    pub(crate) fn drop_hung_up(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: `events` is a live array of the length passed; a zero timeout never
        // blocks (and passes straight through the monkey shim's `epoll_wait` hook).
        let n = unsafe { syscall!(epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), 64, 0)) };
        for ev in events.iter().take(n.unwrap_or(0) as usize) {
            if ev.events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                let mut none = libc::epoll_event { events: 0, u64: 0 };
                let fd = ev.u64 as RawFd;
                // SAFETY: `none` is a live epoll_event (ignored by EPOLL_CTL_DEL); a failure
                // is ignored as documented.
                let _ = unsafe {
                    syscall!(epoll_ctl(
                        self.ep.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd,
                        &mut none
                    ))
                };
            }
        }
    }
}

impl AsRawFd for PollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }
}
