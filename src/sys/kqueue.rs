//! The selector contract (see [`super`]) on macOS, iOS and the BSDs: kqueue, woken by
//! `EVFILT_USER`.
//!
//! A registration is two filters, `EVFILT_READ` and `EVFILT_WRITE`, each `EV_CLEAR`
//! (edge-triggered), each carrying the token in `udata`. So unlike epoll one `select` may
//! report the same token twice, once per direction, and a closed connection shows up as
//! `EV_EOF` on each filter separately (`is_read_closed` on the read event, `is_write_closed`
//! on the write event; `is_hup` is never true here).
//!
//! The field types of `struct kevent` differ between the BSDs (NetBSD uses `u32` filters and
//! flags, FreeBSD 12+ has an `ext` array), so events are built with [`kevent`] and
//! `as _` casts, never by naming those types.
//!
//! ```text
//!   any OS thread                                 owning thread
//!   Waker::wake ──kevent(EVFILT_USER, NOTE_TRIGGER)──▶ kqueue ──▶ select ──▶ Event{token}
//!        │                                                                  │
//!        └─ pending: AtomicBool (true ⇒ a trigger is outstanding) ◀──────── Waker::reset
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{set_cloexec, Interest};

/// Builds a `struct kevent` for a change list, whatever the platform's field types are.
fn kevent(ident: usize, filter: i64, flags: u32, token: usize) -> libc::kevent {
    // SAFETY: `struct kevent` is plain old data (integers and a pointer used as an opaque tag);
    // all-zero is a valid value, and every field that matters is set right after.
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = ident as _;
    ev.filter = filter as _;
    ev.flags = flags as _;
    ev.udata = token as _;
    ev
}

/// A kqueue. Dropping it closes the fd (registrations die with the last fd of the queue).
#[derive(Debug)]
pub(crate) struct Selector {
    kq: OwnedFd,
}

impl Selector {
    /// Creates a close-on-exec kqueue.
    pub(crate) fn new() -> io::Result<Selector> {
        // SAFETY: kqueue takes no arguments.
        let fd = unsafe { syscall!(kqueue()) }?;
        // SAFETY: kqueue just returned this fd and nothing else owns it.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not every BSD has kqueue1/kqueuex, so close-on-exec is set right after creation.
        set_cloexec(kq.as_raw_fd())?;
        Ok(Selector { kq })
    }

    /// Starts watching `fd` (edge-triggered) for `interest`; events carry `token`.
    pub(crate) fn register(&self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let flags = (libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT) as u32;
        let mut changes = [
            kevent(fd as usize, libc::EVFILT_READ as i64, flags, token),
            kevent(fd as usize, libc::EVFILT_WRITE as i64, flags, token),
        ];
        let wanted: &mut [libc::kevent] = match (interest.is_readable(), interest.is_writable()) {
            (true, true) => &mut changes[..],
            (true, false) => &mut changes[..1],
            (false, true) => &mut changes[1..],
            (false, false) => return Ok(()),
        };
        // EPIPE: macOS refuses a write filter on a pipe whose reader is gone; the read filter
        // was still added and reports the EOF, so the registration is usable.
        self.apply(wanted, &[libc::EPIPE as i64])
    }

    /// Changes the token and directions of an fd already registered here.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn reregister(&self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let add = (libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT) as u32;
        let delete = (libc::EV_DELETE | libc::EV_RECEIPT) as u32;
        let read_flags = if interest.is_readable() { add } else { delete };
        let write_flags = if interest.is_writable() { add } else { delete };
        let mut changes = [
            kevent(fd as usize, libc::EVFILT_READ as i64, read_flags, token),
            kevent(fd as usize, libc::EVFILT_WRITE as i64, write_flags, token),
        ];
        // ENOENT: deleting a filter that was not there.
        self.apply(&mut changes, &[libc::ENOENT as i64, libc::EPIPE as i64])
    }

    /// Stops watching `fd`.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let flags = (libc::EV_DELETE | libc::EV_RECEIPT) as u32;
        let mut changes = [
            kevent(fd as usize, libc::EVFILT_READ as i64, flags, 0),
            kevent(fd as usize, libc::EVFILT_WRITE as i64, flags, 0),
        ];
        // ENOENT: a direction that was never registered.
        self.apply(&mut changes, &[libc::ENOENT as i64])
    }

    /// Submits `changes` with `EV_RECEIPT` and turns the per-change receipts into one result.
    ///
    /// `EINTR` cannot lose anything here: kevent applies the whole change list before it
    /// waits, and with `EV_RECEIPT` it does not wait for events at all.
    fn apply(&self, changes: &mut [libc::kevent], ignored: &[i64]) -> io::Result<()> {
        // `as _`: the counts are `c_int` on most BSDs and `size_t` on NetBSD.
        let n = changes.len() as libc::c_int;
        let ptr = changes.as_mut_ptr();
        // SAFETY: `changes` is a live array of `n` kevents, used both as the change list (read)
        // and the receipt list (written, at most `n` entries); a null timeout is allowed.
        let res = unsafe {
            syscall!(kevent(
                self.kq.as_raw_fd(),
                ptr,
                n as _,
                ptr,
                n as _,
                std::ptr::null()
            ))
        };
        match res {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        for ev in changes.iter() {
            let data = ev.data as i64;
            if (ev.flags as u32) & (libc::EV_ERROR as u32) != 0
                && data != 0
                && !ignored.contains(&data)
            {
                return Err(io::Error::from_raw_os_error(data as i32));
            }
        }
        Ok(())
    }

    /// Waits for events (see the contract in [`super`]); `EINTR` is `Ok` with no events.
    pub(crate) fn select(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ts;
        let ts_ptr: *const libc::timespec = match timeout {
            None => std::ptr::null(),
            Some(d) => {
                ts = timeout_to_timespec(d);
                &ts
            }
        };
        events.buf.clear();
        let cap = events.buf.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: no change list; the event buffer has room for `cap` kevents, the kernel
        // writes at most that many and returns how many; `ts_ptr` is null or points to `ts`,
        // which lives until the end of the function.
        let res = unsafe {
            syscall!(kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                events.buf.as_mut_ptr(),
                cap as _,
                ts_ptr
            ))
        };
        match res {
            Ok(n) => {
                // SAFETY: kevent initialised the first `n` (<= cap) entries.
                unsafe { events.buf.set_len(n as usize) };
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn try_clone(&self) -> io::Result<Selector> {
        // SAFETY: F_DUPFD_CLOEXEC takes an int argument; the result is a new fd we own.
        let fd = unsafe { syscall!(fcntl(self.kq.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0)) }?;
        // SAFETY: fcntl just returned this fd and nothing else owns it.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Selector { kq })
    }
}

impl AsRawFd for Selector {
    fn as_raw_fd(&self) -> RawFd {
        self.kq.as_raw_fd()
    }
}

/// kqueue takes nanoseconds, so nothing is rounded; only the seconds are clamped.
fn timeout_to_timespec(d: Duration) -> libc::timespec {
    let max_secs = libc::time_t::MAX as u64;
    libc::timespec {
        tv_sec: d.as_secs().min(max_secs) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// A buffer that `select` fills.
pub(crate) struct Events {
    buf: Vec<libc::kevent>,
}

// SAFETY: the only pointer in a kevent is `udata`, which this module uses as an integer token
// and never dereferences; the epoll backend's Events is Send + Sync, and the contract says the
// two backends export the same items.
unsafe impl Send for Events {}
// SAFETY: as for Send: no shared mutable state is reachable through `udata`.
unsafe impl Sync for Events {}

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
            filter: e.filter as i64,
            flags: e.flags as u32,
            fflags: e.fflags as u32,
            token: e.udata as usize,
        })
    }
}

/// One readiness change of one filter of one registration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    filter: i64,
    flags: u32,
    fflags: u32,
    token: usize,
}

impl Event {
    fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The token given at registration.
    pub(crate) fn token(&self) -> usize {
        self.token
    }

    /// Data can be read, or the read side reached EOF (a user event counts as readable).
    pub(crate) fn is_readable(&self) -> bool {
        self.filter == libc::EVFILT_READ as i64 || self.filter == libc::EVFILT_USER as i64
    }

    /// Data can be written.
    pub(crate) fn is_writable(&self) -> bool {
        self.filter == libc::EVFILT_WRITE as i64
    }

    /// The filter reports an error (`EV_ERROR`, or `EV_EOF` with an errno in `fflags`).
    pub(crate) fn is_error(&self) -> bool {
        self.has_flag(libc::EV_ERROR as u32)
            || (self.has_flag(libc::EV_EOF as u32) && self.fflags != 0)
    }

    /// The peer will send no more data (EOF after the buffered data).
    pub(crate) fn is_read_closed(&self) -> bool {
        self.filter == libc::EVFILT_READ as i64 && self.has_flag(libc::EV_EOF as u32)
    }

    /// Writing can no longer succeed.
    pub(crate) fn is_write_closed(&self) -> bool {
        self.filter == libc::EVFILT_WRITE as i64 && self.has_flag(libc::EV_EOF as u32)
    }

    /// Never true on kqueue: each direction reports its EOF in its own event.
    pub(crate) fn is_hup(&self) -> bool {
        false
    }

    /// Never true on kqueue: it has no priority-data filter for sockets (`EVFILT_EXCEPT`
    /// is not registered), so a read stopped at TCP's urgent mark is not flagged.
    pub(crate) fn is_priority(&self) -> bool {
        false
    }

    /// No error and no end of stream (neither `EV_ERROR` nor `EV_EOF`): the event reports
    /// its filter's direction (if any) and nothing else.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        !self.has_flag((libc::EV_ERROR | libc::EV_EOF) as u32)
    }
}

/// Wakes a [`Selector`] blocked in `select` from any OS thread, through `EVFILT_USER`.
#[derive(Debug)]
pub(crate) struct Waker {
    /// A duplicate of the selector's fd: the waker may outlive the `Selector` value (the
    /// registration lives as long as either fd).
    kq: Selector,
    token: usize,
    /// True from the first `wake` until `reset`: further wakes skip the syscall.
    pending: AtomicBool,
}

impl Waker {
    /// Creates a waker whose `wake` makes `selector` report an event with `token`.
    pub(crate) fn new(selector: &Selector, token: usize) -> io::Result<Waker> {
        let kq = selector.try_clone()?;
        let flags = (libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT) as u32;
        let mut change = [kevent(token, libc::EVFILT_USER as i64, flags, token)];
        kq.apply(&mut change, &[])?;
        Ok(Waker {
            kq,
            token,
            pending: AtomicBool::new(false),
        })
    }

    /// Makes the selector's current or next `select` return. Cheap when already woken.
    pub(crate) fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flags = (libc::EV_ADD | libc::EV_RECEIPT) as u32;
        let mut change = [kevent(
            self.token,
            libc::EVFILT_USER as i64,
            flags,
            self.token,
        )];
        change[0].fflags = libc::NOTE_TRIGGER as _;
        let res = self.kq.apply(&mut change, &[]);
        if res.is_err() {
            self.pending.store(false, Ordering::Release);
        }
        res
    }

    /// Re-arms the waker after its event was seen (`EV_CLEAR` already reset the filter).
    pub(crate) fn reset(&self) -> io::Result<()> {
        self.pending.swap(false, Ordering::AcqRel);
        Ok(())
    }
}

/// The temporary poll set (see [`super`]): a level-triggered kqueue mirroring a `poll`
/// array; its fd is readable while any of the array's descriptors is ready for what it asks
/// (a kqueue fd is itself pollable and can be watched by another kqueue).
#[derive(Debug)]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) struct PollSet {
    kq: Selector,
}

#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
impl PollSet {
    /// A set watching every entry of `set` with a non-negative fd: `EVFILT_READ` for
    /// `POLLIN`/`POLLRDNORM`, `EVFILT_WRITE` for `POLLOUT`/`POLLWRNORM`, level-triggered (no
    /// `EV_CLEAR`). `None` if an entry asks for what kqueue cannot mirror exactly
    /// (`POLLPRI`, `POLLRDBAND`, `POLLWRBAND`: a filter that fires when `poll` would not
    /// answer would make the waiter spin), if kqueue refuses a descriptor (some character
    /// devices), or if the kqueue cannot be created. An entry asking for no event is not
    /// watched (kqueue has no error-only filter): its `POLLERR`/`POLLHUP` is seen when
    /// another entry wakes the set or the timeout expires.
    pub(crate) fn new(set: &[libc::pollfd]) -> Option<PollSet> {
        let unmirrored = libc::POLLPRI | libc::POLLRDBAND | libc::POLLWRBAND;
        let live = || set.iter().filter(|p| p.fd >= 0);
        if live().any(|p| p.events & unmirrored != 0) {
            return None;
        }
        let kq = Selector::new().ok()?;
        let flags = (libc::EV_ADD | libc::EV_RECEIPT) as u32;
        let mut changes: Vec<libc::kevent> = Vec::with_capacity(set.len() * 2);
        for p in live() {
            let fd = p.fd as usize;
            for (wanted, filter) in [
                (libc::POLLIN | libc::POLLRDNORM, libc::EVFILT_READ as i64),
                (libc::POLLOUT | libc::POLLWRNORM, libc::EVFILT_WRITE as i64),
            ] {
                // kqueue keeps one filter per (fd, filter): adding a duplicate just updates it.
                if p.events & wanted != 0 {
                    changes.push(kevent(fd, filter, flags, fd));
                }
            }
        }
        if !changes.is_empty() {
            kq.apply(&mut changes, &[]).ok()?;
        }
        Some(PollSet { kq })
    }

    /// Removes the filters that report their descriptor hung up (`EV_EOF`) or in error
    /// (`EV_ERROR`) right now. For a caller whose own zero-timeout check just found nothing
    /// ready (the `select` hook with a write set whose peer hung up): such a condition
    /// persists, so the level-triggered set would otherwise stay readable and wake the
    /// waiter at once, forever. Errors are ignored: at worst the waiter looks again.
    pub(crate) fn drop_hung_up(&self) {
        let mut events = Events::with_capacity(64);
        if self.kq.select(&mut events, Some(Duration::ZERO)).is_err() {
            return;
        }
        let flags = (libc::EV_DELETE | libc::EV_RECEIPT) as u32;
        let mut changes: Vec<libc::kevent> = events
            .buf
            .iter()
            .filter(|ev| (ev.flags as u32) & ((libc::EV_EOF | libc::EV_ERROR) as u32) != 0)
            .map(|ev| {
                kevent(
                    ev.ident as usize,
                    ev.filter as i64,
                    flags,
                    ev.ident as usize,
                )
            })
            .collect();
        if !changes.is_empty() {
            let _ = self.kq.apply(&mut changes, &[libc::ENOENT as i64]);
        }
    }
}

impl AsRawFd for PollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.kq.as_raw_fd()
    }
}
