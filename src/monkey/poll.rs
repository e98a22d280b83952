//! Hooks of the waits on several descriptors besides `poll`: `ppoll` (Linux, FreeBSD),
//! `select`, `pselect`, and on Linux `epoll_wait` and `epoll_pwait`.
//!
//! All of them follow the `poll` hook's pattern (see [`super::hooks::poll`]): ask the
//! original once with a zero timeout; if nothing is ready, wait on the hub for a kernel
//! set to become readable (an epoll or kqueue fd is itself pollable), then ask the original
//! again with a zero timeout, until something is ready or the deadline passes. The answer
//! the caller gets is always the original's own (ready counts, `fd_set` bits, `revents`,
//! epoll events, errno), so it is exactly what blocking libc returns.
//!
//! * `ppoll`/`poll`: the descriptors go into a temporary [`PollSet`] (epoll on Linux,
//!   kqueue on macOS and FreeBSD).
//! * `select`/`pselect`: the descriptors of the three `fd_set`s below `nfds` go into a
//!   temporary [`PollSet`] (read set: `POLLIN`, write set: `POLLOUT`, except set:
//!   `POLLPRI`); the sets are saved first and restored before each zero-timeout retry,
//!   because `select` overwrites them. kqueue cannot mirror `POLLPRI`, so on macOS and
//!   FreeBSD a `select` with a descriptor in its except set blocks as unpatched. After a
//!   wake-up with nothing ready, [`PollSet::drop_hung_up`] removes the descriptors whose
//!   hang-up or error `select` does not count, so that they do not wake the set forever.
//! * `epoll_wait`/`epoll_pwait` (Linux): the caller's own epoll fd is what the hub waits
//!   on. The reactor parks one green thread per descriptor and direction, so a second green
//!   thread of the same hub in `epoll_wait` on the same epoll fd looks again every
//!   millisecond until the first is done (as the other hooks do for a shared descriptor).
//!
//! A signal mask (`ppoll`, `pselect`, `epoll_pwait` with a non-null `sigmask`) cannot be
//! applied to one green thread: it is a property of the OS thread, shared by every green
//! thread of the hub. Such calls pass straight through (blocking the OS thread, with the
//! mask applied atomically as the caller asked); with a null `sigmask` they wait on the hub.

#[cfg(target_os = "linux")]
use super::hooks::Errno;
use super::hooks::{run, wait, Interrupted};
use super::{cooperative, errno, original, set_errno, SOCKETS};
use crate::reactor::Direction;
use crate::sys::FdSetWord;
use crate::sys::PollSet;
#[cfg(target_os = "linux")]
use libc::epoll_event;
#[cfg(not(target_os = "macos"))]
use libc::nfds_t;
use libc::{c_int, fd_set, pollfd, sigset_t, timespec, timeval};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The address of the hook called `name`, for [`original`]'s self-lookup check (not on
/// macOS, where the originals are not looked up).
#[cfg(not(target_os = "macos"))]
pub(super) fn address_of(name: &str) -> usize {
    match name {
        "ppoll" => ppoll as *const () as usize,
        "select" => select as *const () as usize,
        "pselect" => pselect as *const () as usize,
        #[cfg(target_os = "linux")]
        "epoll_wait" => epoll_wait as *const () as usize,
        #[cfg(target_os = "linux")]
        "epoll_pwait" => epoll_pwait as *const () as usize,
        _ => 0,
    }
}

/// The deadline of a wait of `timeout` that started at `start` (`None`: no deadline).
fn deadline_of(start: Instant, timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| start.checked_add(t))
}

/// A valid `timespec` as a duration: `None` for a negative or out-of-range one (which the
/// original rejects with `EINVAL`). The pointer must be non-null and readable.
fn timespec_duration(ts: *const timespec) -> Option<Duration> {
    // SAFETY: the caller passes a readable, non-null timespec.
    let ts = unsafe { *ts };
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Hook of `ppoll(2)`: as the `poll` hook, with a `timespec` timeout (null: none). The
/// timeout is not modified (glibc's wrapper hides the system call's update of it). With a
/// non-null `sigmask`, or a zero or invalid timeout, it passes straight through.
///
/// # Safety
/// The contract of libc's `ppoll`: `fds` is valid for `nfds` entries, `timeout` and
/// `sigmask` are null or readable.
#[cfg(not(target_os = "macos"))]
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let pass = || {
        // SAFETY: the caller's contract is ppoll's.
        unsafe { original::ppoll(fds, nfds, timeout, sigmask) }
    };
    if !sigmask.is_null() || nfds == 0 || !cooperative(&SOCKETS) {
        return pass();
    }
    let limit = if timeout.is_null() {
        None
    } else {
        match timespec_duration(timeout) {
            Some(d) if !d.is_zero() => Some(d),
            _ => return pass(),
        }
    };
    let start = Instant::now();
    // SAFETY: the caller's contract is ppoll's: `fds` is valid for `nfds` entries.
    let now = unsafe { original::poll(fds, nfds, 0) };
    if now != 0 {
        return now;
    }
    // SAFETY: `fds` is valid for `nfds` entries and nothing else aliases it during the call.
    let set = unsafe { std::slice::from_raw_parts(fds, nfds as usize) };
    let Some(poll_set) = PollSet::new(set) else {
        return pass();
    };
    let deadline = deadline_of(start, limit);
    run(|| loop {
        let last = match wait(poll_set.as_raw_fd(), Direction::Read, deadline) {
            Ok(()) => false,
            Err(Interrupted::Deadline) => true,
            Err(Interrupted::Errno(e)) => return Err(e),
        };
        // SAFETY: as above.
        let n = unsafe { original::poll(fds, nfds, 0) };
        if n < 0 {
            return Err(errno());
        }
        if n > 0 || last {
            return Ok(n);
        }
    })
}

/// The three `fd_set`s of a `select` call, as far as `nfds` reaches, saved so they can
/// be restored before each retry (`select` overwrites them with its answer).
struct FdSets {
    nfds: usize,
    ptrs: [*mut fd_set; 3],
    saved: [Vec<FdSetWord>; 3],
}

/// Bits per word of an `fd_set` (the kernel reads and writes whole words:
/// [`FdSetWord`], `unsigned long` on Linux and FreeBSD, `int` on macOS).
const WORD_BITS: usize = FdSetWord::BITS as usize;

impl FdSets {
    /// # Safety
    /// Each non-null pointer is valid for reads and writes of `nfds` bits, rounded up to
    /// whole [`FdSetWord`]s (true of any `fd_set` when `nfds <= FD_SETSIZE`).
    unsafe fn save(nfds: usize, ptrs: [*mut fd_set; 3]) -> FdSets {
        let words = nfds.div_ceil(WORD_BITS);
        let saved = ptrs.map(|p| {
            if p.is_null() {
                Vec::new()
            } else {
                // SAFETY: the function's contract: `words` words are readable at `p`.
                unsafe { std::slice::from_raw_parts(p.cast::<FdSetWord>(), words) }.to_vec()
            }
        });
        FdSets { nfds, ptrs, saved }
    }

    /// Writes the saved sets back.
    fn restore(&self) {
        for (p, words) in self.ptrs.iter().zip(&self.saved) {
            if !p.is_null() {
                // SAFETY: `save`'s contract: the same words are writable at `p`.
                unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), p.cast(), words.len()) };
            }
        }
    }

    /// The saved sets as a `poll` array (one entry per set an fd is in; [`PollSet`] merges
    /// them).
    fn poll_array(&self) -> Vec<pollfd> {
        let events = [libc::POLLIN, libc::POLLOUT, libc::POLLPRI];
        let mut out = Vec::new();
        for (words, events) in self.saved.iter().zip(events) {
            for (w, &word) in words.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let fd = w * WORD_BITS + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if fd < self.nfds {
                        out.push(pollfd {
                            fd: fd as c_int,
                            events,
                            revents: 0,
                        });
                    }
                }
            }
        }
        out
    }
}

/// `original::select` with a zero timeout on `sets`.
fn select_now(sets: &FdSets) -> c_int {
    let mut zero = timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let [r, w, e] = sets.ptrs;
    // SAFETY: `FdSets::save`'s contract covers the sets; `zero` is a live timeval.
    unsafe { original::select(sets.nfds as c_int, r, w, e, &mut zero) }
}

/// The cooperative body of `select`/`pselect`, after the caller checked the arguments:
/// `Err(())` if the poll set could not be built (the caller then passes through).
/// `remaining` is told how long the caller's timeout has left when the call returns.
fn select_on_hub(
    sets: &FdSets,
    limit: Option<Duration>,
    remaining: impl Fn(Duration),
) -> Result<c_int, ()> {
    let start = Instant::now();
    let deadline = deadline_of(start, limit);
    let report = |n: c_int| {
        let errno = errno();
        if let Some(d) = deadline {
            remaining(d.saturating_duration_since(Instant::now()));
        }
        set_errno(errno);
        n
    };
    let n = select_now(sets);
    if n != 0 {
        return Ok(report(n));
    }
    sets.restore();
    let Some(poll_set) = PollSet::new(&sets.poll_array()) else {
        return Err(());
    };
    Ok(run(|| loop {
        let last = match wait(poll_set.as_raw_fd(), Direction::Read, deadline) {
            Ok(()) => false,
            Err(Interrupted::Deadline) => true,
            Err(Interrupted::Errno(e)) => {
                report(0);
                return Err(e);
            }
        };
        let n = select_now(sets);
        if n != 0 || last {
            report(n);
            return if n < 0 { Err(errno()) } else { Ok(n) };
        }
        sets.restore();
        // Descriptors hung up or in error although `select` just reported nothing ready are
        // only in sets for which those conditions do not count (an except set, or a write
        // set with a hang-up but no room); the conditions persist, so the level-triggered
        // set would otherwise wake the green thread at once, forever. As with the real
        // `select`, such a descriptor then waits for the timeout.
        poll_set.drop_hung_up();
    }))
}

/// Hook of `select(2)`: waits on the hub with the `fd_set` semantics of the original,
/// whose answer the caller gets. As Linux does, a non-null `timeout` is updated to the
/// time not slept. Passes straight through for a zero or negative timeout, and for `nfds`
/// outside `0..=FD_SETSIZE` (the original's `EINVAL`, or sets larger than `fd_set`).
///
/// # Safety
/// The contract of libc's `select`: each non-null set is a valid `fd_set`, `timeout` is
/// null or a valid `timeval`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    readfds: *mut fd_set,
    writefds: *mut fd_set,
    exceptfds: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    let pass = || {
        // SAFETY: the caller's contract is select's.
        unsafe { original::select(nfds, readfds, writefds, exceptfds, timeout) }
    };
    if !cooperative(&SOCKETS) || !(0..=libc::FD_SETSIZE as c_int).contains(&nfds) {
        return pass();
    }
    let limit = if timeout.is_null() {
        None
    } else {
        // SAFETY: the caller passes a valid timeval.
        let tv = unsafe { *timeout };
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            return pass();
        }
        // Linux folds whole seconds of `tv_usec` into `tv_sec` rather than refusing them.
        let d = Duration::from_secs(tv.tv_sec as u64)
            .saturating_add(Duration::from_micros(tv.tv_usec as u64));
        if d.is_zero() {
            return pass();
        }
        Some(d)
    };
    // SAFETY: `nfds <= FD_SETSIZE`, and each non-null set is a whole `fd_set`.
    let sets = unsafe { FdSets::save(nfds as usize, [readfds, writefds, exceptfds]) };
    let remaining = |left: Duration| {
        // SAFETY: `remaining` is only called with a deadline, i.e. a non-null timeout.
        unsafe {
            *timeout = timeval {
                tv_sec: left.as_secs() as _,
                tv_usec: left.subsec_micros() as _,
            }
        }
    };
    select_on_hub(&sets, limit, remaining).unwrap_or_else(|()| pass())
}
crate::sys::interpose!(select);

/// Hook of `pselect(2)`: as the `select` hook with a `timespec` timeout, which is not
/// modified. With a non-null `sigmask`, or a zero or invalid timeout, it passes straight
/// through.
///
/// # Safety
/// The contract of libc's `pselect`.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    readfds: *mut fd_set,
    writefds: *mut fd_set,
    exceptfds: *mut fd_set,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let pass = || {
        // SAFETY: the caller's contract is pselect's.
        unsafe { original::pselect(nfds, readfds, writefds, exceptfds, timeout, sigmask) }
    };
    if !sigmask.is_null()
        || !cooperative(&SOCKETS)
        || !(0..=libc::FD_SETSIZE as c_int).contains(&nfds)
    {
        return pass();
    }
    let limit = if timeout.is_null() {
        None
    } else {
        match timespec_duration(timeout) {
            Some(d) if !d.is_zero() => Some(d),
            _ => return pass(),
        }
    };
    // SAFETY: `nfds <= FD_SETSIZE`, and each non-null set is a whole `fd_set`.
    let sets = unsafe { FdSets::save(nfds as usize, [readfds, writefds, exceptfds]) };
    select_on_hub(&sets, limit, |_| {}).unwrap_or_else(|()| pass())
}
crate::sys::interpose!(pselect);

/// The cooperative body of `epoll_wait`/`epoll_pwait` (Linux only, as they are): waits on the hub for `epfd` to
/// become readable, then takes the events with the original and a zero timeout.
///
/// # Safety
/// `events` is valid for `maxevents` entries.
#[cfg(target_os = "linux")]
unsafe fn epoll_on_hub(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    let start = Instant::now();
    let take = || -> Result<c_int, Errno> {
        // SAFETY: the function's contract: `events` holds `maxevents` entries.
        match unsafe { original::epoll_wait(epfd, events, maxevents, 0) } {
            -1 => Err(errno()),
            n => Ok(n),
        }
    };
    // SAFETY: the function's contract: `events` holds `maxevents` entries.
    let n = unsafe { original::epoll_wait(epfd, events, maxevents, 0) };
    if n != 0 {
        return n;
    }
    let limit = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
    let deadline = deadline_of(start, limit);
    run(|| loop {
        let last = match wait(epfd, Direction::Read, deadline) {
            Ok(()) => false,
            Err(Interrupted::Deadline) => true,
            Err(Interrupted::Errno(e)) => return Err(e),
        };
        let n = take()?;
        if n > 0 || last {
            return Ok(n);
        }
    })
}

/// Hook of `epoll_wait(2)`: a library's own epoll fd is itself pollable, so the green
/// thread waits on the hub for it to become readable, then the original takes the events
/// with a zero timeout. A zero timeout, or `maxevents <= 0` (`EINVAL`), passes straight
/// through.
///
/// # Safety
/// The contract of libc's `epoll_wait`: `events` is valid for `maxevents` entries.
#[cfg(target_os = "linux")]
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    if timeout == 0 || maxevents <= 0 || !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is epoll_wait's.
        return unsafe { original::epoll_wait(epfd, events, maxevents, timeout) };
    }
    // SAFETY: the caller's contract is epoll_wait's.
    unsafe { epoll_on_hub(epfd, events, maxevents, timeout) }
}

/// Hook of `epoll_pwait(2)`: as the `epoll_wait` hook when `sigmask` is null; with a
/// signal mask it passes straight through.
///
/// # Safety
/// The contract of libc's `epoll_pwait`.
#[cfg(target_os = "linux")]
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    if !sigmask.is_null() || timeout == 0 || maxevents <= 0 || !cooperative(&SOCKETS) {
        // SAFETY: the caller's contract is epoll_pwait's.
        return unsafe { original::epoll_pwait(epfd, events, maxevents, timeout, sigmask) };
    }
    // SAFETY: the caller's contract is epoll_pwait's (with a null mask, epoll_wait's).
    unsafe { epoll_on_hub(epfd, events, maxevents, timeout) }
}
