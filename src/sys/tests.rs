//! Tests of the selector contract, written against `sys`'s exports only, so they hold for
//! whichever backend is compiled (they run on Linux here; kqueue is built, not run).

use super::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const T_SOCK: usize = 7;
const T_WAKER: usize = 99;

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Events for `token` after a non-blocking select, merged over all events (kqueue reports
/// one per filter).
#[derive(Default, Debug)]
struct Seen {
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    count: usize,
}

fn poll_now(sel: &Selector, token: usize) -> Seen {
    let mut events = Events::with_capacity(16);
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    let mut seen = Seen::default();
    for ev in events.iter().filter(|e| e.token() == token) {
        seen.count += 1;
        seen.readable |= ev.is_readable();
        seen.writable |= ev.is_writable();
        seen.read_closed |= ev.is_read_closed() || ev.is_hup();
        seen.write_closed |= ev.is_write_closed() || ev.is_hup();
    }
    seen
}

#[test]
fn socket_becomes_readable_after_write_and_not_before() {
    let sel = Selector::new().unwrap();
    let (a, mut b) = pair();
    sel.register(a.as_raw_fd(), T_SOCK, Interest::READABLE)
        .unwrap();

    let before = poll_now(&sel, T_SOCK);
    assert!(
        !before.readable,
        "readable before anything was written: {before:?}"
    );

    b.write_all(b"x").unwrap();
    let after = poll_now(&sel, T_SOCK);
    assert!(after.readable, "not readable after a write: {after:?}");
}

#[test]
fn readiness_is_edge_triggered() {
    let sel = Selector::new().unwrap();
    let (mut a, mut b) = pair();
    sel.register(a.as_raw_fd(), T_SOCK, Interest::BOTH).unwrap();
    // The initial writable edge.
    assert!(poll_now(&sel, T_SOCK).writable);
    // Nothing changed: no second report, although the socket is still writable.
    assert_eq!(poll_now(&sel, T_SOCK).count, 0);

    b.write_all(b"hello").unwrap();
    assert!(poll_now(&sel, T_SOCK).readable);
    // Data still unread, but the edge was reported once: the caller must cache it.
    assert_eq!(poll_now(&sel, T_SOCK).count, 0);

    let mut buf = [0u8; 16];
    assert_eq!(a.read(&mut buf).unwrap(), 5);
    assert_eq!(
        a.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    b.write_all(b"again").unwrap();
    assert!(
        poll_now(&sel, T_SOCK).readable,
        "a new edge after WouldBlock"
    );
}

#[test]
fn peer_close_reports_both_directions_closed() {
    let sel = Selector::new().unwrap();
    let (a, b) = pair();
    sel.register(a.as_raw_fd(), T_SOCK, Interest::BOTH).unwrap();
    poll_now(&sel, T_SOCK); // consume the initial writable edge
    drop(b);
    let seen = poll_now(&sel, T_SOCK);
    assert!(seen.readable && seen.read_closed, "{seen:?}");
    assert!(seen.write_closed, "{seen:?}");
}

/// `(is_plain, anything besides the directions)` for each event of `token` now.
fn plainness(sel: &Selector, token: usize) -> Vec<(bool, bool)> {
    let mut events = Events::with_capacity(16);
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    events
        .iter()
        .filter(|e| e.token() == token)
        .map(|e| {
            let other = e.is_error()
                || e.is_read_closed()
                || e.is_write_closed()
                || e.is_hup()
                || e.is_priority();
            (e.is_plain(), other)
        })
        .collect()
}

#[test]
fn data_and_space_events_are_plain_and_a_peer_close_is_not() {
    let sel = Selector::new().unwrap();
    let (a, mut b) = pair();
    sel.register(a.as_raw_fd(), T_SOCK, Interest::BOTH).unwrap();
    let writable = plainness(&sel, T_SOCK);
    assert!(!writable.is_empty());
    assert!(writable.iter().all(|&e| e == (true, false)), "{writable:?}");
    b.write_all(b"x").unwrap();
    let data = plainness(&sel, T_SOCK);
    assert!(!data.is_empty());
    assert!(data.iter().all(|&e| e == (true, false)), "{data:?}");
    drop(b);
    let closed = plainness(&sel, T_SOCK);
    assert!(closed.contains(&(false, true)), "{closed:?}");
    assert!(
        closed.iter().all(|&(plain, other)| plain != other),
        "{closed:?}"
    );
}

#[test]
fn deregister_stops_events_and_reregister_changes_token() {
    let sel = Selector::new().unwrap();
    let (a, mut b) = pair();
    sel.register(a.as_raw_fd(), T_SOCK, Interest::READABLE)
        .unwrap();
    sel.reregister(a.as_raw_fd(), T_SOCK + 1, Interest::READABLE)
        .unwrap();
    b.write_all(b"x").unwrap();
    assert!(poll_now(&sel, T_SOCK + 1).readable);

    sel.deregister(a.as_raw_fd()).unwrap();
    b.write_all(b"y").unwrap();
    let mut events = Events::with_capacity(4);
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(events.is_empty());
    assert!(
        sel.deregister(a.as_raw_fd()).is_err(),
        "double deregister is an error"
    );
}

#[test]
fn register_bad_fd_is_an_error() {
    let sel = Selector::new().unwrap();
    let err = sel.register(-1, T_SOCK, Interest::BOTH).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn selector_fd_is_cloexec() {
    let sel = Selector::new().unwrap();
    // SAFETY: F_GETFD on an fd owned by `sel`, no pointer arguments.
    let flags = unsafe { syscall!(fcntl(sel.as_raw_fd(), libc::F_GETFD)) }.unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
}

#[test]
fn fd_helpers_set_and_clear_flags() {
    let (a, _b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    set_nonblocking(fd, true).unwrap();
    // SAFETY: F_GETFL on a live fd, no pointer arguments.
    let fl = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }.unwrap();
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    set_nonblocking(fd, false).unwrap();
    // SAFETY: as above.
    let fl = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }.unwrap();
    assert_eq!(fl & libc::O_NONBLOCK, 0);
    set_cloexec(fd).unwrap();
    assert_eq!(
        set_nonblocking(-1, true).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
}

#[test]
fn timeout_is_never_shortened_to_zero() {
    let sel = Selector::new().unwrap();
    let mut events = Events::with_capacity(4);
    // 1µs must round up to a real wait (1ms on epoll), not a zero-timeout poll.
    let d = Duration::from_micros(1);
    let start = Instant::now();
    sel.select(&mut events, Some(d)).unwrap();
    assert!(events.is_empty());
    assert!(start.elapsed() >= d, "select returned before its timeout");
}

#[test]
fn waker_from_another_thread_unblocks_select_none() {
    let sel = Selector::new().unwrap();
    let waker = Arc::new(Waker::new(&sel, T_WAKER).unwrap());
    let remote = Arc::clone(&waker);
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        remote.wake().unwrap();
        remote.wake().unwrap(); // already pending: no syscall, still Ok
    });
    let mut events = Events::with_capacity(4);
    loop {
        sel.select(&mut events, None).unwrap();
        if events.iter().any(|e| e.token() == T_WAKER) {
            break;
        }
    }
    t.join().unwrap();
    waker.reset().unwrap();
    // After a reset, nothing is pending any more ...
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(events.iter().all(|e| e.token() != T_WAKER));
    // ... and the next wake is delivered again.
    waker.wake().unwrap();
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(events
        .iter()
        .any(|e| e.token() == T_WAKER && e.is_readable()));
}

#[test]
fn many_wakes_without_reset_never_fail() {
    let sel = Selector::new().unwrap();
    let waker = Waker::new(&sel, T_WAKER).unwrap();
    for _ in 0..100_000 {
        waker.wake().unwrap();
    }
    let mut events = Events::with_capacity(4);
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    assert_eq!(events.iter().filter(|e| e.token() == T_WAKER).count(), 1);
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs a no-op handler for `sig` without `SA_RESTART`, so a blocked syscall in the thread
/// that receives it fails with `EINTR`.
fn install_noop_handler(sig: libc::c_int) {
    // SAFETY: sigaction is plain data; all-zero is a valid (empty) value before it is filled.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as *const () as libc::sighandler_t;
    sa.sa_flags = 0; // no SA_RESTART: that is the point
                     // SAFETY: `sa.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { syscall!(sigemptyset(&mut sa.sa_mask)) }.unwrap();
    // SAFETY: `sa` is fully initialised, the handler is async-signal-safe (it does nothing),
    // and a null old-action pointer is allowed.
    unsafe { syscall!(sigaction(sig, &sa, std::ptr::null_mut())) }.unwrap();
}

#[test]
fn eintr_returns_ok_with_no_events() {
    // SIGUSR2 is used by no other test in this crate.
    let sig = libc::SIGUSR2;
    install_noop_handler(sig);

    let sel = Arc::new(Selector::new().unwrap());
    let waker = Arc::new(Waker::new(&sel, T_WAKER).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let (sel2, done2) = (Arc::clone(&sel), Arc::clone(&done));
    let t = thread::spawn(move || {
        let mut events = Events::with_capacity(4);
        // Blocks until a signal interrupts it (or the fallback wake below, which fails the test).
        let res = sel2.select(&mut events, None);
        let woken_by_waker = events.iter().any(|e| e.token() == T_WAKER);
        done2.store(true, Ordering::SeqCst);
        (res.map_err(|e| e.to_string()), events.len(), woken_by_waker)
    });
    let pthread = std::os::unix::thread::JoinHandleExt::as_pthread_t(&t);
    // The signal may arrive before the thread is inside select; keep sending until it returns.
    for _ in 0..500 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        // SAFETY: the thread is alive until it is joined below, so its pthread_t is valid.
        let rc = unsafe { libc::pthread_kill(pthread, sig) };
        assert_eq!(rc, 0);
        thread::sleep(Duration::from_millis(10));
    }
    if !done.load(Ordering::SeqCst) {
        waker.wake().unwrap();
    }
    let (res, n, woken_by_waker) = t.join().unwrap();
    assert!(
        !woken_by_waker,
        "select was never interrupted by the signal"
    );
    assert_eq!(res, Ok(()));
    assert_eq!(n, 0);
}

/// Whether `fd` is readable now (a zero-timeout `poll`).
fn readable_now(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    n == 1 && pfd.revents & libc::POLLIN != 0
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[test]
fn poll_set_is_readable_exactly_while_a_member_is_ready() {
    let (mut a, mut b) = pair();
    let set = PollSet::new(&[pollfd(a.as_raw_fd(), libc::POLLIN)]).expect("poll set");
    assert!(!readable_now(set.as_raw_fd()), "nothing to read yet");
    b.write_all(b"x").unwrap();
    assert!(
        readable_now(set.as_raw_fd()),
        "a's data makes the set ready"
    );
    // Level-triggered: still ready until the data is consumed.
    assert!(
        readable_now(set.as_raw_fd()),
        "still ready (level-triggered)"
    );
    let mut buf = [0u8; 1];
    a.read_exact(&mut buf).unwrap();
    assert!(!readable_now(set.as_raw_fd()), "data consumed: not ready");
}

#[test]
fn poll_set_skips_negative_fds_and_merges_duplicates() {
    let (a, b) = pair();
    let entries = [
        pollfd(-1, libc::POLLIN),
        pollfd(a.as_raw_fd(), libc::POLLIN),
        pollfd(a.as_raw_fd(), libc::POLLOUT),
    ];
    let set = PollSet::new(&entries).expect("poll set");
    // The second entry for `a` (writable, which an idle socket is) was merged in.
    assert!(readable_now(set.as_raw_fd()), "a is writable");
    drop(b);
    let only_read = PollSet::new(&entries[..2]).expect("poll set");
    // The peer is gone: a reads end of stream, which is readiness for POLLIN.
    assert!(
        readable_now(only_read.as_raw_fd()),
        "end of stream is readable"
    );
}

#[test]
fn poll_set_drop_hung_up_removes_only_hung_up_members() {
    let (a, b) = pair();
    let (c, mut d) = pair();
    let entries = [
        pollfd(a.as_raw_fd(), libc::POLLOUT),
        pollfd(c.as_raw_fd(), libc::POLLIN),
    ];
    let set = PollSet::new(&entries).expect("poll set");
    drop(b);
    // a's peer is gone: its hang-up (or write-side end of file) keeps the set ready.
    assert!(readable_now(set.as_raw_fd()), "a is hung up");
    set.drop_hung_up();
    assert!(
        !readable_now(set.as_raw_fd()),
        "a was removed, c has nothing to read"
    );
    // c, healthy, is still watched.
    d.write_all(b"x").unwrap();
    assert!(
        readable_now(set.as_raw_fd()),
        "c's data makes the set ready"
    );
    set.drop_hung_up();
    assert!(readable_now(set.as_raw_fd()), "c is not hung up: kept");
}

#[test]
fn poll_set_fd_is_cloexec() {
    let (a, _b) = pair();
    let set = PollSet::new(&[pollfd(a.as_raw_fd(), libc::POLLIN)]).expect("poll set");
    // SAFETY: F_GETFD takes no pointer argument.
    let flags = unsafe { libc::fcntl(set.as_raw_fd(), libc::F_GETFD) };
    assert!(flags & libc::FD_CLOEXEC != 0);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn poll_set_refuses_what_epoll_cannot_watch() {
    // epoll refuses regular files (EPERM): the caller must then block in the real poll.
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    assert!(PollSet::new(&[pollfd(file.as_raw_fd(), libc::POLLIN)]).is_none());
}

#[test]
fn errno_reads_and_writes_this_threads_slot() {
    set_errno(libc::EINTR);
    assert_eq!(errno(), libc::EINTR);
    assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EINTR));
    // SAFETY: closing an fd that is never open fails with EBADF and touches nothing.
    assert_eq!(unsafe { libc::close(-1) }, -1);
    assert_eq!(errno(), libc::EBADF);
    // Per thread: another thread's errno is its own.
    thread::spawn(|| {
        set_errno(libc::ENOENT);
        assert_eq!(errno(), libc::ENOENT);
    })
    .join()
    .unwrap();
    assert_eq!(errno(), libc::EBADF);
}
