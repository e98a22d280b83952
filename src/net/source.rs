//! One registered socket, shared by a verdant socket and its `try_clone`s.
//!
//! ```text
//!   TcpStream ──┐                 Inner (one per fd, per hub thread)
//!   try_clone ──┼── Rc<Inner> ──▶ ┌───────────────────────────────────────────┐
//!   try_clone ──┘                 │ reg: Registration { SourceId, fd }  (1st) │  dropped first:
//!                                 │ io:  std socket (owns the fd)       (2nd) │  deregister, then close
//!                                 │ read_timeout, write_timeout (Cell)        │
//!                                 └───────────────────────────────────────────┘
//! ```
//!
//! The reactor parks at most one green thread per fd and direction, and an fd can be
//! registered once per epoll/kqueue set, so clones cannot each register a `dup` of their
//! own without racing on one kernel object: they share the one registration instead. The
//! fd is deregistered (waking any `wait_readable` user of it with an error) and closed
//! when the last clone is dropped.
//!
//! Every operation follows the reactor's protocol: try it first; on `WouldBlock` wait in
//! the hub (which clears the cached readiness) and retry. When the cached readiness already
//! says "not ready" (after a `WouldBlock`), or a TCP read drained the receive buffer (see
//! [`Source::read_stream`]), the attempt is skipped: it could only fail.

use crate::hub::{self, FdWait};
use crate::reactor::{self, Direction, SourceId};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

thread_local! {
    /// The fds `net` registered with this thread's hub, so that [`super::wait_readable`]
    /// on one of them shares its registration instead of failing with `EEXIST`.
    static REGISTERED: RefCell<FdMap> = const { RefCell::new(FdMap(Vec::new())) };
}

/// fd → [`Shared`], a `Vec` indexed by the descriptor number. Descriptors are small
/// integers the kernel hands out lowest-first, so the table stays as long as the highest fd
/// registered on this thread; a lookup is a bounds check and an index, where a `HashMap`
/// with std's SipHash cost a fifth of the instructions of a monkey-patched server's
/// request (every hooked wait looks the fd up, inserts it and removes it).
struct FdMap(Vec<Option<Shared>>);

impl FdMap {
    fn get(&self, fd: RawFd) -> Option<&Shared> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.0.get(i)?.as_ref())
    }

    #[cfg(feature = "monkey")]
    fn contains_key(&self, fd: RawFd) -> bool {
        self.get(fd).is_some()
    }

    #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Shared> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.0.get_mut(i)?.as_mut())
    }

    fn insert(&mut self, fd: RawFd, shared: Shared) {
        // Only registered fds are inserted, and the reactor refuses negative ones.
        let Ok(i) = usize::try_from(fd) else { return };
        if i >= self.0.len() {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(shared);
    }

    fn remove(&mut self, fd: RawFd) -> Option<Shared> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.0.get_mut(i)?.take())
    }
}

/// An entry of [`REGISTERED`].
struct Shared {
    id: SourceId,
    owner: Owner,
}

/// Who deregisters an entry of [`REGISTERED`].
enum Owner {
    /// A socket: it deregisters when its last clone drops.
    Socket,
    /// Nobody: a temporary registration of `wait_readable`/`wait_writable` (or of a hooked
    /// wait where registrations are not kept), alive while one of its waiters holds it.
    Temp(Weak<Registration>),
    /// The monkey shim's hooked waits: kept across waits, with what the shim cached about
    /// the fd, until the fd is closed through the `close`/`dup2`/`dup3` hooks ([`forget`]).
    /// Every use first checks that it is current ([`hooked_registration`]).
    #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
    Kept(FdCache),
}

/// What the monkey shim caches about a descriptor with a kept registration (see
/// `crate::monkey`, "Cost when patched"). Void, and reset to the default, when the fd
/// number turns out to name another file.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FdCache {
    /// The shim's settings epoch when `nonblocking` and `timeouts` were read.
    pub(crate) epoch: u64,
    /// Whether the caller made the fd non-blocking (`None`: not read since `epoch`).
    pub(crate) nonblocking: Option<bool>,
    /// `SO_RCVTIMEO`, `SO_SNDTIMEO` in nanoseconds, 0 for none (`None`: not read since
    /// `epoch`). Small: the table holds one per descriptor number.
    pub(crate) timeouts: [Option<u64>; 2],
    /// Whether the fd is a TCP socket (`None`: not asked yet). Never changes for a file.
    pub(crate) tcp: Option<bool>,
    /// The last hooked read drained the receive buffer (the drained shortcut).
    pub(crate) drained: bool,
    /// The shim's count of hooked calls that closed or made a descriptor with this number
    /// (`crate::monkey`'s `generation`), read before the registration was last proven
    /// current (`None`: not tracked). While it is unchanged the registration is current
    /// without a proof.
    pub(crate) generation: Option<u32>,
}

#[cfg(test)]
thread_local! {
    /// How many times this thread waited on an fd through `net` (tests check that a
    /// blocked writer waits instead of spinning).
    pub(crate) static FD_WAITS: Cell<u64> = const { Cell::new(0) };
}

/// How to wait on `fd`: the registration of a socket of this thread (the `Option` is
/// then `None`: the socket owns it), else a temporary one shared with other green threads
/// waiting on `fd` (deregistered when the last of them drops it).
pub(crate) fn registration_for(fd: RawFd) -> io::Result<(SourceId, Option<Rc<Registration>>)> {
    let found = REGISTERED.with(|m| {
        m.borrow().get(fd).map(|s| match &s.owner {
            Owner::Socket => Found::Socket(s.id),
            Owner::Temp(weak) => Found::Temp(s.id, weak.clone()),
            #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
            Owner::Kept(_) => Found::Kept,
        })
    });
    match found {
        Some(Found::Socket(id)) => return Ok((id, None)),
        Some(Found::Temp(id, weak)) => {
            if let Some(reg) = weak.upgrade() {
                return Ok((id, Some(reg)));
            }
        }
        #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
        Some(Found::Kept) => {
            if let HookedRegistration::Kept(id, _) = hooked_registration(fd, false, None)? {
                return Ok((id, None));
            }
        }
        None => {}
    }
    temporary_registration(fd)
}

/// What [`registration_for`] found in [`REGISTERED`].
enum Found {
    Socket(SourceId),
    Temp(SourceId, Weak<Registration>),
    #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
    Kept,
}

/// A new temporary registration of `fd`, entered in [`REGISTERED`].
fn temporary_registration(fd: RawFd) -> io::Result<(SourceId, Option<Rc<Registration>>)> {
    let reg = Rc::new(Registration::new(fd)?);
    REGISTERED.with(|m| {
        m.borrow_mut().insert(
            fd,
            Shared {
                id: reg.id,
                owner: Owner::Temp(Rc::downgrade(&reg)),
            },
        )
    });
    Ok((reg.id, Some(reg)))
}

/// A monkey hook's registration of `fd`, from [`hooked_registration`].
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) enum HookedRegistration {
    /// Kept across waits, current, with the shim's cache (write it back with
    /// [`store_cache`]).
    Kept(SourceId, FdCache),
    /// A socket's registration, or a temporary one (held by the `Option` while it is
    /// used): nothing is cached.
    Shared(SourceId, Option<Rc<Registration>>),
}

/// How a monkey hook waits on `fd`: its kept registration, or a new kept registration (one
/// `EPOLL_CTL_ADD`). A `verdant::net` socket's own registration, or a `wait_readable`'s
/// temporary one, is shared instead.
///
/// `generation` is the shim's count of hooked closes and creations of the number, read
/// before this call (`None`: not tracked). A kept registration whose cache recorded the
/// same count is current as it is. Otherwise it is proven current with one
/// `EPOLL_CTL_ADD` that fails with `EEXIST` (and registered afresh by it, with an empty
/// cache, if the number was reused behind the hooks' back), and the count is recorded.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn hooked_registration(
    fd: RawFd,
    take_drained: bool,
    generation: Option<u32>,
) -> io::Result<HookedRegistration> {
    let found = REGISTERED.with(|m| {
        m.borrow_mut().get_mut(fd).map(|s| match &mut s.owner {
            Owner::Socket => Ok(HookedRegistration::Shared(s.id, None)),
            Owner::Temp(weak) => match weak.upgrade() {
                Some(reg) => Ok(HookedRegistration::Shared(s.id, Some(reg))),
                None => Err(None),
            },
            Owner::Kept(cache) => {
                let found = *cache;
                if take_drained {
                    cache.drained = false;
                }
                Err(Some((s.id, found)))
            }
        })
    });
    match found {
        Some(Ok(shared)) => return Ok(shared),
        Some(Err(Some((id, cache)))) if generation.is_some() && cache.generation == generation => {
            return Ok(HookedRegistration::Kept(id, cache));
        }
        Some(Err(Some((id, cache)))) => match hub::refresh_fd(id, fd) {
            Ok(false) => {
                // Only the count: the drained flag may have been taken above.
                with_kept(fd, |kept, c| {
                    if kept == id {
                        c.generation = generation;
                    }
                });
                return Ok(HookedRegistration::Kept(
                    id,
                    FdCache {
                        generation,
                        ..cache
                    },
                ));
            }
            Ok(true) => {
                let fresh = FdCache {
                    generation,
                    ..FdCache::default()
                };
                store_cache(fd, id, fresh);
                return Ok(HookedRegistration::Kept(id, fresh));
            }
            // Not open (EBADF), or no longer this fd's registration (`NotConnected`: the
            // id may name another fd's now, so it is not deregistered): start afresh below
            // (registering a closed fd fails with its error).
            Err(e) => drop_stale(fd, id, &e),
        },
        Some(Err(None)) | None => {}
    }
    let id = hub::register_fd(fd)?;
    let fresh = FdCache {
        generation,
        ..FdCache::default()
    };
    let owner = Owner::Kept(fresh);
    REGISTERED.with(|m| m.borrow_mut().insert(fd, Shared { id, owner }));
    Ok(HookedRegistration::Kept(id, fresh))
}

/// Drops the kept registration `id` of `fd` that proving it current failed with `e`: its
/// table entry, if still this one; and its reactor registration, unless `e` is
/// `NotConnected` (the id may name another descriptor's registration by now).
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
fn drop_stale(fd: RawFd, id: SourceId, e: &io::Error) {
    REGISTERED.with(|m| {
        let mut m = m.borrow_mut();
        if m.get(fd).is_some_and(|s| s.id == id) {
            m.remove(fd);
        }
    });
    if e.kind() != io::ErrorKind::NotConnected {
        hub::deregister_fd(id);
    }
}

/// Deregisters the monkey shim's kept registration of `fd`, if it has one (waking its
/// waiters, as [`forget`] does).
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
fn forget_kept(fd: RawFd) {
    if with_kept(fd, |_, _| ()).is_some() {
        forget(fd);
    }
}

/// Runs `f` on the kept registration of `fd` and its cache, as they are (not proven
/// current: a use that depends on the registration must check `generation` as
/// [`hooked_registration`] does, or go through it); `None` if `fd` has none. `f` must not
/// reach this table.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn with_kept<R>(fd: RawFd, f: impl FnOnce(SourceId, &mut FdCache) -> R) -> Option<R> {
    REGISTERED
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            match m.get_mut(fd)? {
                Shared {
                    id,
                    owner: Owner::Kept(c),
                } => Some(f(*id, c)),
                _ => None,
            }
        })
        .ok()
        .flatten()
}

/// Proves up to `budget` of this thread's kept registrations current, from descriptor
/// number `from` on, as [`hooked_registration`] does when the count moved: a registration
/// whose number names another file now is registered afresh under the same id (its
/// waiters then see the new file's events) with an empty cache; one whose number is
/// closed is ended, waking its waiters with [`FdWait::Closed`]. Returns the number to go
/// on from next time (0 once the end of the table was reached). The monkey shim's
/// safety net against closes it cannot see (see `crate::monkey`).
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn prove_kept(from: RawFd, budget: usize) -> RawFd {
    let from = usize::try_from(from).unwrap_or(0);
    let kept: Vec<(RawFd, SourceId)> = REGISTERED.with(|m| {
        let m = m.borrow();
        let entries = m.0.iter().enumerate().skip(from);
        entries
            .filter_map(|(fd, s)| match s {
                Some(Shared {
                    id,
                    owner: Owner::Kept(_),
                }) => Some((fd as RawFd, *id)),
                _ => None,
            })
            .take(budget)
            .collect()
    });
    let next = match kept.last() {
        Some(&(fd, _)) if kept.len() == budget => fd + 1,
        _ => 0,
    };
    for (fd, id) in kept {
        match hub::refresh_fd(id, fd) {
            Ok(false) => {}
            Ok(true) => store_cache(fd, id, FdCache::default()),
            Err(e) => drop_stale(fd, id, &e),
        }
    }
    next
}

/// Writes back the shim's cache of `fd` if `id` is still its kept registration.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn store_cache(fd: RawFd, id: SourceId, cache: FdCache) {
    let _ = REGISTERED.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            if let Some(Shared {
                id: kept,
                owner: Owner::Kept(c),
            }) = m.get_mut(fd)
            {
                if *kept == id {
                    *c = cache;
                }
            }
        }
    });
}

/// Whether a green thread of this thread may be waiting on `fd` through the hub (it is in
/// [`REGISTERED`]). Never allocates or creates a hub; `false` during thread teardown.
#[cfg(feature = "monkey")]
pub(crate) fn is_registered(fd: RawFd) -> bool {
    REGISTERED
        .try_with(|m| m.try_borrow().is_ok_and(|m| m.contains_key(fd)))
        .unwrap_or(false)
}

/// `fd` is about to be closed (or replaced by `dup2`) behind verdant's back: forgets its
/// registration and deregisters it from the reactor, so that every green thread waiting on
/// it wakes with [`FdWait::Closed`] and a later descriptor with the same number starts
/// afresh, with no stale events. The owner of the registration (a socket, or the waiters of
/// a temporary one) deregisters nothing more when it drops it: the reactor's ids are
/// generation-checked.
#[cfg(feature = "monkey")]
pub(crate) fn forget(fd: RawFd) {
    let shared = REGISTERED
        .try_with(|m| m.try_borrow_mut().ok().and_then(|mut m| m.remove(fd)))
        .ok()
        .flatten();
    if let Some(shared) = shared {
        hub::deregister_fd(shared.id);
    }
}

/// A std socket type verdant wraps: built from an `OwnedFd`, and duplicable.
pub(crate) trait StdSocket: AsRawFd + From<OwnedFd> + Sized {
    /// `dup` the descriptor (std's `try_clone`).
    fn dup(&self) -> io::Result<Self>;
    /// Puts the socket in (or out of) non-blocking mode.
    fn nonblocking(&self, on: bool) -> io::Result<()> {
        crate::sys::set_nonblocking(self.as_raw_fd(), on)
    }
}

macro_rules! std_socket {
    ($($ty:ty),*) => {$(
        impl StdSocket for $ty {
            fn dup(&self) -> io::Result<Self> {
                self.try_clone()
            }
        }
    )*};
}

std_socket!(
    std::net::TcpStream,
    std::net::TcpListener,
    std::net::UdpSocket,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixDatagram
);

/// An fd registered with this thread's hub; deregistered on drop.
pub(crate) struct Registration {
    id: SourceId,
    fd: RawFd,
}

impl Registration {
    /// Registers `fd` with this thread's hub.
    fn new(fd: RawFd) -> io::Result<Registration> {
        let id = hub::register_fd(fd)?;
        Ok(Registration { id, fd })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Thread teardown may have destroyed the map already; then there is nothing to do.
        let _ = REGISTERED.try_with(|m| {
            let mut m = m.borrow_mut();
            if m.get(self.fd).is_some_and(|s| s.id == self.id) {
                m.remove(self.fd);
            }
        });
        hub::deregister_fd(self.id);
    }
}

/// Every read and write of a socket reads most of these fields, and a server's connection
/// finds them out of cache at each request: `align(64)` puts them on one cache line of
/// their own (64 bytes for a std socket), after the `Rc`'s counts, which a request does
/// not touch. Without it a record started anywhere in a line (malloc aligns to 16) and
/// spanned two lines more often than not.
#[repr(C, align(64))]
struct Inner<T> {
    // Field order is drop order: deregister before the socket closes the fd.
    reg: Registration,
    io: T,
    /// The last read drained the socket (see [`Source::read_stream`]): the next read waits
    /// before trying. Shared by the clones, like the reactor's readiness it mirrors.
    drained: Cell<bool>,
    /// [`reactor::polls`] at that read: while it is the same, the wait may clear the
    /// reactor's cached read readiness, which the read left alone.
    drained_at: Cell<u64>,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

/// A std socket registered with this thread's hub; clones share it (see the module docs).
pub(crate) struct Source<T> {
    inner: Rc<Inner<T>>,
}

impl<T: StdSocket> Source<T> {
    /// Puts `io` in non-blocking mode and registers it.
    pub(crate) fn new(io: T) -> io::Result<Source<T>> {
        io.nonblocking(true)?;
        let fd = io.as_raw_fd();
        // A std socket that hooked calls waited on (`from_std` after `patch_all`): the
        // socket takes over from the kept registration, which would make its own fail with
        // `EEXIST`.
        #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
        forget_kept(fd);
        let reg = Registration::new(fd)?;
        let id = reg.id;
        let owner = Owner::Socket;
        REGISTERED.with(|m| m.borrow_mut().insert(fd, Shared { id, owner }));
        Ok(Source {
            inner: Rc::new(Inner {
                reg,
                io,
                read_timeout: Cell::new(None),
                write_timeout: Cell::new(None),
                drained: Cell::new(false),
                drained_at: Cell::new(0),
            }),
        })
    }

    /// The std socket (for calls that never block).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner.io
    }

    /// Another handle to the same socket and registration.
    pub(crate) fn share(&self) -> Source<T> {
        Source {
            inner: Rc::clone(&self.inner),
        }
    }

    /// Gives the std socket back, deregistered and in blocking mode. While other clones
    /// are alive it is a `dup` instead, which shares the clones' file status flags and so
    /// stays non-blocking.
    pub(crate) fn into_std(self) -> io::Result<T> {
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => {
                let Inner { reg, io, .. } = inner;
                drop(reg);
                io.nonblocking(false)?;
                Ok(io)
            }
            Err(shared) => shared.io.dup(),
        }
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.inner.read_timeout.get()
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.inner.write_timeout.get()
    }

    /// std's rule: `Some(Duration::ZERO)` is an error.
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.read_timeout.set(check_timeout(t)?);
        Ok(())
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.write_timeout.set(check_timeout(t)?);
        Ok(())
    }

    /// Runs a reading operation (read, recv, accept) until it does not `WouldBlock`,
    /// waiting for readability in between, bounded by the read timeout.
    pub(crate) fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        // After a drained read (see `read_stream`) a read could only fail: wait first.
        self.io_loop(
            Direction::Read,
            self.read_timeout(),
            self.take_drained(),
            op,
        )
    }

    /// Like [`read_with`](Self::read_with) for writing operations and the write timeout.
    pub(crate) fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io_loop(Direction::Write, self.write_timeout(), Skip::No, op)
    }

    /// [`write_with`](Self::write_with) whose first attempt is inlined into the caller
    /// (a stream's `write`): a write that does not block, a server's usual case, costs the
    /// operation and a test, without the loop's frame, timeout and error matching (about
    /// 25 instructions per response of `http_hello`). The rest, from the first
    /// `WouldBlock` on, is out of line.
    #[inline]
    pub(crate) fn write_stream<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        match op(&self.inner.io) {
            Err(e) => self.write_failed(e, op),
            ok => ok,
        }
    }

    /// [`write_stream`](Self::write_stream) after its first attempt failed with `e`.
    #[cold]
    #[inline(never)]
    fn write_failed<R>(&self, e: io::Error, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        let skip = match e.kind() {
            // Wait first: trying again at once could only fail again.
            io::ErrorKind::WouldBlock => Skip::WouldBlock,
            io::ErrorKind::Interrupted => Skip::No,
            _ => return Err(e),
        };
        self.io_loop(Direction::Write, self.write_timeout(), skip, op)
    }

    /// Waits until the socket may be ready in `dir` (see [`wait`]).
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        wait(self.inner.reg.id, dir, deadline)
    }

    // Inlined into each socket call: with the hub's `wait_fd_in` it is all that lies on a
    // parked connection's stack, so it is kept small. `skip`: the first attempt is known
    // to fail, wait first.
    #[inline(always)]
    fn io_loop<R>(
        &self,
        dir: Direction,
        timeout: Option<Duration>,
        mut skip: Skip,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        // The deadline starts at the first wait: a call that never waits costs no clock.
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if skip == Skip::No {
                match op(&self.inner.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            wait_with(self.inner.reg.id, dir, deadline, skip)?;
            skip = Skip::No;
        }
    }

    /// A stream read of `len` bytes (`read`, `read_vectored`; not `peek`) through
    /// [`read_with`](Self::read_with). A read that returns fewer bytes than asked for, but
    /// some, drained the receive buffer: the next read waits for the kernel's next edge
    /// instead of first failing with `EAGAIN` (the reactor's "drained shortcut"; the
    /// cached readiness is cleared by that wait, see [`set_drained`](Self::set_drained)).
    /// Only for byte streams whose reads return everything buffered (TCP), not for
    /// datagrams.
    ///
    /// Without a read timeout (a server's usual case) the loop is written out here with
    /// no deadline to carry, small enough to inline into the caller (`TcpStream`'s reads
    /// do): a parked connection's stack then holds the caller's frame right above the hub's
    /// `wait_fd_in`, and nothing of its own, each line of which would be a cache miss per
    /// request when the connection resumes. A read timeout takes
    /// [`read_stream_timed`](Self::read_stream_timed).
    #[inline]
    pub(crate) fn read_stream(
        &self,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let inner = &*self.inner;
        if inner.read_timeout.get().is_some() {
            return self.read_stream_timed(len, op);
        }
        // After a drained read a read could only fail: wait first.
        let mut skip = self.take_drained();
        loop {
            if skip == Skip::No {
                match op(&inner.io) {
                    Ok(n) => {
                        if n > 0 && n < len {
                            self.set_drained();
                        }
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            wait_with(inner.reg.id, Direction::Read, None, skip)?;
            skip = Skip::No;
        }
    }

    /// [`read_stream`](Self::read_stream) bounded by the read timeout.
    #[inline(never)]
    fn read_stream_timed(
        &self,
        len: usize,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let read = self.read_with(op);
        if let Ok(n) = read {
            if n > 0 && n < len {
                self.set_drained();
            }
        }
        read
    }

    /// A stream read drained the receive buffer (see [`read_stream`](Self::read_stream)).
    /// The reactor is not told now but at the next read's wait, which reaches it anyway
    /// ([`hub::wait_fd_drained`]): its cached readiness is cleared then if no poll came in
    /// between (this saved a second visit of the fd's reactor slot per request, some 45
    /// instructions of a server's request).
    fn set_drained(&self) {
        self.inner.drained_at.set(reactor::polls());
        self.inner.drained.set(true);
    }

    /// How the next read begins: with the operation, or, after a drained read, with a
    /// wait that clears the cached readiness if no poll came since.
    #[inline]
    fn take_drained(&self) -> Skip {
        if !self.inner.drained.replace(false) {
            Skip::No
        } else if self.inner.drained_at.get() == reactor::polls() {
            Skip::Drained
        } else {
            Skip::DrainedPolled
        }
    }
}

/// Whether an I/O loop begins with the operation or with a wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Try the operation first.
    No,
    /// Wait first: a stream read drained the socket (see [`Source::read_stream`]) and no
    /// poll came since: the wait clears the cached readiness.
    Drained,
    /// Wait first: a stream read drained the socket, but a poll came since, which may
    /// have recorded a new edge: the wait leaves the cached readiness as it is.
    DrainedPolled,
    /// Wait first: the operation just failed with `WouldBlock`.
    WouldBlock,
}

impl<T: fmt::Debug> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner.io, f)
    }
}

fn check_timeout(t: Option<Duration>) -> io::Result<Option<Duration>> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(t)
}

/// Waits in the hub until the registered source `id` may be ready in `dir`: `Ok` means
/// "retry the operation". A passed `deadline` or a fired `Timeout` is `TimedOut`; the
/// source being deregistered under the waiter is `NotConnected`; a second green thread
/// waiting in the same direction is `ResourceBusy`. A kill unwinds. Nothing stays
/// registered for the waiter afterwards.
pub(crate) fn wait(id: SourceId, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
    wait_with(id, dir, deadline, Skip::No)
}

/// [`wait`] (after the operation: `Skip::No` or `Skip::WouldBlock`), or, after a drained
/// read, [`hub::wait_fd_drained`]. Inlined into the I/O loops, with the errors built out
/// of line: a parked connection's stack holds no frame of its own for it.
#[inline(always)]
fn wait_with(
    id: SourceId,
    dir: Direction,
    deadline: Option<Instant>,
    skip: Skip,
) -> io::Result<()> {
    #[cfg(test)]
    FD_WAITS.with(|n| n.set(n.get() + 1));
    let waited = match skip {
        Skip::No | Skip::WouldBlock => hub::wait_fd(id, dir, deadline),
        Skip::Drained => hub::wait_fd_drained(id, dir, deadline, true),
        Skip::DrainedPolled => hub::wait_fd_drained(id, dir, deadline, false),
    };
    match waited {
        Ok(FdWait::Ready) => Ok(()),
        other => Err(wait_error(dir, other)),
    }
}

/// The error of a wait that did not end with `Ready`.
#[cold]
#[inline(never)]
fn wait_error(dir: Direction, waited: Result<FdWait, hub::WaitError>) -> io::Error {
    match waited {
        Ok(FdWait::Ready) => unreachable!("a Ready wait is not an error"),
        Ok(FdWait::Deadline) => io::Error::new(
            io::ErrorKind::TimedOut,
            match dir {
                Direction::Read => "the socket's read timeout elapsed",
                Direction::Write => "the socket's write timeout elapsed",
            },
        ),
        Ok(FdWait::Closed) => io::Error::new(
            io::ErrorKind::NotConnected,
            "the file descriptor was closed (deregistered) while this green thread waited on it",
        ),
        Ok(FdWait::Busy) => io::Error::new(
            io::ErrorKind::ResourceBusy,
            match dir {
                Direction::Read => {
                    "another green thread is already blocked reading this socket \
                     (one reader and one writer at a time per socket, clones included)"
                }
                Direction::Write => {
                    "another green thread is already blocked writing this socket \
                     (one reader and one writer at a time per socket, clones included)"
                }
            },
        ),
        Err(e) => e.into(),
    }
}
