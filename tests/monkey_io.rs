//! The monkey shim's scatter/gather and message hooks (`readv`, `writev`, `recvmsg`,
//! `sendmsg`), the calls it deliberately does not hook (`socket`, `socketpair`, `fcntl`,
//! `ioctl(FIONBIO)`, `setsockopt`) and why they need none: non-blocking descriptors stay
//! non-blocking, blocking ones cooperate again, socket timeouts are honoured.
//!
//! Patching is process-wide and permanent, so every test runs in a child process of its
//! own (this binary re-run with `--exact <name>`), as in `tests/monkey.rs`.
#![cfg(all(feature = "monkey", target_os = "linux"))]

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::rc::Rc;
use std::time::{Duration, Instant};
#[macro_use]
mod support;

use verdant::monkey::{self, Family};

fn last_errno() -> Option<i32> {
    io::Error::last_os_error().raw_os_error()
}

/// A call's result with the errno it left (meaningful when the result is -1).
type Outcome = (isize, Option<i32>);

fn outcome(r: isize) -> Outcome {
    (r, if r == -1 { last_errno() } else { None })
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both descriptors and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// `socketpair(AF_UNIX, ty)` through libc, so `ty` may carry `SOCK_NONBLOCK`.
fn socketpair(ty: i32) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: socketpair just created both descriptors and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn iov(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

fn iov_of(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

/// `readv` into buffers of the given sizes: the result and the bytes read.
fn readv(fd: RawFd, sizes: &[usize]) -> (Outcome, Vec<u8>) {
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
    let iovs: Vec<_> = bufs.iter_mut().map(|b| iov(b)).collect();
    // SAFETY: every iovec points into a live, writable buffer of its length.
    let r = outcome(unsafe { libc::readv(fd, iovs.as_ptr(), iovs.len() as i32) });
    let n = r.0.max(0) as usize;
    (r, bufs.concat()[..n].to_vec())
}

/// `writev` of the given parts.
fn writev(fd: RawFd, parts: &[&[u8]]) -> Outcome {
    let iovs: Vec<_> = parts.iter().map(|p| iov_of(p)).collect();
    // SAFETY: every iovec points into a live buffer of its length.
    outcome(unsafe { libc::writev(fd, iovs.as_ptr(), iovs.len() as i32) })
}

/// `recvmsg` into buffers of the given sizes, no name, no control.
fn recvmsg(fd: RawFd, sizes: &[usize], flags: i32) -> (Outcome, Vec<u8>) {
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
    let mut iovs: Vec<_> = bufs.iter_mut().map(|b| iov(b)).collect();
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = iovs.len() as _;
    // SAFETY: `msg` describes live, writable buffers.
    let r = outcome(unsafe { libc::recvmsg(fd, &mut msg, flags) });
    let n = r.0.max(0) as usize;
    (r, bufs.concat()[..n].to_vec())
}

/// `sendmsg` of the given parts, no name, no control.
fn sendmsg(fd: RawFd, parts: &[&[u8]], flags: i32) -> Outcome {
    let mut iovs: Vec<_> = parts.iter().map(|p| iov_of(p)).collect();
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = iovs.len() as _;
    // SAFETY: `msg` describes live buffers.
    outcome(unsafe { libc::sendmsg(fd, &msg, flags) })
}

fn set_timeout(fd: RawFd, opt: i32, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as _,
        tv_usec: d.subsec_micros() as _,
    };
    // SAFETY: `tv` is a live timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
}

fn set_nonblocking_fcntl(fd: RawFd, on: bool) {
    // SAFETY: F_GETFL/F_SETFL take no pointers.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert_ne!(flags, -1);
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags), 0);
    }
}

fn set_nonblocking_ioctl(fd: RawFd, on: bool) {
    let mut v: libc::c_int = on.into();
    // SAFETY: FIONBIO reads one int through the pointer, a live local.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut v) }, 0);
}

/// Fills a stream socket's send buffer (non-blocking sends until `EAGAIN`).
fn fill(fd: RawFd) -> usize {
    let chunk = [7u8; 65536];
    let mut total = 0;
    loop {
        // SAFETY: `chunk` is readable for its length.
        let n = unsafe { libc::send(fd, chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            assert_eq!(last_errno(), Some(libc::EAGAIN));
            return total;
        }
        total += n as usize;
    }
}

/// A green thread that counts 1 ms sleeps until stopped: its count advancing while
/// another green thread is inside a hooked call proves that call waits on the hub.
struct Ticker {
    ticks: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
    handle: Option<verdant::JoinHandle<()>>,
}

impl Ticker {
    fn start() -> Ticker {
        let (ticks, stop) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let (t, s) = (ticks.clone(), stop.clone());
        let handle = verdant::spawn(move || {
            while !s.get() {
                verdant::sleep(Duration::from_millis(1)).unwrap();
                t.set(t.get() + 1);
            }
        });
        Ticker {
            ticks,
            stop,
            handle: Some(handle),
        }
    }

    /// A reader of the count, for use inside another green thread.
    fn counter(&self) -> Rc<Cell<u64>> {
        self.ticks.clone()
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.set(true);
        if let Some(h) = self.handle.take() {
            if !std::thread::panicking() {
                h.join().unwrap();
            }
        }
    }
}

/// Runs `call` in a green thread next to a [`Ticker`]: its result, and how many ticks
/// happened while it ran.
fn in_green_thread_with_ticker<T: 'static>(call: impl FnOnce() -> T + 'static) -> (T, u64) {
    let ticker = Ticker::start();
    let ticks = ticker.counter();
    verdant::spawn(move || {
        let before = ticks.get();
        let r = call();
        (r, ticks.get() - before)
    })
    .join()
    .unwrap()
}

/// std's `read` on a socket, as an [`Outcome`].
fn std_read(mut s: &UnixStream) -> Outcome {
    match s.read(&mut [0u8; 8]) {
        Ok(n) => (n as isize, None),
        Err(e) => (-1, e.raw_os_error()),
    }
}

/// The calls of `errors_and_edge_cases_match_blocking_libc`, each with its outcome.
fn edge_cases() -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    let (pr, pw) = pipe();
    let mut one = [0u8; 1];
    out.push(("readv bad fd", readv(-1, &[4]).0));
    out.push(("writev bad fd", writev(-1, &[b"x"])));
    out.push(("recvmsg bad fd", recvmsg(-1, &[4], 0).0));
    out.push(("sendmsg bad fd", sendmsg(-1, &[b"x"], 0)));
    // SAFETY: a negative count is rejected before any iovec is read.
    out.push((
        "writev count -1",
        outcome(unsafe { libc::writev(pw.as_raw_fd(), std::ptr::null(), -1) }),
    ));
    let many = vec![iov(&mut one); 1025];
    // SAFETY: 1025 iovecs (all the same one-byte buffer) are rejected: over IOV_MAX.
    out.push((
        "readv 1025 iovecs",
        outcome(unsafe { libc::readv(pr.as_raw_fd(), many.as_ptr(), 1025) }),
    ));
    out.push(("recvmsg on a pipe", recvmsg(pr.as_raw_fd(), &[4], 0).0));
    out.push(("sendmsg on a pipe", sendmsg(pw.as_raw_fd(), &[b"x"], 0)));
    // A zero-byte readv returns 0 at once, even on an empty datagram socket (recvmsg would
    // wait for a datagram).
    let (d, d2) = UnixDatagram::pair().unwrap();
    out.push((
        "readv of 0 bytes on a datagram socket",
        readv(d.as_raw_fd(), &[0, 0]).0,
    ));
    out.push(("readv, no iovecs", readv(d.as_raw_fd(), &[]).0));
    // A datagram, then a readv that truncates it to its buffers (returns the bytes kept).
    d2.send(b"0123456789").unwrap();
    let (r, bytes) = readv(d.as_raw_fd(), &[2, 3]);
    out.push(("readv truncating a datagram", r));
    assert_eq!(bytes, b"01234");
    // recvmsg with MSG_WAITALL on a datagram socket returns one datagram.
    d2.send(b"abc").unwrap();
    d2.send(b"defg").unwrap();
    let waitall = libc::MSG_WAITALL;
    out.push((
        "recvmsg waitall, datagram",
        recvmsg(d.as_raw_fd(), &[8, 8], waitall).0,
    ));
    out.push(("recvmsg, next datagram", recvmsg(d.as_raw_fd(), &[8], 0).0));
    // recv's hook likewise (it lives in hooks.rs; this is the same rule).
    d2.send(b"hij").unwrap();
    d2.send(b"klmn").unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::recv(d.as_raw_fd(), buf.as_mut_ptr().cast(), 16, waitall) };
    out.push(("recv waitall, datagram", outcome(r)));
    // SAFETY: as above.
    let r = unsafe { libc::recv(d.as_raw_fd(), buf.as_mut_ptr().cast(), 16, 0) };
    out.push(("recv, next datagram", outcome(r)));
    out.push((
        "recvmsg dontwait, empty",
        recvmsg(d.as_raw_fd(), &[8], libc::MSG_DONTWAIT).0,
    ));
    // Reads that never wait, even on a blocking socket: an empty error queue, urgent
    // data on a connection that has none.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let errqueue = libc::MSG_ERRQUEUE;
    out.push((
        "recvmsg errqueue, empty",
        recvmsg(udp.as_raw_fd(), &[8], errqueue).0,
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    out.push((
        "recvmsg oob, none",
        recvmsg(tcp.as_raw_fd(), &[8], libc::MSG_OOB).0,
    ));
    // Stream socket whose peer is gone: end of stream, then EPIPE (SIGPIPE is ignored by
    // Rust programs; MSG_NOSIGNAL for sendmsg anyway).
    let (s, s2) = UnixStream::pair().unwrap();
    drop(s2);
    out.push(("readv at end of stream", readv(s.as_raw_fd(), &[4, 4]).0));
    out.push((
        "recvmsg at end of stream",
        recvmsg(s.as_raw_fd(), &[4], 0).0,
    ));
    out.push((
        "writev to a closed peer",
        writev(s.as_raw_fd(), &[b"ab", b"cd"]),
    ));
    out.push((
        "sendmsg to a closed peer",
        sendmsg(s.as_raw_fd(), &[b"ab"], libc::MSG_NOSIGNAL),
    ));
    // Regular files pass through.
    let path = std::env::temp_dir().join(format!("verdant-monkey-io-{}", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    out.push((
        "writev to a file",
        writev(f.as_raw_fd(), &[b"hello ", b"file"]),
    ));
    drop(f);
    let f = std::fs::File::open(&path).unwrap();
    let (r, bytes) = readv(f.as_raw_fd(), &[6, 100]);
    out.push(("readv of a file", r));
    assert_eq!(bytes, b"hello file");
    std::fs::remove_file(&path).unwrap();
    out
}

isolated! {
    fn before_patching_the_calls_block_the_os_thread() {
        assert!(!monkey::is_patched(Family::Sockets));
        // In a green thread, unpatched: a readv with a 100 ms receive timeout blocks the
        // whole OS thread (the ticker cannot run) and fails as libc's does.
        let (a, _b) = UnixStream::pair().unwrap();
        set_timeout(a.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_millis(100));
        let (r, ticks) = in_green_thread_with_ticker(move || readv(a.as_raw_fd(), &[4, 4]).0);
        assert_eq!(r, (-1, Some(libc::EAGAIN)));
        assert_eq!(ticks, 0);
        let (a, _b) = UnixStream::pair().unwrap();
        set_timeout(a.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_millis(100));
        let (r, ticks) = in_green_thread_with_ticker(move || recvmsg(a.as_raw_fd(), &[4], 0).0);
        assert_eq!(r, (-1, Some(libc::EAGAIN)));
        assert_eq!(ticks, 0);
    }

    fn errors_and_edge_cases_match_blocking_libc() {
        // Every case unpatched, then patched in a green thread: same results, same errno.
        let before = edge_cases();
        monkey::patch_all();
        let after = verdant::spawn(edge_cases).join().unwrap();
        assert_eq!(before, after);
        let expect = |name: &str| after.iter().find(|c| c.0 == name).unwrap().1;
        assert_eq!(expect("readv bad fd"), (-1, Some(libc::EBADF)));
        assert_eq!(expect("writev count -1"), (-1, Some(libc::EINVAL)));
        assert_eq!(expect("readv 1025 iovecs"), (-1, Some(libc::EINVAL)));
        assert_eq!(expect("recvmsg on a pipe"), (-1, Some(libc::ENOTSOCK)));
        assert_eq!(expect("sendmsg on a pipe"), (-1, Some(libc::ENOTSOCK)));
        assert_eq!(expect("readv of 0 bytes on a datagram socket"), (0, None));
        assert_eq!(expect("readv truncating a datagram"), (5, None));
        assert_eq!(expect("recvmsg waitall, datagram"), (3, None));
        assert_eq!(expect("recvmsg, next datagram"), (4, None));
        assert_eq!(expect("recv waitall, datagram"), (3, None));
        assert_eq!(expect("recv, next datagram"), (4, None));
        assert_eq!(expect("recvmsg dontwait, empty"), (-1, Some(libc::EAGAIN)));
        assert_eq!(expect("recvmsg errqueue, empty"), (-1, Some(libc::EAGAIN)));
        assert_eq!(expect("recvmsg oob, none"), (-1, Some(libc::EINVAL)));
        assert_eq!(expect("readv at end of stream"), (0, None));
        assert_eq!(expect("writev to a closed peer"), (-1, Some(libc::EPIPE)));
        assert_eq!(expect("readv of a file"), (10, None));
    }

    fn readv_and_recvmsg_on_sockets_wait_on_the_hub() {
        monkey::patch_sockets();
        for use_recvmsg in [false, true] {
            let (a, mut b) = UnixStream::pair().unwrap();
            let ticker = Ticker::start();
            let ticks = ticker.counter();
            let reader = verdant::spawn(move || {
                let before = ticks.get();
                let got = if use_recvmsg {
                    recvmsg(a.as_raw_fd(), &[3, 5], 0)
                } else {
                    readv(a.as_raw_fd(), &[3, 5])
                };
                (got, ticks.get() - before)
            });
            verdant::spawn(move || {
                verdant::sleep(Duration::from_millis(30)).unwrap();
                b.write_all(b"scattered").unwrap();
            })
            .join()
            .unwrap();
            let ((r, bytes), ticks) = reader.join().unwrap();
            assert_eq!(r, (8, None), "recvmsg: {use_recvmsg}");
            assert_eq!(bytes, b"scattere");
            assert!(ticks > 0, "the other green threads ran meanwhile");
        }
    }

    fn recvmsg_gets_the_name_of_a_udp_sender() {
        monkey::patch_sockets();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, from) = (rx.local_addr().unwrap(), tx.local_addr().unwrap());
        let ticker = Ticker::start();
        let ticks = ticker.counter();
        let receiver = verdant::spawn(move || {
            let before = ticks.get();
            let mut buf = [0u8; 16];
            let mut iovs = [iov(&mut buf)];
            // SAFETY: all-zero sockaddr_in and msghdr are valid values.
            let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as _;
            msg.msg_iov = iovs.as_mut_ptr();
            msg.msg_iovlen = 1;
            // SAFETY: `msg` describes live, writable buffers.
            let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, 0) };
            let port = u16::from_be(name.sin_port);
            (n, buf[..n.max(0) as usize].to_vec(), port, ticks.get() - before)
        });
        verdant::spawn(move || {
            verdant::sleep(Duration::from_millis(30)).unwrap();
            tx.send_to(b"datagram", to).unwrap();
        })
        .join()
        .unwrap();
        let (n, bytes, port, ticks) = receiver.join().unwrap();
        assert_eq!((n, bytes.as_slice(), port), (8, &b"datagram"[..], from.port()));
        assert!(ticks > 0);
    }

    fn writev_and_sendmsg_on_a_stream_socket_send_everything() {
        monkey::patch_sockets();
        // 3 MiB in three parts: far more than a socket buffer holds, so the send is
        // partial many times; one OS thread, so the reader can only run if the writer
        // waits on the hub. Blocking libc returns the total: so must the hooks.
        let parts: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i + 1; 1 << 20]).collect();
        for use_sendmsg in [false, true] {
            let (a, mut b) = UnixStream::pair().unwrap();
            let reader = verdant::spawn(move || {
                let mut all = Vec::new();
                b.read_to_end(&mut all).unwrap();
                all
            });
            let p = parts.clone();
            let sent = verdant::spawn(move || {
                let slices: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
                let r = if use_sendmsg {
                    sendmsg(a.as_raw_fd(), &slices, 0)
                } else {
                    writev(a.as_raw_fd(), &slices)
                };
                drop(a);
                r
            })
            .join()
            .unwrap();
            assert_eq!(sent, (3 << 20, None), "sendmsg: {use_sendmsg}");
            assert_eq!(reader.join().unwrap(), parts.concat());
        }
    }

    fn recvmsg_waitall_waits_for_all_the_bytes_on_the_hub() {
        monkey::patch_sockets();
        let (a, mut b) = UnixStream::pair().unwrap();
        let receiver =
            verdant::spawn(move || recvmsg(a.as_raw_fd(), &[4, 6], libc::MSG_WAITALL));
        verdant::spawn(move || {
            b.write_all(b"01234").unwrap();
            verdant::sleep(Duration::from_millis(10)).unwrap();
            b.write_all(b"56").unwrap();
            verdant::sleep(Duration::from_millis(10)).unwrap();
            b.write_all(b"789 and more").unwrap();
        })
        .join()
        .unwrap();
        let (r, bytes) = receiver.join().unwrap();
        assert_eq!((r, bytes.as_slice()), ((10, None), &b"0123456789"[..]));
        // End of stream after some bytes: what arrived, as blocking libc returns.
        let (a, mut b) = UnixStream::pair().unwrap();
        let receiver = verdant::spawn(move || recvmsg(a.as_raw_fd(), &[8], libc::MSG_WAITALL));
        verdant::spawn(move || {
            b.write_all(b"abc").unwrap();
            verdant::sleep(Duration::from_millis(10)).unwrap();
        })
        .join()
        .unwrap();
        let (r, bytes) = receiver.join().unwrap();
        assert_eq!((r, bytes.as_slice()), ((3, None), &b"abc"[..]));
        // MSG_PEEK | MSG_WAITALL returns after the first peek (see the hook's docs): never
        // the same bytes twice, and nothing consumed.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"abc").unwrap();
        let peek = libc::MSG_PEEK | libc::MSG_WAITALL;
        let got = verdant::spawn(move || {
            (recvmsg(a.as_raw_fd(), &[4, 4], peek), recvmsg(a.as_raw_fd(), &[8], 0))
        })
        .join()
        .unwrap();
        assert_eq!(got, (((3, None), b"abc".to_vec()), ((3, None), b"abc".to_vec())));
    }

    fn descriptors_pass_with_sendmsg_and_recvmsg_on_the_hub() {
        monkey::patch_sockets();
        let (a, b) = UnixStream::pair().unwrap();
        let (pr, pw) = pipe();
        let receiver = verdant::spawn(move || {
            let mut buf = [0u8; 4];
            let mut iovs = [iov(&mut buf)];
            // Room for one descriptor (cmsg space is 8-byte aligned on 64-bit Linux).
            let mut control = [0u64; 4];
            // SAFETY: an all-zero msghdr is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iovs.as_mut_ptr();
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: `msg` describes live, writable buffers.
            let n = unsafe { libc::recvmsg(a.as_raw_fd(), &mut msg, libc::MSG_WAITALL) };
            // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
            let fd = unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                assert!(!c.is_null());
                assert_eq!(((*c).cmsg_level, (*c).cmsg_type), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
                OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
            };
            (n, buf, fd)
        });
        verdant::spawn(move || {
            verdant::sleep(Duration::from_millis(10)).unwrap();
            let fd = pr.as_raw_fd();
            let mut control = [0u64; 4];
            let body = b"fd!!";
            let mut iovs = [iov_of(body)];
            // SAFETY: an all-zero msghdr is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iovs.as_mut_ptr();
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic; the header and data written
            // lie inside `control`, which is big enough for one int.
            unsafe {
                msg.msg_controllen = libc::CMSG_SPACE(4) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
            }
            // SAFETY: `msg` describes live buffers and one descriptor.
            assert_eq!(unsafe { libc::sendmsg(b.as_raw_fd(), &msg, 0) }, 4);
        })
        .join()
        .unwrap();
        let (n, buf, received) = receiver.join().unwrap();
        assert_eq!((n, &buf), (4, b"fd!!"));
        // The received descriptor is the pipe's read end.
        std::fs::File::from(pw).write_all(b"via fd").unwrap();
        let mut got = [0u8; 6];
        std::fs::File::from(received).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"via fd");
    }

    fn readv_and_writev_on_pipes_wait_on_the_hub() {
        monkey::patch_sockets();
        let (r, w) = pipe();
        // Fill the pipe (64 KiB by default): the next writev has to wait for the reader.
        // SAFETY: F_GETPIPE_SZ takes no pointer.
        let capacity = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
        let filler = vec![1u8; capacity];
        assert_eq!(writev(w.as_raw_fd(), &[&filler]), (capacity as isize, None));
        let ticker = Ticker::start();
        let ticks = ticker.counter();
        let writer = verdant::spawn(move || {
            let before = ticks.get();
            let r = writev(w.as_raw_fd(), &[b"gather", b"ed"]);
            (r, ticks.get() - before)
        });
        let reader = verdant::spawn(move || {
            verdant::sleep(Duration::from_millis(30)).unwrap();
            let mut all = Vec::new();
            while all.len() < capacity + 8 {
                let (r, bytes) = readv(r.as_raw_fd(), &[1000, 24]);
                assert!(r.0 > 0, "{r:?}");
                all.extend(bytes);
            }
            all
        });
        let (r, ticks) = writer.join().unwrap();
        assert_eq!(r, (8, None));
        assert!(ticks > 0);
        let all = reader.join().unwrap();
        assert_eq!(&all[capacity..], b"gathered");
        // And a readv on an empty pipe waits while others run.
        let (r, w) = pipe();
        let ((got, bytes), ticks) = {
            let ticker = Ticker::start();
            let ticks = ticker.counter();
            let reader = verdant::spawn(move || {
                let before = ticks.get();
                let got = readv(r.as_raw_fd(), &[2, 2]);
                (got, ticks.get() - before)
            });
            verdant::spawn(move || {
                verdant::sleep(Duration::from_millis(20)).unwrap();
                std::fs::File::from(w).write_all(b"pipe").unwrap();
            })
            .join()
            .unwrap();
            reader.join().unwrap()
        };
        assert_eq!((got, bytes.as_slice()), ((4, None), &b"pipe"[..]));
        assert!(ticks > 0);
    }

    fn sock_nonblock_from_socket_and_socketpair_is_respected() {
        // No hook is needed: SOCK_NONBLOCK sets O_NONBLOCK on the open file, which is what
        // the hooks ask fcntl(F_GETFL) about.
        monkey::patch_sockets();
        let (a, _b) = socketpair(libc::SOCK_STREAM | libc::SOCK_NONBLOCK);
        let fd = a.as_raw_fd();
        let got = verdant::spawn(move || {
            let mut one = [0u8; 1];
            vec![
                readv(fd, &[4]).0,
                recvmsg(fd, &[4], 0).0,
                // SAFETY: `one` is writable for its length.
                outcome(unsafe { libc::read(fd, one.as_mut_ptr().cast(), 1) }),
                // SAFETY: as above.
                outcome(unsafe { libc::recv(fd, one.as_mut_ptr().cast(), 1, 0) }),
            ]
        })
        .join()
        .unwrap();
        assert_eq!(got, vec![(-1, Some(libc::EAGAIN)); 4]);
        drop(a);
        // socket(SOCK_NONBLOCK) + connect: EINPROGRESS at once, as non-blocking libc says.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { panic!() };
        let connected = verdant::spawn(move || {
            // SAFETY: socket takes no pointers.
            let s = unsafe {
                libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
            };
            assert!(s >= 0);
            // SAFETY: socket just created `s` and nothing else owns it.
            let s = unsafe { OwnedFd::from_raw_fd(s) };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as _,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a live sockaddr_in of the size passed.
            let r = unsafe {
                libc::connect(
                    s.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as _,
                )
            };
            outcome(r as isize)
        })
        .join()
        .unwrap();
        // Loopback connects can complete at once; either way, it did not wait on the hub.
        assert!(
            connected == (0, None) || connected == (-1, Some(libc::EINPROGRESS)),
            "{connected:?}"
        );
        // And a pair made without SOCK_NONBLOCK cooperates.
        let (a, b) = socketpair(libc::SOCK_STREAM);
        let ((r, bytes), ticks) = {
            let ticker = Ticker::start();
            let ticks = ticker.counter();
            let reader = verdant::spawn(move || {
                let before = ticks.get();
                let got = readv(a.as_raw_fd(), &[8]);
                (got, ticks.get() - before)
            });
            verdant::spawn(move || {
                verdant::sleep(Duration::from_millis(20)).unwrap();
                UnixStream::from(b).write_all(b"late").unwrap();
            })
            .join()
            .unwrap();
            reader.join().unwrap()
        };
        assert_eq!((r, bytes.as_slice()), ((4, None), &b"late"[..]));
        assert!(ticks > 0);
    }

    fn nonblocking_switches_by_fcntl_and_fionbio_are_respected_both_ways() {
        // No fcntl/ioctl hook is needed: the hooks never change O_NONBLOCK on a caller's
        // descriptor (connect's one-call window aside) and ask F_GETFL at each EAGAIN.
        monkey::patch_sockets();
        type Switch = fn(&UnixStream, RawFd, bool);
        let switches: [(&str, Switch); 3] = [
            ("std set_nonblocking", |s, _, on| s.set_nonblocking(on).unwrap()),
            ("fcntl F_SETFL", |_, fd, on| set_nonblocking_fcntl(fd, on)),
            ("ioctl FIONBIO", |_, fd, on| set_nonblocking_ioctl(fd, on)),
        ];
        for (how, switch) in switches {
            let (a, mut b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            let ticker = Ticker::start();
            let ticks = ticker.counter();
            let peer_tx = Rc::new(Cell::new(false));
            let go = peer_tx.clone();
            let user = verdant::spawn(move || {
                switch(&a, fd, true);
                let mut buf = [0u8; 8];
                let nonblocking = vec![
                    readv(fd, &[8]).0,
                    writev(fd, &[b""]),
                    recvmsg(fd, &[8], 0).0,
                    // SAFETY: `buf` is writable for its length.
                    outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) }),
                    outcome(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 8, 0) }),
                    outcome(unsafe {
                        libc::recvfrom(
                            fd,
                            buf.as_mut_ptr().cast(),
                            8,
                            0,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                    }),
                    std_read(&a),
                ];
                // Back to blocking: the next read waits on the hub until the peer writes.
                switch(&a, fd, false);
                go.set(true);
                let before = ticks.get();
                let blocking = recvmsg(fd, &[8], 0);
                let blocking_readv = readv(fd, &[8]);
                (nonblocking, blocking, blocking_readv, ticks.get() - before)
            });
            verdant::spawn(move || {
                while !peer_tx.get() {
                    verdant::sleep(Duration::from_millis(1)).unwrap();
                }
                verdant::sleep(Duration::from_millis(20)).unwrap();
                b.write_all(b"first").unwrap();
                verdant::sleep(Duration::from_millis(20)).unwrap();
                b.write_all(b"second").unwrap();
            })
            .join()
            .unwrap();
            let (nonblocking, blocking, blocking_readv, ticks) = user.join().unwrap();
            let mut expect = vec![(-1, Some(libc::EAGAIN)); 7];
            expect[1] = (0, None);
            assert_eq!(nonblocking, expect, "{how}");
            assert_eq!(blocking, ((5, None), b"first".to_vec()), "{how}");
            assert_eq!(blocking_readv, ((6, None), b"second".to_vec()), "{how}");
            assert!(ticks > 0, "{how}");
        }
        // A pipe made non-blocking with fcntl: EAGAIN; blocking again: waits on the hub.
        let (r, w) = pipe();
        let fd = r.as_raw_fd();
        let user = verdant::spawn(move || {
            set_nonblocking_fcntl(fd, true);
            let nonblocking = readv(fd, &[4]).0;
            set_nonblocking_fcntl(fd, false);
            let blocking = readv(fd, &[4]);
            drop(r);
            (nonblocking, blocking)
        });
        verdant::spawn(move || {
            verdant::sleep(Duration::from_millis(20)).unwrap();
            std::fs::File::from(w).write_all(b"pipe").unwrap();
        })
        .join()
        .unwrap();
        let (nonblocking, blocking) = user.join().unwrap();
        assert_eq!(nonblocking, (-1, Some(libc::EAGAIN)));
        assert_eq!(blocking, ((4, None), b"pipe".to_vec()));
    }

    fn receive_timeouts_end_waits_with_eagain_while_others_run() {
        monkey::patch_sockets();
        let timeout = Duration::from_millis(200);
        type Recv = fn(RawFd) -> Outcome;
        let calls: [(&str, Recv); 5] = [
            ("recv", |fd| {
                let mut b = [0u8; 8];
                // SAFETY: `b` is writable for its length.
                outcome(unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 8, 0) })
            }),
            ("read", |fd| {
                let mut b = [0u8; 8];
                // SAFETY: `b` is writable for its length.
                outcome(unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) })
            }),
            ("readv", |fd| readv(fd, &[4, 4]).0),
            ("recvmsg", |fd| recvmsg(fd, &[8], 0).0),
            ("recvmsg waitall", |fd| recvmsg(fd, &[8], libc::MSG_WAITALL).0),
        ];
        for (name, call) in calls {
            let (a, _b) = UnixStream::pair().unwrap();
            set_timeout(a.as_raw_fd(), libc::SO_RCVTIMEO, timeout);
            let start = Instant::now();
            let (r, ticks) = in_green_thread_with_ticker(move || call(a.as_raw_fd()));
            assert_eq!(r, (-1, Some(libc::EAGAIN)), "{name}");
            assert!(start.elapsed() >= timeout, "{name}: {:?}", start.elapsed());
            assert!(ticks > 0, "{name}");
        }
        // accept honours SO_RCVTIMEO too (blocking libc does: EAGAIN).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_timeout(listener.as_raw_fd(), libc::SO_RCVTIMEO, timeout);
        let start = Instant::now();
        let (r, ticks) = in_green_thread_with_ticker(move || {
            // SAFETY: null address and length pointers are allowed.
            let r = unsafe {
                libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut())
            };
            outcome(r as isize)
        });
        assert_eq!(r, (-1, Some(libc::EAGAIN)));
        assert!(start.elapsed() >= timeout);
        assert!(ticks > 0);
    }

    fn a_receive_timeout_bounds_a_whole_waitall_call_not_each_wait() {
        // The kernel spends SO_RCVTIMEO once per call: a MSG_WAITALL receive that gets a
        // byte now and then returns what arrived when the timeout is used up, even though
        // each single wait was shorter than the timeout.
        monkey::patch_sockets();
        let timeout = Duration::from_millis(300);
        type Recv = fn(RawFd) -> Outcome;
        let calls: [(&str, Recv); 2] = [
            ("recv waitall", |fd| {
                let mut b = [0u8; 10];
                // SAFETY: `b` is writable for its length.
                outcome(unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 10, libc::MSG_WAITALL) })
            }),
            ("recvmsg waitall", |fd| recvmsg(fd, &[5, 5], libc::MSG_WAITALL).0),
        ];
        for (name, call) in calls {
            let (a, b) = UnixStream::pair().unwrap();
            set_timeout(a.as_raw_fd(), libc::SO_RCVTIMEO, timeout);
            // One byte every 200 ms, ten in all: 2 s to fill the buffer.
            let trickle = verdant::spawn(move || {
                for _ in 0..10 {
                    if (&b).write_all(b"x").is_err() {
                        break;
                    }
                    verdant::sleep(Duration::from_millis(200)).unwrap();
                }
            });
            let reader = verdant::spawn(move || call(a.as_raw_fd()));
            let (n, err) = reader.join().unwrap();
            trickle.kill();
            assert_eq!(err, None, "{name}");
            // A timeout restarted at each wait would have waited for all ten bytes.
            assert!((1..10).contains(&n), "{name}: returned {n} bytes");
        }
    }

    fn send_timeouts_end_waits_while_others_run() {
        monkey::patch_sockets();
        let timeout = Duration::from_millis(200);
        type Send = fn(RawFd, &[u8]) -> Outcome;
        let calls: [(&str, Send); 4] = [
            // SAFETY: `b` is readable for its length.
            ("send", |fd, b| outcome(unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), 0) })),
            // SAFETY: as above.
            ("write", |fd, b| outcome(unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) })),
            ("writev", |fd, b| writev(fd, &[&b[..10], &b[10..]])),
            ("sendmsg", |fd, b| sendmsg(fd, &[&b[..10], &b[10..]], 0)),
        ];
        for (name, call) in calls {
            // A full send buffer: nothing is sent, EAGAIN after the timeout.
            let (a, _b) = UnixStream::pair().unwrap();
            fill(a.as_raw_fd());
            set_timeout(a.as_raw_fd(), libc::SO_SNDTIMEO, timeout);
            let start = Instant::now();
            let (r, ticks) = in_green_thread_with_ticker(move || call(a.as_raw_fd(), &[9u8; 1000]));
            assert_eq!(r, (-1, Some(libc::EAGAIN)), "{name}");
            assert!(start.elapsed() >= timeout, "{name}: {:?}", start.elapsed());
            assert!(ticks > 0, "{name}");
            // More than fits: the part that fitted, as blocking libc returns.
            let (a, _b) = UnixStream::pair().unwrap();
            set_timeout(a.as_raw_fd(), libc::SO_SNDTIMEO, timeout);
            let big = vec![9u8; 16 << 20];
            let (r, ticks) = in_green_thread_with_ticker(move || call(a.as_raw_fd(), &big));
            assert!(r.0 > 0 && r.0 < 16 << 20 && r.1.is_none(), "{name}: {r:?}");
            assert!(ticks > 0, "{name}");
        }
    }

    fn connect_honours_the_send_timeout() {
        // A listener with a backlog of 0 that never accepts: its queue holds one
        // connection, later SYNs are dropped and a blocking connect waits. With
        // SO_SNDTIMEO, blocking libc gives up with EINPROGRESS after the timeout.
        monkey::patch_sockets();
        let timeout = Duration::from_millis(200);
        // SAFETY: socket/bind/listen/getsockname on a fresh socket with live locals.
        let (listener, addr) = unsafe {
            let l = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0));
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as _;
            sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(l.as_raw_fd(), (&sin as *const libc::sockaddr_in).cast(), len), 0);
            assert_eq!(libc::listen(l.as_raw_fd(), 0), 0);
            let mut len = len;
            libc::getsockname(l.as_raw_fd(), (&mut sin as *mut libc::sockaddr_in).cast(), &mut len);
            (l, sin)
        };
        let mut kept = Vec::new();
        let mut timed_out = None;
        for _ in 0..8 {
            // SAFETY: socket takes no pointers.
            let s = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)) };
            set_timeout(s.as_raw_fd(), libc::SO_SNDTIMEO, timeout);
            let fd = s.as_raw_fd();
            let start = Instant::now();
            let (r, ticks) = in_green_thread_with_ticker(move || {
                // SAFETY: `addr` is a live sockaddr_in of the size passed.
                let r = unsafe {
                    libc::connect(
                        fd,
                        (&addr as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as _,
                    )
                };
                outcome(r as isize)
            });
            kept.push(s);
            if r != (0, None) {
                timed_out = Some((r, ticks, start.elapsed()));
                break;
            }
        }
        drop(listener);
        let (r, ticks, took) = timed_out.expect("a connect beyond the backlog waited");
        assert_eq!(r, (-1, Some(libc::EINPROGRESS)));
        assert!(took >= timeout, "{took:?}");
        assert!(ticks > 0);
    }

    fn os_threads_without_a_hub_block_as_unpatched() {
        monkey::patch_all();
        let worker = std::thread::spawn(|| {
            let (a, mut b) = UnixStream::pair().unwrap();
            set_timeout(a.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_millis(50));
            let timed_out = (readv(a.as_raw_fd(), &[4]).0, recvmsg(a.as_raw_fd(), &[4], 0).0);
            b.write_all(b"abcd").unwrap();
            let data = readv(a.as_raw_fd(), &[2, 2]);
            let sent = (writev(b.as_raw_fd(), &[b"x", b"y"]), sendmsg(b.as_raw_fd(), &[b"z"], 0));
            (timed_out, data, sent, recvmsg(a.as_raw_fd(), &[8], 0))
        });
        let (timed_out, data, sent, rest) = worker.join().unwrap();
        assert_eq!(timed_out, ((-1, Some(libc::EAGAIN)), (-1, Some(libc::EAGAIN))));
        assert_eq!(data, ((4, None), b"abcd".to_vec()));
        assert_eq!(sent, ((2, None), (1, None)));
        assert_eq!(rest, ((3, None), b"xyz".to_vec()));
    }

    fn a_verdant_timeout_ends_a_hooked_readv_with_etimedout() {
        monkey::patch_all();
        let (a, _b) = UnixStream::pair().unwrap();
        let (r, _) = verdant::spawn(move || {
            let _t = verdant::Timeout::start(Duration::from_millis(30));
            readv(a.as_raw_fd(), &[8])
        })
        .join()
        .unwrap();
        assert_eq!(r, (-1, Some(libc::ETIMEDOUT)));
    }
}
