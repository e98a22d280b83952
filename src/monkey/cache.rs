//! What the socket hooks keep about a descriptor between waits (Linux only): its
//! registration with the hub, whether the caller made it non-blocking, its
//! `SO_RCVTIMEO`/`SO_SNDTIMEO`, whether it is a TCP socket, and whether the last read
//! drained it. See "Cost when patched" in [`crate::monkey`] for why and for the races.
//!
//! * The registration stays in `net::source`'s fd-indexed table until the `close`,
//!   `dup2`, `dup3` or `fclose` hook of the same OS thread ends the descriptor. A socket
//!   wait uses it as it is while the number's [`generation`] is the one recorded with it:
//!   a process-wide count of the hooked calls that closed the number or made a new
//!   descriptor with it (`close`, `dup2`, `dup3`, `fclose` on any OS thread; `socket`,
//!   `socketpair`, `accept`, `accept4`, `dup`, `fcntl(F_DUPFD)`). When the count moved, the
//!   wait first proves the registration current with one `EPOLL_CTL_ADD`
//!   ([`source::hooked_registration`]), which fails with `EEXIST` while the number still
//!   names the registered open file, and succeeds once it names another: then it is
//!   registered afresh by that very call and the cache starts empty. The waits of
//!   `hooks::wait` (pipes, listeners, connecting sockets, poll sets) prove it every time:
//!   their descriptors come from calls that are not counted (`pipe`, `epoll_create1`).
//!   See [`crate::monkey`] for what is not seen.
//! * The flag and the timeouts belong to the open file (shared by its `dup`s), so they are
//!   valid while the registration is. They change through `fcntl(F_SETFL)`,
//!   `ioctl(FIONBIO)` and `setsockopt(SOL_SOCKET, ..)`: the hooks below count those calls,
//!   made on any descriptor by any thread, in one process-wide epoch, and a cache read at
//!   another epoch is read again. Nothing else is hooked or slowed down by this.
//!
//! `fcntl` and `ioctl` are variadic in C. Stable Rust cannot define a variadic function,
//! so the hooks take the one optional argument as a fixed third one: on the x86_64 System
//! V and the aarch64 (AAPCS64, Linux) calling conventions a variadic argument travels in
//! the same register as a named one would, and the original is called through a variadic
//! function pointer with the same register. (Not so on Apple's arm64, where variadic
//! arguments go on the stack: one reason this module is Linux-only; FreeBSD and macOS
//! read the flag and the timeouts at every wait instead.)

use super::{errno, original};
use crate::net::source::{self, HookedRegistration};
use crate::reactor::{Direction, SourceId};
use libc::{c_int, c_ulong, c_void, socklen_t};
use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How many descriptor numbers one chunk of [`NUMBERS`] counts for.
const CHUNK: usize = 4096;

/// Per descriptor number, how many hooked calls closed it or made a new descriptor with
/// it (its *generation*), process-wide: chunks of [`CHUNK`] counters, allocated when a
/// registration of one of their numbers is first kept, never freed. 256 chunks cover the
/// numbers below 2^20 (Linux's default `nr_open`); a kept registration of a higher number
/// is proven current at every use.
static NUMBERS: [AtomicPtr<AtomicU32>; 256] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 256];

/// The counter of `fd` if its chunk exists (no chunk: nobody keeps a registration of a
/// number in it, so nothing needs counting).
#[inline]
fn counter(fd: c_int) -> Option<&'static AtomicU32> {
    let i = usize::try_from(fd).ok()?;
    let chunk = NUMBERS.get(i / CHUNK)?.load(Ordering::Acquire);
    // SAFETY: a non-null chunk is a leaked array of CHUNK counters, never freed.
    (!chunk.is_null()).then(|| unsafe { &*chunk.add(i % CHUNK) })
}

/// The generation of `fd` now (`None`: not counted, too high), creating its chunk first:
/// read it *before* proving a registration current, and keep it with the registration.
/// While it is unchanged no hooked call closed or reused the number, so the registration
/// is still the current open file's.
#[inline]
pub(super) fn generation(fd: c_int) -> Option<u32> {
    let i = usize::try_from(fd).ok()?;
    let cell = NUMBERS.get(i / CHUNK)?;
    let mut chunk = cell.load(Ordering::Acquire);
    if chunk.is_null() {
        chunk = new_chunk(cell);
    }
    // SAFETY: as in `counter`.
    Some(unsafe { &*chunk.add(i % CHUNK) }.load(Ordering::SeqCst))
}

#[cold]
fn new_chunk(cell: &AtomicPtr<AtomicU32>) -> *mut AtomicU32 {
    let chunk: Box<[AtomicU32]> = (0..CHUNK).map(|_| AtomicU32::new(0)).collect();
    let chunk = Box::into_raw(chunk).cast::<AtomicU32>();
    match cell.compare_exchange(
        std::ptr::null_mut(),
        chunk,
        Ordering::SeqCst,
        Ordering::Acquire,
    ) {
        Ok(_) => chunk,
        Err(theirs) => {
            // SAFETY: `chunk` came from `Box::into_raw` of CHUNK counters just above and
            // was never shared.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(chunk, CHUNK)) });
            theirs
        }
    }
}

/// A hooked call is about to close `fd`, or has closed it or made a new descriptor with
/// its number: every kept registration of `fd` (on any OS thread) is proven current again
/// at its next use. A closing call counts twice, before and after: a use that read the
/// generation before the close may prove the old file current meanwhile, and one that
/// reads it after the number was reused must see a change. errno is unchanged.
#[inline]
pub(super) fn renumbered(fd: c_int) {
    if let Some(c) = counter(fd) {
        c.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts the calls that may change a descriptor's `O_NONBLOCK` or socket timeouts.
static SETTINGS_EPOCH: AtomicU64 = AtomicU64::new(1);

/// After a call that may have changed some descriptor's settings: every cache is read
/// again. After the real call, so that a cache read meanwhile (at the old epoch) is void.
#[inline]
fn settings_changed() {
    SETTINGS_EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// The address of the hook called `name`, for [`original`]'s self-lookup check.
pub(super) fn address_of(name: &str) -> usize {
    match name {
        "fcntl" => fcntl as *const () as usize,
        #[cfg(target_env = "gnu")]
        "fcntl64" => fcntl64 as *const () as usize,
        "ioctl" => ioctl as *const () as usize,
        "setsockopt" => setsockopt as *const () as usize,
        "socket" => socket as *const () as usize,
        "socketpair" => socketpair as *const () as usize,
        "dup" => dup as *const () as usize,
        "fclose" => fclose as *const () as usize,
        _ => 0,
    }
}

/// Hook of `fcntl(2)`: the original's call and result; an `F_SETFL` voids every cache, an
/// `F_DUPFD`/`F_DUPFD_CLOEXEC` counts its new descriptor ([`renumbered`]).
///
/// # Safety
/// The contract of libc's `fcntl`: `arg` is what `cmd` takes (an int, a pointer, or
/// nothing).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's contract is fcntl's; `arg` is passed on in the same register.
    let r = unsafe { original::fcntl(fd, cmd, arg) };
    watch_fcntl(cmd, r);
    r
}

/// What the `fcntl` hooks watch: `F_SETFL` voids every cache; `F_DUPFD`,
/// `F_DUPFD_CLOEXEC` made a new descriptor `r`.
#[inline]
fn watch_fcntl(cmd: c_int, r: c_int) {
    match cmd {
        libc::F_SETFL => settings_changed(),
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => renumbered(r),
        _ => {}
    }
}

/// Hook of glibc's `fcntl64` (what `fcntl` names in C built with `_FILE_OFFSET_BITS=64`):
/// as [`fcntl`].
///
/// # Safety
/// The contract of glibc's `fcntl64`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's contract is fcntl64's; `arg` is passed on in the same register.
    let r = unsafe { original::fcntl64(fd, cmd, arg) };
    watch_fcntl(cmd, r);
    r
}

/// Hook of `ioctl(2)`: the original's call and result; a `FIONBIO` (std's
/// `set_nonblocking`) voids every cache.
///
/// # Safety
/// The contract of libc's `ioctl`: `arg` is what `request` takes.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::Ioctl, arg: *mut c_void) -> c_int {
    // SAFETY: the caller's contract is ioctl's; `arg` is passed on in the same register.
    let r = unsafe { original::ioctl(fd, request, arg) };
    if request == libc::FIONBIO {
        settings_changed();
    }
    r
}

/// Hook of `setsockopt(2)`: the original's call and result; any `SOL_SOCKET` option
/// (`SO_RCVTIMEO`, `SO_SNDTIMEO` and their `_NEW` forms among them) voids every cache.
///
/// # Safety
/// The contract of libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's contract is setsockopt's.
    let r = unsafe { original::setsockopt(fd, level, name, value, len) };
    if level == libc::SOL_SOCKET {
        settings_changed();
    }
    r
}

/// Hook of `socket(2)`: the original's call and result; counts the new descriptor
/// ([`renumbered`]).
///
/// # Safety
/// None beyond libc's `socket`: it takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: socket takes no pointers.
    let fd = unsafe { original::socket(domain, ty, protocol) };
    renumbered(fd);
    fd
}

/// Hook of `socketpair(2)`: the original's call and result; counts the new descriptors.
///
/// # Safety
/// The contract of libc's `socketpair`: `sv` is writable for two ints.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: the caller's contract is socketpair's.
    let r = unsafe { original::socketpair(domain, ty, protocol, sv) };
    if r == 0 {
        // SAFETY: on success the call wrote both ints.
        unsafe {
            renumbered(*sv);
            renumbered(*sv.add(1));
        }
    }
    r
}

/// Hook of `dup(2)`: the original's call and result; counts the new descriptor.
///
/// # Safety
/// None beyond libc's `dup`: it takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: dup takes no pointers.
    let new = unsafe { original::dup(fd) };
    renumbered(new);
    new
}

/// Hook of `fclose(3)`: glibc closes the stream's descriptor internally, past the `close`
/// hook, so this does what that hook does around it (wakes this OS thread's waiters on the
/// descriptor, counts its number closed), then the original's call and result.
///
/// # Safety
/// The contract of libc's `fclose`: `stream` is an open stream.
#[no_mangle]
pub unsafe extern "C" fn fclose(stream: *mut libc::FILE) -> c_int {
    let fd = if stream.is_null() {
        -1
    } else {
        let saved = errno();
        // SAFETY: `stream` is an open stream (the caller's contract).
        let fd = unsafe { libc::fileno(stream) };
        super::set_errno(saved);
        fd
    };
    if fd >= 0 {
        super::fds::closing(fd);
    }
    // SAFETY: the caller's contract is fclose's.
    let r = unsafe { original::fclose(stream) };
    renumbered(fd);
    r
}

/// How long a socket wait may trust a registration before the sweep proves it again.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How many kept registrations one sweep proves at most (one `EPOLL_CTL_ADD` each).
const SWEEP_BUDGET: usize = 1024;

thread_local! {
    /// Socket waits of this thread's green threads parked now, and whether the sweep
    /// green thread runs.
    static PARKED: Cell<(u32, bool)> = const { Cell::new((0, false)) };
}

/// A socket wait on the hub, counted while it lasts (see [`Parked::enter`]).
pub(super) struct Parked;

impl Parked {
    /// Counts a socket wait about to park, and starts the sweep of this thread if it does
    /// not run: every [`SWEEP_EVERY`], while socket waits are parked, it proves up to
    /// [`SWEEP_BUDGET`] kept registrations current, going round the table
    /// ([`source::prove_kept`]). The safety net for a number closed and reused past every
    /// counted call: such a wait trusts a registration of the closed file, which reports
    /// nothing; the sweep registers the new file under the same id, so the wait ends at
    /// most a few sweeps late, not never.
    #[inline]
    pub(super) fn enter() -> Parked {
        let (n, sweeping) = PARKED.get();
        PARKED.set((n + 1, true));
        if !sweeping {
            start_sweep();
        }
        Parked
    }
}

impl Drop for Parked {
    #[inline]
    fn drop(&mut self) {
        let (n, sweeping) = PARKED.get();
        PARKED.set((n - 1, sweeping));
    }
}

#[cold]
fn start_sweep() {
    let spawned = crate::Builder::new()
        .name("verdant-monkey-sweep")
        .spawn(sweep);
    match spawned {
        // Detached: it ends by itself once no socket wait is parked.
        Ok(handle) => drop(handle),
        // No stack: the next wait tries again.
        Err(_) => PARKED.set((PARKED.get().0, false)),
    }
}

/// The sweep green thread (see [`Parked::enter`]).
fn sweep() {
    /// Lets the next wait start a sweep again, however this one ends (a kill unwinds).
    struct Ended;
    impl Drop for Ended {
        fn drop(&mut self) {
            let _ = PARKED.try_with(|p| p.set((p.get().0, false)));
        }
    }
    let _ended = Ended;
    let mut from = 0;
    loop {
        if crate::time::sleep(SWEEP_EVERY).is_err() || PARKED.get().0 == 0 {
            return;
        }
        from = source::prove_kept(from, SWEEP_BUDGET);
    }
}

/// What a hooked socket wait needs to know, from the cache where it is current.
pub(super) struct Settings {
    /// The registration to wait on (a temporary one is held here while it is used).
    pub(super) id: SourceId,
    pub(super) _temporary: Option<std::rc::Rc<source::Registration>>,
    /// The caller made the descriptor non-blocking: `EAGAIN` is the answer.
    pub(super) nonblocking: bool,
    /// `SO_RCVTIMEO` or `SO_SNDTIMEO`, for the direction asked.
    pub(super) timeout: Option<Duration>,
    /// The last read drained the descriptor (taken: the flag is now clear).
    pub(super) drained: bool,
}

/// The registration of `fd` and the caller's settings for a wait in `dir`: from the cache
/// of the kept registration (checked current first), read with `fcntl`/`getsockopt` where
/// the cache does not have them.
pub(super) fn settings(fd: c_int, dir: Direction) -> Result<Settings, c_int> {
    // The drained flag is taken (cleared in the table) by the same lookup.
    let reg = source::hooked_registration(fd, dir == Direction::Read, generation(fd))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let (id, mut cache) = match reg {
        HookedRegistration::Kept(id, cache) => (id, cache),
        HookedRegistration::Shared(id, temporary) => {
            return Ok(Settings {
                id,
                _temporary: temporary,
                nonblocking: super::hooks::is_nonblocking(fd)?,
                timeout: super::hooks::socket_timeout(fd, dir),
                drained: false,
            })
        }
    };
    let epoch = SETTINGS_EPOCH.load(Ordering::Acquire);
    let drained = dir == Direction::Read && cache.drained;
    if let (true, Some(nonblocking), Some(nanos)) = (
        cache.epoch == epoch,
        cache.nonblocking,
        cache.timeouts[dir as usize],
    ) {
        // The common case: everything known, nothing to write back.
        return Ok(Settings {
            id,
            _temporary: None,
            nonblocking,
            timeout: timeout_of(nanos),
            drained,
        });
    }
    if cache.epoch != epoch {
        cache.epoch = epoch;
        cache.nonblocking = None;
        cache.timeouts = [None; 2];
    }
    let nonblocking = match cache.nonblocking {
        Some(b) => b,
        None => *cache.nonblocking.insert(super::hooks::is_nonblocking(fd)?),
    };
    let nanos = *cache.timeouts[dir as usize].get_or_insert_with(|| {
        super::hooks::socket_timeout(fd, dir).map_or(0, |t| {
            // At least 1 ns: 0 stands for "none".
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        })
    });
    // Taken in the table already; the write-back must not set it again.
    cache.drained = cache.drained && !drained;
    source::store_cache(fd, id, cache);
    Ok(Settings {
        id,
        _temporary: None,
        nonblocking,
        timeout: timeout_of(nanos),
        drained,
    })
}

/// What [`drained_read`] found.
pub(super) enum DrainedRead {
    /// The drained flag is clear (or void: the number names another file now): the read
    /// is tried first.
    Clear,
    /// The common case: wait for the next edge with these settings, flag taken.
    Wait(Settings),
    /// The flag is set, but the cached settings or the registration are not current, or
    /// the settings say non-blocking: the general way ([`settings`]) decides.
    General,
}

/// The common case of a hooked stream read of `fd` after one that drained it, in one
/// lookup of the fd table: the kept registration's drained flag is set (and is taken),
/// the cached settings are current and say blocking, and the registration is current
/// (the number's [`generation`] is the one recorded). Then a wait for the next edge is the answer: what the flag followed by
/// [`settings`] would find, at a fraction of the cost.
#[inline]
pub(super) fn drained_read(fd: c_int) -> DrainedRead {
    let epoch = SETTINGS_EPOCH.load(Ordering::Acquire);
    let generation = generation(fd);
    let found = source::with_kept(fd, |id, cache| {
        if !cache.drained {
            return None;
        }
        let read = Direction::Read as usize;
        let current = generation.is_some() && cache.generation == generation;
        Some(match (current, cache.epoch == epoch, cache.nonblocking) {
            (true, true, Some(false)) => cache.timeouts[read].map(|nanos| {
                cache.drained = false;
                (id, nanos)
            }),
            _ => None,
        })
    })
    .flatten();
    match found {
        None => DrainedRead::Clear,
        Some(None) => DrainedRead::General,
        Some(Some((id, nanos))) => DrainedRead::Wait(Settings {
            id,
            _temporary: None,
            nonblocking: false,
            timeout: timeout_of(nanos),
            drained: true,
        }),
    }
}

/// A cached timeout: nanoseconds, 0 for none.
fn timeout_of(nanos: u64) -> Option<Duration> {
    (nanos != 0).then(|| Duration::from_nanos(nanos))
}

/// After a stream read of `fd` that returned fewer bytes than asked for, but some: if
/// `fd` is a TCP socket with a kept registration, its receive buffer is empty now, so the
/// next read waits for the kernel's next edge at once instead of first failing with
/// `EAGAIN` (the reactor's drained shortcut, as `verdant::net`'s `TcpStream` reads do).
/// Not for other sockets: a Unix stream read can stop short at a message carrying
/// credentials or descriptors with more data buffered.
pub(super) fn read_drained(fd: c_int) {
    // One lookup; `is_tcp` and `fd_drained` do not reach the table.
    source::with_kept(fd, |id, cache| {
        if !cache.drained && *cache.tcp.get_or_insert_with(|| is_tcp(fd)) {
            crate::hub::fd_drained(id, Direction::Read);
            cache.drained = true;
        }
    });
}

/// `getsockopt(SO_PROTOCOL)` says TCP. errno is unchanged.
fn is_tcp(fd: c_int) -> bool {
    let saved = errno();
    let mut proto: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `proto` and `len` are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut c_int).cast(),
            &mut len,
        )
    };
    super::set_errno(saved);
    r == 0 && proto == libc::IPPROTO_TCP
}
