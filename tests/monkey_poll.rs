//! The monkey shim's waits on descriptor sets (`select`, `pselect`, `ppoll`, `epoll_wait`,
//! `epoll_pwait`), descriptor lifetime (`close`, `dup2`, `dup3`) and name lookups
//! (`getaddrinfo`, `getnameinfo`), called through libc as C code would, inside green
//! threads, before and after patching.
//!
//! Patching is process-wide and permanent, so every test runs in a child process of its
//! own (this binary re-run with `--exact <name>`), as in `tests/monkey.rs`.
#![cfg(all(feature = "monkey", target_os = "linux"))]

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;
#[macro_use]
mod support;

use verdant::monkey::{self, original, Family};

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both descriptors and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_byte(fd: RawFd) {
    // SAFETY: one byte from a static buffer.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

/// A one-byte hooked `read`, bounded by a 10 s verdant `Timeout` (`ETIMEDOUT` after it),
/// so that a waiter nobody wakes fails the test instead of hanging it.
fn read_byte(fd: RawFd) -> (isize, i32) {
    let _bound = verdant::Timeout::start(Duration::from_secs(10));
    let mut b = 0u8;
    // SAFETY: one byte into a live local.
    let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
    (n, if n < 0 { last_errno() } else { 0 })
}

/// A green thread that counts `verdant::sleep(1 ms)` ticks until stopped.
struct Ticker {
    ticks: Rc<Cell<u32>>,
    stop: Rc<Cell<bool>>,
    handle: verdant::JoinHandle<()>,
}

impl Ticker {
    fn start() -> Ticker {
        let (ticks, stop) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let (t, s) = (ticks.clone(), stop.clone());
        let handle = verdant::spawn(move || {
            while !s.get() {
                t.set(t.get() + 1);
                verdant::sleep(Duration::from_millis(1)).unwrap();
            }
        });
        Ticker {
            ticks,
            stop,
            handle,
        }
    }

    fn ticks(&self) -> u32 {
        self.ticks.get()
    }

    fn stop(self) -> u32 {
        self.stop.set(true);
        self.handle.join().unwrap();
        self.ticks.get()
    }
}

/// Proof of cooperation: `wait(read_end)` runs in one green thread while another ticks
/// five times on the hub and only then writes a byte into the pipe. If `wait` blocked
/// the OS thread, the writer could never run and `wait` would see no data. Returns what
/// `wait` returned and the ticks seen when it returned.
fn wait_for_a_byte_written_by_a_ticking_green_thread<R: 'static>(
    wait: impl FnOnce(RawFd) -> R + 'static,
) -> (R, u32) {
    let (r, w) = pipe();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let waiter = verdant::spawn(move || {
        let out = wait(r.as_raw_fd());
        (out, t.get())
    });
    let t = ticks.clone();
    let writer = verdant::spawn(move || {
        for _ in 0..5 {
            t.set(t.get() + 1);
            verdant::sleep(Duration::from_millis(2)).unwrap();
        }
        write_byte(w.as_raw_fd());
        w
    });
    let out = waiter.join().unwrap();
    drop(writer.join().unwrap());
    out
}

fn empty_fd_set() -> libc::fd_set {
    // SAFETY: an all-zero fd_set is the empty set (what FD_ZERO writes).
    unsafe { std::mem::zeroed() }
}

fn fd_set_of(fds: &[RawFd]) -> libc::fd_set {
    let mut set = empty_fd_set();
    for &fd in fds {
        // SAFETY: `fd < FD_SETSIZE` (a test's descriptors are small) and `set` is live.
        unsafe { libc::FD_SET(fd, &mut set) };
    }
    set
}

fn is_set(fd: RawFd, set: &libc::fd_set) -> bool {
    // SAFETY: as in `fd_set_of`.
    unsafe { libc::FD_ISSET(fd, set) }
}

fn tv(secs: i64, usecs: i64) -> libc::timeval {
    libc::timeval {
        tv_sec: secs as _,
        tv_usec: usecs as _,
    }
}

fn ts(secs: i64, nsecs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as _,
        tv_nsec: nsecs as _,
    }
}

/// `select` on `read` for reading, with `timeout`: (return value, errno if -1, the read
/// set afterwards, the timeout afterwards).
fn select_read(read: &[RawFd], timeout: libc::timeval) -> (i32, i32, libc::fd_set, libc::timeval) {
    let mut set = fd_set_of(read);
    let mut t = timeout;
    let nfds = read.iter().max().map_or(0, |m| m + 1);
    // SAFETY: a live fd_set and timeval.
    let n = unsafe {
        libc::select(
            nfds,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut t,
        )
    };
    (n, if n < 0 { last_errno() } else { 0 }, set, t)
}

fn epoll_with(fd: RawFd, data: u64) -> OwnedFd {
    // SAFETY: no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: a live epoll_event.
    assert_eq!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) },
        0
    );
    // SAFETY: `ep` was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(ep) }
}

/// (return value, errno if -1, events) of `epoll_wait(ep, 8 events, timeout_ms)`.
fn epoll_wait_on(ep: RawFd, timeout_ms: i32, pwait: bool) -> (i32, i32, Vec<(u32, u64)>) {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
    // SAFETY: `evs` holds the 8 entries passed; the signal mask is null.
    let n = unsafe {
        if pwait {
            libc::epoll_pwait(ep, evs.as_mut_ptr(), 8, timeout_ms, std::ptr::null())
        } else {
            libc::epoll_wait(ep, evs.as_mut_ptr(), 8, timeout_ms)
        }
    };
    let got = evs
        .iter()
        .take(n.max(0) as usize)
        .map(|e| (e.events, e.u64))
        .collect();
    (n, if n < 0 { last_errno() } else { 0 }, got)
}

/// One `addrinfo` as a comparable value: family, socket type, protocol, address bytes.
type Address = (i32, i32, i32, Vec<u8>);

/// The addresses of a `getaddrinfo` answer, as comparable values; frees the list.
fn addresses(list: *mut libc::addrinfo) -> Vec<Address> {
    let mut out = Vec::new();
    let mut p = list;
    while !p.is_null() {
        // SAFETY: a node of a list getaddrinfo returned, not freed yet.
        let a = unsafe { &*p };
        // SAFETY: `ai_addr` is valid for `ai_addrlen` bytes.
        let addr =
            unsafe { std::slice::from_raw_parts(a.ai_addr.cast::<u8>(), a.ai_addrlen as usize) };
        out.push((a.ai_family, a.ai_socktype, a.ai_protocol, addr.to_vec()));
        p = a.ai_next;
    }
    if !list.is_null() {
        // SAFETY: the list getaddrinfo returned, freed once.
        unsafe { libc::freeaddrinfo(list) };
    }
    out
}

/// `getaddrinfo(node, "80", hints with `flags`)`, the original's if `orig`: return value
/// and the addresses.
fn lookup_with(orig: bool, node: &std::ffi::CStr, flags: i32) -> (i32, Vec<Address>) {
    // SAFETY: an all-zero addrinfo is valid hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags = flags;
    let mut list = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings, live hints and output.
    let r = unsafe {
        if orig {
            original::getaddrinfo(node.as_ptr(), c"80".as_ptr(), &hints, &mut list)
        } else {
            libc::getaddrinfo(node.as_ptr(), c"80".as_ptr(), &hints, &mut list)
        }
    };
    (r, addresses(list))
}

/// `getnameinfo` of 127.0.0.1:80 (the original's if `orig`), with `salen`: (return value, host, serv).
fn name_of_localhost(orig: bool, salen: usize, flags: i32) -> (i32, Vec<u8>, Vec<u8>) {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as _,
        sin_port: 80u16.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // Pre-filled so that what the call leaves untouched is compared too.
    let (mut host, mut serv) = (vec![b'?'; 64], vec![b'!'; 32]);
    let (sa, host_p, serv_p) = (
        (&sin as *const libc::sockaddr_in).cast(),
        host.as_mut_ptr().cast(),
        serv.as_mut_ptr().cast(),
    );
    let (hl, sl) = (host.len() as _, serv.len() as _);
    // SAFETY: `sin` is readable for `salen <= size_of::<sockaddr_in>()` bytes, the
    // buffers are writable for the lengths passed.
    let r = unsafe {
        if orig {
            original::getnameinfo(sa, salen as _, host_p, hl, serv_p, sl, flags)
        } else {
            libc::getnameinfo(sa, salen as _, host_p, hl, serv_p, sl, flags)
        }
    };
    (r, host, serv)
}

isolated! {
    fn select_waits_on_the_hub_and_answers_like_libc() {
        monkey::patch_sockets();
        let (idle, _idle_w) = pipe();
        let idle = idle.as_raw_fd();
        let ((n, e, set, left), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(move |r| {
            select_read(&[r, idle], tv(10, 0))
        });
        assert_eq!((n, e, ticks), (1, 0, 5));
        assert!(!is_set(idle, &set), "the idle pipe was reported ready");
        // As on Linux, the timeout now holds the time not slept.
        let left = Duration::new(left.tv_sec as u64, left.tv_usec as u32 * 1000);
        assert!(left > Duration::ZERO && left < Duration::from_secs(10), "{left:?}");
        // The ready descriptor's bit is set.
        let (r, w) = pipe();
        write_byte(w.as_raw_fd());
        let (n, _, set, _) = verdant::spawn(move || select_read(&[r.as_raw_fd(), idle], tv(10, 0)))
            .join()
            .unwrap();
        assert_eq!(n, 1);
        assert!(!is_set(idle, &set));
    }

    fn select_timeout_clears_the_sets_and_the_timeout_while_others_run() {
        monkey::patch_sockets();
        let ticker = Ticker::start();
        let (r, _w) = pipe();
        let (n, e, set, left) = select_read(&[r.as_raw_fd()], tv(0, 30_000));
        assert!(ticker.ticks() > 0, "nothing ran during the select");
        ticker.stop();
        assert_eq!((n, e), (0, 0));
        assert!(!is_set(r.as_raw_fd(), &set));
        assert_eq!((left.tv_sec, left.tv_usec), (0, 0));
        // No descriptors at all: a sleep on the hub.
        let ticker = Ticker::start();
        let (n, _, _, _) = select_read(&[], tv(0, 20_000));
        assert_eq!(n, 0);
        assert!(ticker.stop() > 0);
    }

    fn select_write_and_except_sets_answer_like_libc() {
        monkey::patch_sockets();
        use std::io::Write;
        // Except set: TCP urgent data, sent by another green thread after five ticks.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let sfd = server.as_raw_fd();
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        let waiter = verdant::spawn(move || {
            let mut except = fd_set_of(&[sfd]);
            let mut t10 = tv(10, 0);
            let null = std::ptr::null_mut();
            // SAFETY: a live set and timeval.
            let n = unsafe { libc::select(sfd + 1, null, null, &mut except, &mut t10) };
            (n, is_set(sfd, &except), t.get())
        });
        let t = ticks.clone();
        let sender = verdant::spawn(move || {
            for _ in 0..5 {
                t.set(t.get() + 1);
                verdant::sleep(Duration::from_millis(2)).unwrap();
            }
            // SAFETY: one byte from a static buffer.
            let n = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
            assert_eq!(n, 1);
            client
        });
        assert_eq!(waiter.join().unwrap(), (1, true, 5));
        let mut client = sender.join().unwrap();
        // Write set: room in the buffer at once; the read set stays clear.
        client.write_all(b"x").unwrap();
        let cfd = client.as_raw_fd();
        let mut read = fd_set_of(&[cfd]);
        let mut write = fd_set_of(&[cfd]);
        // SAFETY: live sets and timeval.
        let n = unsafe { libc::select(cfd + 1, &mut read, &mut write, std::ptr::null_mut(), &mut tv(10, 0)) };
        assert_eq!((n, is_set(cfd, &read), is_set(cfd, &write)), (1, false, true));
        // A hung-up socket only in the except set is not ready for select (only for
        // poll): the hooked call waits out its timeout like the original, while others run.
        let (c, d) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(d);
        let cfd = c.as_raw_fd();
        let select_except = |hooked: bool| {
            let mut except = fd_set_of(&[cfd]);
            let mut t = tv(0, 30_000);
            let null = std::ptr::null_mut();
            // SAFETY: a live set and timeval.
            let n = unsafe {
                if hooked {
                    libc::select(cfd + 1, null, null, &mut except, &mut t)
                } else {
                    original::select(cfd + 1, null, null, &mut except, &mut t)
                }
            };
            (n, is_set(cfd, &except), t.tv_sec, t.tv_usec)
        };
        let ticker = Ticker::start();
        assert_eq!(select_except(true), select_except(false));
        assert_eq!(select_except(true), (0, false, 0, 0));
        assert!(ticker.stop() > 0);
    }

    fn a_verdant_timeout_ends_hooked_waits_with_etimedout() {
        monkey::patch_sockets();
        let (r, _w) = pipe();
        let r = r.as_raw_fd();
        let (n, e, _, left) = verdant::spawn(move || {
            let _t = verdant::Timeout::start(Duration::from_millis(20));
            select_read(&[r], tv(10, 0))
        })
        .join()
        .unwrap();
        assert_eq!((n, e), (-1, libc::ETIMEDOUT));
        let left = Duration::new(left.tv_sec as u64, left.tv_usec as u32 * 1000);
        assert!(left < Duration::from_secs(10) && left > Duration::from_secs(5), "{left:?}");
        let ep = epoll_with(r, 1);
        let ep = ep.as_raw_fd();
        let got = verdant::spawn(move || {
            let _t = verdant::Timeout::start(Duration::from_millis(20));
            epoll_wait_on(ep, -1, false)
        })
        .join()
        .unwrap();
        assert_eq!(got, (-1, libc::ETIMEDOUT, vec![]));
        let got = verdant::spawn(move || {
            let _t = verdant::Timeout::start(Duration::from_millis(20));
            let mut p = libc::pollfd { fd: r, events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd, null timeout and mask.
            let n = unsafe { libc::ppoll(&mut p, 1, std::ptr::null(), std::ptr::null()) };
            (n, last_errno())
        })
        .join()
        .unwrap();
        assert_eq!(got, (-1, libc::ETIMEDOUT));
    }

    fn pselect_waits_on_the_hub_and_leaves_its_timeout_alone() {
        monkey::patch_sockets();
        let ((n, set, t, r), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(|r| {
            let mut set = fd_set_of(&[r]);
            let t = ts(10, 0);
            // SAFETY: live set and timespec, null signal mask.
            let n = unsafe {
                libc::pselect(r + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &t, std::ptr::null())
            };
            (n, set, t, r)
        });
        assert_eq!((n, ticks), (1, 5));
        assert!(is_set(r, &set));
        assert_eq!((t.tv_sec, t.tv_nsec), (10, 0));
        // With a signal mask it passes through (and still answers correctly).
        let (r, w) = pipe();
        write_byte(w.as_raw_fd());
        let mut set = fd_set_of(&[r.as_raw_fd()]);
        // SAFETY: an all-zero sigset_t is the empty mask.
        let mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        let t = ts(10, 0);
        // SAFETY: live set, timespec and mask.
        let n = unsafe {
            libc::pselect(r.as_raw_fd() + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &t, &mask)
        };
        assert_eq!(n, 1);
    }

    fn ppoll_waits_on_the_hub() {
        monkey::patch_sockets();
        let ((n, revents), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(|r| {
            let mut p = libc::pollfd { fd: r, events: libc::POLLIN, revents: 0 };
            let t = ts(10, 0);
            // SAFETY: one live pollfd, a live timespec, null signal mask.
            let n = unsafe { libc::ppoll(&mut p, 1, &t, std::ptr::null()) };
            assert_eq!((t.tv_sec, t.tv_nsec), (10, 0), "ppoll's timeout was modified");
            (n, p.revents)
        });
        assert_eq!((n, revents, ticks), (1, libc::POLLIN, 5));
        // No timeout at all: waits on the hub too.
        let ((n, revents), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(|r| {
            let mut p = libc::pollfd { fd: r, events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd, null timeout and mask.
            let n = unsafe { libc::ppoll(&mut p, 1, std::ptr::null(), std::ptr::null()) };
            (n, p.revents)
        });
        assert_eq!((n, revents, ticks), (1, libc::POLLIN, 5));
        // The timeout passes while others run.
        let ticker = Ticker::start();
        let (r, _w) = pipe();
        let mut p = libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: as above.
        let n = unsafe { libc::ppoll(&mut p, 1, &ts(0, 30_000_000), std::ptr::null()) };
        assert_eq!((n, p.revents), (0, 0));
        assert!(ticker.stop() > 0);
    }

    fn epoll_wait_and_epoll_pwait_wait_on_the_hub() {
        monkey::patch_sockets();
        for pwait in [false, true] {
            let ((n, e, events), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(move |r| {
                let ep = epoll_with(r, 42);
                epoll_wait_on(ep.as_raw_fd(), 10_000, pwait)
            });
            assert_eq!((n, e, ticks), (1, 0, 5), "pwait: {pwait}");
            assert_eq!(events, vec![(libc::EPOLLIN as u32, 42)]);
            // An infinite timeout too.
            let ((n, _, events), ticks) = wait_for_a_byte_written_by_a_ticking_green_thread(move |r| {
                let ep = epoll_with(r, 7);
                epoll_wait_on(ep.as_raw_fd(), -1, pwait)
            });
            assert_eq!((n, ticks, events), (1, 5, vec![(libc::EPOLLIN as u32, 7)]));
            // The timeout passes while others run.
            let ticker = Ticker::start();
            let (r, _w) = pipe();
            let ep = epoll_with(r.as_raw_fd(), 1);
            assert_eq!(epoll_wait_on(ep.as_raw_fd(), 30, pwait), (0, 0, vec![]));
            assert!(ticker.stop() > 0);
        }
    }

    fn errors_match_blocking_libc() {
        monkey::patch_sockets();
        fn cases(patched_path: bool) -> Vec<(i32, i32)> {
            let (r, _w) = pipe();
            let closed = {
                let (a, _b) = pipe();
                a.as_raw_fd()
            };
            let not_epoll = r.as_raw_fd();
            let mut out = Vec::new();
            let mut record = |n: i32| out.push((n, if n < 0 { last_errno() } else { 0 }));
            let select = |nfds, set: *mut libc::fd_set, t: *mut libc::timeval| {
                // SAFETY: live or null arguments.
                unsafe {
                    if patched_path {
                        libc::select(nfds, set, std::ptr::null_mut(), std::ptr::null_mut(), t)
                    } else {
                        original::select(nfds, set, std::ptr::null_mut(), std::ptr::null_mut(), t)
                    }
                }
            };
            let mut set = fd_set_of(&[closed]);
            record(select(closed + 1, &mut set, &mut tv(1, 0)));
            let mut set = fd_set_of(&[r.as_raw_fd()]);
            record(select(-1, &mut set, &mut tv(1, 0)));
            record(select(r.as_raw_fd() + 1, &mut set, &mut tv(-1, 0)));
            record(select(r.as_raw_fd() + 1, &mut set, &mut tv(0, -5)));
            // SAFETY (all below): live or null arguments.
            let (bad_ts, mut p) = (ts(0, 2_000_000_000), libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            record(unsafe {
                if patched_path {
                    libc::pselect(r.as_raw_fd() + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &bad_ts, std::ptr::null())
                } else {
                    original::pselect(r.as_raw_fd() + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &bad_ts, std::ptr::null())
                }
            });
            record(unsafe {
                if patched_path {
                    libc::ppoll(&mut p, 1, &bad_ts, std::ptr::null())
                } else {
                    original::ppoll(&mut p, 1, &bad_ts, std::ptr::null())
                }
            });
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
            for (fd, max) in [(not_epoll, 2), (-1, 2), (closed, 2), (not_epoll, 0)] {
                record(unsafe {
                    if patched_path {
                        libc::epoll_wait(fd, evs.as_mut_ptr(), max, 1000)
                    } else {
                        original::epoll_wait(fd, evs.as_mut_ptr(), max, 1000)
                    }
                });
            }
            out
        }
        let expected = cases(false);
        assert_eq!(
            expected,
            vec![
                (-1, libc::EBADF),
                (-1, libc::EINVAL),
                (-1, libc::EINVAL),
                (-1, libc::EINVAL),
                (-1, libc::EINVAL),
                (-1, libc::EINVAL),
                (-1, libc::EINVAL),
                (-1, libc::EBADF),
                (-1, libc::EBADF),
                (-1, libc::EINVAL),
            ]
        );
        assert_eq!(verdant::spawn(|| cases(true)).join().unwrap(), expected);
        // close and dup2 of bad descriptors, in a green thread and on an OS thread.
        fn fd_cases() -> Vec<(i32, i32)> {
            let mut out = Vec::new();
            let mut record = |n: i32| out.push((n, if n < 0 { last_errno() } else { 0 }));
            // SAFETY: no pointers; the descriptors are invalid or the test's own.
            unsafe {
                record(libc::close(-1));
                record(libc::dup2(-1, 100));
                record(libc::dup3(0, 0, 0));
                record(libc::dup3(0, 100, 12345));
            }
            out
        }
        let expected = vec![(-1, libc::EBADF), (-1, libc::EBADF), (-1, libc::EINVAL), (-1, libc::EINVAL)];
        assert_eq!(verdant::spawn(fd_cases).join().unwrap(), expected);
        assert_eq!(std::thread::spawn(fd_cases).join().unwrap(), expected);
    }

    fn close_wakes_a_green_thread_blocked_in_a_hooked_read_with_ebadf() {
        monkey::patch_sockets();
        // A pipe (waits in the hub for readability, then reads) and a socket (recv).
        let (r, w) = pipe();
        let (s, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, s) = (r.into_raw_fd(), s.into_raw_fd());
        let pipe_reader = verdant::spawn(move || read_byte(r));
        let socket_reader = verdant::spawn(move || {
            let _bound = verdant::Timeout::start(Duration::from_secs(10));
            let mut b = [0u8; 4];
            // SAFETY: a live buffer of the length passed.
            let n = unsafe { libc::recv(s, b.as_mut_ptr().cast(), 4, 0) };
            (n, if n < 0 { last_errno() } else { 0 })
        });
        verdant::sleep(Duration::from_millis(10)).unwrap();
        assert!(!pipe_reader.is_finished() && !socket_reader.is_finished());
        // SAFETY: the test owns both descriptors (their OwnedFds were given up).
        assert_eq!(unsafe { libc::close(r) }, 0);
        assert_eq!(unsafe { libc::close(s) }, 0);
        assert_eq!(pipe_reader.join().unwrap(), (-1, libc::EBADF));
        assert_eq!(socket_reader.join().unwrap(), (-1, libc::EBADF));
        // The number, reused by another pipe (placed there with dup2), starts afresh: a
        // hooked read on it waits for that pipe's data.
        let (r2, w2) = pipe();
        let r2 = r2.into_raw_fd();
        if r2 != r {
            // SAFETY: no pointers; `r` is free and becomes the test's own again, `r2` is
            // the test's own.
            unsafe {
                assert_eq!(libc::dup2(r2, r), r);
                assert_eq!(libc::close(r2), 0);
            }
        }
        let reader = verdant::spawn(move || read_byte(r));
        verdant::sleep(Duration::from_millis(5)).unwrap();
        assert!(!reader.is_finished());
        drop(w);
        write_byte(w2.as_raw_fd());
        assert_eq!(reader.join().unwrap(), (1, 0));
        // SAFETY: the test owns `r`.
        assert_eq!(unsafe { libc::close(r) }, 0);
    }

    fn close_wakes_wait_readable_with_not_connected() {
        monkey::patch_sockets();
        let (r, _w) = pipe();
        let r = r.into_raw_fd();
        let waiter = verdant::spawn(move || verdant::net::wait_readable(r, Some(Duration::from_secs(10))));
        verdant::sleep(Duration::from_millis(5)).unwrap();
        assert!(!waiter.is_finished());
        // SAFETY: the test owns the descriptor.
        assert_eq!(unsafe { libc::close(r) }, 0);
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    }

    fn dup2_and_dup3_onto_a_waited_descriptor_wake_its_waiters() {
        monkey::patch_sockets();
        for use_dup3 in [false, true] {
            let (a, _a_w) = pipe();
            let (b, b_w) = pipe();
            let a = a.into_raw_fd();
            let reader = verdant::spawn(move || read_byte(a));
            verdant::sleep(Duration::from_millis(5)).unwrap();
            assert!(!reader.is_finished());
            // SAFETY: no pointers; `a` is the test's own and becomes a copy of `b`.
            let r = unsafe {
                if use_dup3 {
                    libc::dup3(b.as_raw_fd(), a, libc::O_CLOEXEC)
                } else {
                    libc::dup2(b.as_raw_fd(), a)
                }
            };
            assert_eq!(r, a);
            assert_eq!(reader.join().unwrap(), (-1, libc::EBADF), "dup3: {use_dup3}");
            // `a` now reads pipe b, with a fresh registration.
            let reader = verdant::spawn(move || read_byte(a));
            verdant::sleep(Duration::from_millis(5)).unwrap();
            assert!(!reader.is_finished());
            write_byte(b_w.as_raw_fd());
            assert_eq!(reader.join().unwrap(), (1, 0));
            // SAFETY: the test owns `a`.
            unsafe { libc::close(a) };
        }
        // A dup2/dup3 that does nothing or fails wakes nobody.
        let (a, a_w) = pipe();
        let a = a.as_raw_fd();
        let reader = verdant::spawn(move || read_byte(a));
        verdant::sleep(Duration::from_millis(5)).unwrap();
        // SAFETY: no pointers.
        unsafe {
            assert_eq!(libc::dup2(a, a), a);
            assert_eq!(libc::dup3(a, a, 0), -1);
            assert_eq!(libc::dup2(-1, a), -1);
        }
        verdant::sleep(Duration::from_millis(5)).unwrap();
        assert!(!reader.is_finished());
        write_byte(a_w.as_raw_fd());
        assert_eq!(reader.join().unwrap(), (1, 0));
    }

    fn getaddrinfo_and_getnameinfo_run_on_the_pool_and_answer_like_libc() {
        monkey::patch_dns();
        let expected = lookup_with(true, c"localhost", 0);
        assert_eq!(expected.0, 0);
        assert!(!expected.1.is_empty());
        // Proof that the lookups wait on the hub: the pool gets one worker thread, kept
        // busy by a job that a green thread releases after five ticks, so each lookup
        // queues behind it. A lookup that blocked the OS thread (or did not use the pool)
        // would return before those ticks, or never (the job gives up after 10 s).
        verdant::ThreadPool::global().set_max_threads(1);
        let gated = |lookup: &dyn Fn()| -> u32 {
            let (release, gate) = std::sync::mpsc::channel::<()>();
            let blocker = verdant::spawn_blocking(move || gate.recv_timeout(Duration::from_secs(10)));
            let ticks = Rc::new(Cell::new(0));
            let t = ticks.clone();
            let ticker = verdant::spawn(move || {
                for _ in 0..5 {
                    t.set(t.get() + 1);
                    verdant::sleep(Duration::from_millis(1)).unwrap();
                }
                release.send(()).unwrap();
            });
            lookup();
            let seen = ticks.get();
            ticker.join().unwrap();
            blocker.join().unwrap().expect("the blocking job was released");
            seen
        };
        let ticks = gated(&|| assert_eq!(lookup_with(false, c"localhost", 0), expected));
        assert_eq!(ticks, 5, "getaddrinfo returned before the pool was free");
        let sin = std::mem::size_of::<libc::sockaddr_in>();
        let want = name_of_localhost(true, sin, 0);
        let ticks = gated(&|| assert_eq!(name_of_localhost(false, sin, 0), want));
        assert_eq!(ticks, 5, "getnameinfo returned before the pool was free");
        for _ in 0..5 {
            assert_eq!(lookup_with(false, c"localhost", 0), expected);
        }
        // Errors: the same code (glibc's EAI_BADFLAGS), nothing in the list.
        let bad = lookup_with(true, c"localhost", 0x7fff_0000);
        assert_ne!(bad.0, 0);
        assert_eq!(lookup_with(false, c"localhost", 0x7fff_0000), bad);
        // getnameinfo: names, numbers and an error, buffers compared whole.
        for (salen, flags) in [(sin, 0), (sin, libc::NI_NUMERICHOST | libc::NI_NUMERICSERV), (1, 0)] {
            let want = name_of_localhost(true, salen, flags);
            let got = verdant::spawn(move || name_of_localhost(false, salen, flags))
                .join()
                .unwrap();
            assert_eq!(got, want, "salen {salen}, flags {flags}");
        }
    }

    fn everything_passes_through_before_patching() {
        assert!(!monkey::is_patched(Family::Sockets) && !monkey::is_patched(Family::Dns));
        // Each wait blocks the OS thread: the ticker, spawned first, never gets to run.
        let ticker = Ticker::start();
        let (r, _w) = pipe();
        let r = r.as_raw_fd();
        assert_eq!(select_read(&[r], tv(0, 20_000)).0, 0);
        let mut p = libc::pollfd { fd: r, events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, a live timespec, null mask.
        assert_eq!(unsafe { libc::ppoll(&mut p, 1, &ts(0, 20_000_000), std::ptr::null()) }, 0);
        let ep = epoll_with(r, 1);
        assert_eq!(epoll_wait_on(ep.as_raw_fd(), 20, false).0, 0);
        assert_eq!(lookup_with(false, c"localhost", 0).0, 0);
        assert_eq!(ticker.ticks(), 0, "another green thread ran during a blocking call");
        ticker.stop();
        // SAFETY: no pointers.
        assert_eq!(unsafe { libc::close(-1) }, -1);
        assert_eq!(last_errno(), libc::EBADF);
    }

    fn os_threads_without_a_hub_pass_through_after_patching() {
        monkey::patch_all();
        std::thread::spawn(|| {
            let (r, w) = pipe();
            assert_eq!(select_read(&[r.as_raw_fd()], tv(0, 10_000)).0, 0);
            write_byte(w.as_raw_fd());
            assert_eq!(select_read(&[r.as_raw_fd()], tv(1, 0)).0, 1);
            let ep = epoll_with(r.as_raw_fd(), 3);
            assert_eq!(epoll_wait_on(ep.as_raw_fd(), 1000, false).0, 1);
            assert_eq!(lookup_with(false, c"localhost", 0).0, 0);
        })
        .join()
        .unwrap();
    }
}
