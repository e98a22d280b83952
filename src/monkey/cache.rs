//! What the socket hooks keep about a descriptor between waits (Linux only): its
//! registration with the hub, whether the caller made it non-blocking, its
//! `SO_RCVTIMEO`/`SO_SNDTIMEO`, whether it is a TCP socket, and whether the last read
//! drained it. See "Cost when patched" in [`crate::monkey`] for why and for the races.
//!
//! * The registration stays in `net::source`'s fd-indexed table until the `close`,
//!   `dup2` or `dup3` hook ends the descriptor. Every use first proves it current with one
//!   `EPOLL_CTL_ADD` ([`source::hooked_registration`]), which fails with `EEXIST` while
//!   the number still names the registered open file, and succeeds once it names another
//!   (closed and reused behind the hooks: a raw system call, another OS thread): then it
//!   is registered afresh by that very call and the cache starts empty.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        _ => 0,
    }
}

/// Hook of `fcntl(2)`: the original's call and result; an `F_SETFL` voids every cache.
///
/// # Safety
/// The contract of libc's `fcntl`: `arg` is what `cmd` takes (an int, a pointer, or
/// nothing).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's contract is fcntl's; `arg` is passed on in the same register.
    let r = unsafe { original::fcntl(fd, cmd, arg) };
    if cmd == libc::F_SETFL {
        settings_changed();
    }
    r
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
    if cmd == libc::F_SETFL {
        settings_changed();
    }
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
/// of the kept registration (proven current first), read with `fcntl`/`getsockopt` where
/// the cache does not have them.
pub(super) fn settings(fd: c_int, dir: Direction) -> Result<Settings, c_int> {
    // The drained flag is taken (cleared in the table) by the same lookup.
    let reg = source::hooked_registration(fd, dir == Direction::Read)
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
    /// The flag is set, but the cached settings are not current or say non-blocking: the
    /// general way ([`settings`]) decides.
    General,
}

/// The common case of a hooked stream read of `fd` after one that drained it, in one
/// lookup of the fd table: the kept registration's drained flag is set (and is taken),
/// the cached settings are current and say blocking, and the registration is proven
/// current. Then a wait for the next edge is the answer: what the flag followed by
/// [`settings`] would find, at a fraction of the cost.
#[inline]
pub(super) fn drained_read(fd: c_int) -> DrainedRead {
    let epoch = SETTINGS_EPOCH.load(Ordering::Acquire);
    let found = source::with_kept(fd, |id, cache| {
        if !cache.drained {
            return None;
        }
        let read = Direction::Read as usize;
        Some(match (cache.epoch == epoch, cache.nonblocking) {
            (true, Some(false)) => cache.timeouts[read].map(|nanos| {
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
        // Not current: the cache (with the flag) is void, or the entry ends at the next
        // use; as with a clear flag, the read is tried first.
        Some(Some((id, nanos))) => match source::kept_is_current(fd, id) {
            true => DrainedRead::Wait(Settings {
                id,
                _temporary: None,
                nonblocking: false,
                timeout: timeout_of(nanos),
                drained: true,
            }),
            false => DrainedRead::Clear,
        },
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
