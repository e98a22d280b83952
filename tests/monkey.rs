//! The monkey shim with code nobody here wrote: std's blocking sleeps and sockets, and libc
//! called directly, inside green threads, before and after `patch_all()`.
//!
//! Patching is process-wide and permanent, so every test runs in a child process of its
//! own (this binary re-run with `--exact <name>`): the "before patching" tests cannot see
//! another test's `patch_all()`.
#![cfg(all(feature = "monkey", target_os = "linux"))]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
#[macro_use]
mod support;

use support::Log;
use verdant::monkey::{self, Family};

/// `n` green threads that log "start", run `wait`, log "end"; joins them all.
fn run_green(n: usize, wait: impl Fn(usize) + Clone + 'static) -> Log {
    let log = Log::default();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (log, wait) = (log.clone(), wait.clone());
            verdant::spawn(move || {
                log.push(i, "start");
                wait(i);
                log.push(i, "end");
            })
        })
        .collect();
    for r in verdant::joinall(handles) {
        r.unwrap();
    }
    log
}

fn last_errno() -> Option<i32> {
    io::Error::last_os_error().raw_os_error()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both descriptors and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

isolated! {
    fn std_sleep_runs_sequentially_before_patching() {
        assert!(!monkey::is_patched(Family::Time));
        let log = run_green(100, |_| std::thread::sleep(Duration::from_millis(2)));
        assert!(log.strictly_sequential(), "{:?}", log.events());
    }

    fn std_sleep_overlaps_after_patch_all() {
        monkey::patch_all();
        let start = Instant::now();
        let log = run_green(100, |_| std::thread::sleep(Duration::from_millis(50)));
        assert!(log.all_started_before_any_ended(), "{:?}", log.events());
        // Sequential would be 5 s; the event order above is the proof, this a sanity bound.
        assert!(start.elapsed() < Duration::from_millis(2500), "{:?}", start.elapsed());
    }

    fn libc_sleeps_overlap_after_patch_time() {
        monkey::patch_time();
        assert!(!monkey::is_patched(Family::Sockets));
        let log = run_green(30, |i| match i % 3 {
            // SAFETY: usleep takes no pointers.
            0 => assert_eq!(unsafe { libc::usleep(20_000) }, 0),
            1 => {
                let ts = libc::timespec { tv_sec: 0, tv_nsec: 20_000_000 };
                // SAFETY: `ts` is a valid timespec; a null `rem` is allowed.
                assert_eq!(unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) }, 0);
            }
            // SAFETY: sleep takes no pointers. sleep(0) returns 0 unslept seconds.
            _ => assert_eq!(unsafe { libc::sleep(0) }, 0),
        });
        // sleep(0) only yields: check the two real sleeps overlapped.
        let ev: Vec<_> = log.events().into_iter().filter(|e| e.0 % 3 != 2).collect();
        let last_start = ev.iter().rposition(|e| e.1 == "start").unwrap();
        let first_end = ev.iter().position(|e| e.1 == "end").unwrap();
        assert!(last_start < first_end, "{ev:?}");
    }

    fn invalid_sleep_arguments_pass_through_with_errno() {
        monkey::patch_all();
        let bad = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
        let got = verdant::spawn(move || {
            // SAFETY: `bad` is a readable timespec (with an out-of-range field).
            let r = unsafe { libc::nanosleep(&bad, std::ptr::null_mut()) };
            (r, last_errno())
        })
        .join()
        .unwrap();
        assert_eq!(got, (-1, Some(libc::EINVAL)));
    }

    fn std_tcp_in_green_threads_interleaves_after_patch_all() {
        monkey::patch_all();
        // A plain std server and plain std clients, all green threads of this OS thread.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = verdant::spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..20 {
                let (mut conn, _) = listener.accept().unwrap();
                handlers.push(verdant::spawn(move || {
                    let mut req = [0u8; 1];
                    conn.read_exact(&mut req).unwrap();
                    std::thread::sleep(Duration::from_millis(200));
                    conn.write_all(&[req[0]; 100_000]).unwrap();
                }));
            }
            for r in verdant::joinall(handlers) {
                r.unwrap();
            }
        });
        let start = Instant::now();
        let log = run_green(20, move |i| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&[i as u8]).unwrap();
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).unwrap();
            assert_eq!(reply.len(), 100_000);
            assert!(reply.iter().all(|&b| b == i as u8));
        });
        server.join().unwrap();
        assert!(log.all_started_before_any_ended(), "{:?}", log.events());
        // 20 sequential 200 ms handlers would take 4 s; the event order above is the proof,
        // this a sanity bound with room for qemu on a loaded machine.
        assert!(start.elapsed() < Duration::from_millis(3000), "{:?}", start.elapsed());
    }

    fn read_on_a_bad_fd_gives_ebadf_everywhere() {
        // SAFETY (all reads here): a zero-length read into a null buffer touches no memory.
        let before = unsafe { libc::read(-1, std::ptr::null_mut(), 0) };
        assert_eq!((before, last_errno()), (-1, Some(libc::EBADF)));
        monkey::patch_all();
        let os_thread = std::thread::spawn(|| {
            let r = unsafe { libc::read(-1, std::ptr::null_mut(), 0) };
            (r, last_errno())
        })
        .join()
        .unwrap();
        assert_eq!(os_thread, (-1, Some(libc::EBADF)));
        let green = verdant::spawn(|| {
            let r = unsafe { libc::read(-1, std::ptr::null_mut(), 0) };
            (r, last_errno())
        })
        .join()
        .unwrap();
        assert_eq!(green, (-1, Some(libc::EBADF)));
        let original = unsafe { monkey::original::read(-1, std::ptr::null_mut(), 0) };
        assert_eq!((original, last_errno()), (-1, Some(libc::EBADF)));
    }

    fn errors_match_blocking_libc_in_green_threads() {
        // Each case run unpatched, then patched in a green thread: same result, same errno.
        fn cases() -> Vec<(isize, Option<i32>)> {
            let (r, _w) = pipe();
            let mut buf = [0u8; 4];
            // SAFETY: `buf` is writable for its length.
            let recv_on_pipe = unsafe { libc::recv(r.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
            let e1 = last_errno();
            // A port nobody listens on: bind one, learn it, close it.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let refused = std::net::TcpStream::connect(port).unwrap_err().raw_os_error();
            let file = std::fs::read("/proc/self/stat").map(|b| b.is_empty() as isize).unwrap();
            vec![(recv_on_pipe, e1), (-1, refused), (file, None)]
        }
        let before = cases();
        monkey::patch_all();
        let after = verdant::spawn(cases).join().unwrap();
        assert_eq!(before, after);
        assert_eq!(after[0], (-1, Some(libc::ENOTSOCK)));
        assert_eq!(after[1], (-1, Some(libc::ECONNREFUSED)));
    }

    fn a_nonblocking_socket_stays_nonblocking() {
        monkey::patch_all();
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = verdant::spawn(move || {
            a.set_nonblocking(true).unwrap();
            a.read(&mut [0u8; 8]).unwrap_err().kind()
        })
        .join()
        .unwrap();
        assert_eq!(err, io::ErrorKind::WouldBlock);
    }

    fn a_socket_read_timeout_is_honoured_while_others_run() {
        monkey::patch_all();
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ticks = Rc::new(RefCell::new(0));
        let t = ticks.clone();
        let ticker = verdant::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(5));
                *t.borrow_mut() += 1;
            }
        });
        let start = Instant::now();
        let err = verdant::spawn(move || {
            a.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            a.read(&mut [0u8; 8]).unwrap_err().kind()
        })
        .join()
        .unwrap();
        ticker.join().unwrap();
        assert_eq!(err, io::ErrorKind::WouldBlock);
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(*ticks.borrow(), 5);
    }

    fn a_verdant_timeout_ends_a_hooked_read_with_etimedout() {
        monkey::patch_all();
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = verdant::spawn(move || {
            let _t = verdant::Timeout::start(Duration::from_millis(30));
            a.read(&mut [0u8; 8]).unwrap_err()
        })
        .join()
        .unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
    }

    fn pipe_reads_and_poll_wait_on_the_hub() {
        monkey::patch_all();
        let (r, w) = pipe();
        let (r2, w2) = pipe();
        let log = Log::default();
        let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
        let reader = verdant::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut buf = [0u8; 5];
            l1.push(0, "start");
            f.read_exact(&mut buf).unwrap();
            l1.push(0, "end");
            buf
        });
        let poller = verdant::spawn(move || {
            let mut p = libc::pollfd { fd: r2.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            l2.push(1, "start");
            // SAFETY: `p` is one live pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 5_000) };
            l2.push(1, "end");
            (n, p.revents & libc::POLLIN != 0)
        });
        let writer = verdant::spawn(move || {
            l3.push(2, "start");
            std::thread::sleep(Duration::from_millis(20));
            std::fs::File::from(w).write_all(b"hello").unwrap();
            std::fs::File::from(w2).write_all(b"x").unwrap();
            l3.push(2, "end");
        });
        writer.join().unwrap();
        assert_eq!(&reader.join().unwrap(), b"hello");
        assert_eq!(poller.join().unwrap(), (1, true));
        assert!(log.all_started_before_any_ended(), "{:?}", log.events());
        // And a poll that times out returns 0 after its timeout.
        let (r3, _w3) = pipe();
        let timed_out = verdant::spawn(move || {
            let mut p = libc::pollfd { fd: r3.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: `p` is one live pollfd.
            unsafe { libc::poll(&mut p, 1, 20) }
        });
        assert_eq!(timed_out.join().unwrap(), 0);
    }

    fn recv_waitall_waits_for_all_the_bytes_on_the_hub() {
        monkey::patch_all();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let receiver = verdant::spawn(move || {
            let mut buf = [0u8; 10];
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(a.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_WAITALL)
            };
            (n, buf)
        });
        verdant::spawn(move || {
            b.write_all(b"01234").unwrap();
            std::thread::sleep(Duration::from_millis(10));
            b.write_all(b"56789").unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(receiver.join().unwrap(), (10, *b"0123456789"));
    }

    fn os_threads_without_a_hub_and_the_hub_itself_pass_through() {
        monkey::patch_all();
        let ticks = Rc::new(RefCell::new(0));
        let t = ticks.clone();
        let ticker = verdant::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(5));
                *t.borrow_mut() += 1;
            }
        });
        // A pool thread has no hub: its std sleep and its pipe read block it, as unpatched.
        // The hub learns of the result through its eventfd, read by the hub greenlet itself
        // (a hooked `read` that must pass straight through).
        let (r, w) = pipe();
        let worker = verdant::spawn_blocking(move || {
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(30));
            let mut buf = [0u8; 2];
            std::fs::File::from(r).read_exact(&mut buf).unwrap();
            (start.elapsed(), buf)
        });
        std::fs::File::from(w).write_all(b"ok").unwrap();
        let (slept, buf) = worker.join().unwrap();
        ticker.join().unwrap();
        assert!(slept >= Duration::from_millis(30));
        assert_eq!(&buf, b"ok");
        assert_eq!(*ticks.borrow(), 3);
    }

    fn a_kill_ends_a_hooked_read_with_ecanceled_then_unwinds() {
        monkey::patch_all();
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let seen = Rc::new(RefCell::new(None));
        let s = seen.clone();
        let victim = verdant::spawn(move || {
            // A kill cannot unwind through the C ABI: the read fails instead...
            *s.borrow_mut() = a.read(&mut [0u8; 8]).unwrap_err().raw_os_error();
            // ...and the kill unwinds at the next verdant blocking call.
            verdant::sleep(Duration::from_secs(5)).unwrap();
            unreachable!("the kill unwinds out of sleep");
        });
        verdant::sleep(Duration::from_millis(10)).unwrap();
        victim.kill();
        assert!(victim.join().unwrap_err().is_killed());
        assert_eq!(*seen.borrow(), Some(libc::ECANCELED));
    }

    fn a_dlopened_c_library_sleeps_and_reads_on_the_hub() {
        let Some(lib) = CLibrary::build() else { return };
        monkey::patch_all();
        let sleep_ms = lib.sleep_ms;
        let start = Instant::now();
        let log = run_green(20, move |_| assert_eq!(sleep_ms(100), 0));
        assert!(log.all_started_before_any_ended(), "{:?}", log.events());
        // Sequential would be 2 s; the event order above is the proof.
        assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
        // C's read on a blocking pipe waits on the hub while a writer green thread runs.
        let (r, w) = pipe();
        let read = lib.read;
        let reader = verdant::spawn(move || {
            let mut buf = [0u8; 8];
            let n = read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
            buf[..n as usize].to_vec()
        });
        verdant::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::File::from(w).write_all(b"from C").unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(reader.join().unwrap(), b"from C");
    }
}

/// A C shared library compiled at test time with the system's C compiler and `dlopen`ed:
/// its `nanosleep` and `read` resolve through the dynamic symbol table to the hooks.
struct CLibrary {
    sleep_ms: extern "C" fn(libc::c_int) -> libc::c_int,
    read: extern "C" fn(libc::c_int, *mut libc::c_void, usize) -> isize,
}

const C_SOURCE: &str = r#"
#include <time.h>
#include <unistd.h>
int vt_sleep_ms(int ms) {
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    return nanosleep(&t, 0);
}
long vt_read(int fd, void *buf, unsigned long n) { return read(fd, buf, n); }
"#;

impl CLibrary {
    /// `None` (with a note on stderr) when no C compiler for this target is installed.
    fn build() -> Option<CLibrary> {
        let dir = std::env::temp_dir().join(format!("verdant-monkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("vt.c");
        let so = dir.join("libvt.so");
        std::fs::write(&src, C_SOURCE).unwrap();
        let cross = format!("{}-linux-gnu-gcc", std::env::consts::ARCH);
        let compilers = [std::env::var("CC").ok(), Some(cross), Some("cc".into())];
        let built = compilers.iter().flatten().any(|cc| {
            std::process::Command::new(cc)
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&so)
                .arg(&src)
                .status()
                .is_ok_and(|s| s.success())
                && Self::open(&so).is_some()
        });
        // The mapping outlives the file: nothing is left in the temporary directory.
        let lib = if built { Self::open(&so) } else { None };
        let _ = std::fs::remove_dir_all(&dir);
        if lib.is_none() {
            eprintln!("skipped: no C compiler that builds a loadable library for this target");
        }
        lib
    }

    fn open(so: &std::path::Path) -> Option<CLibrary> {
        let path = std::ffi::CString::new(so.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `path` is a NUL-terminated string; the library has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return None;
        }
        // SAFETY: `handle` is a live dlopen handle; the names are NUL-terminated.
        let (s, r) = unsafe {
            (
                libc::dlsym(handle, c"vt_sleep_ms".as_ptr()),
                libc::dlsym(handle, c"vt_read".as_ptr()),
            )
        };
        assert!(!s.is_null() && !r.is_null());
        // SAFETY: both symbols are the functions of C_SOURCE, whose C signatures these are;
        // the handle is never closed, so they stay valid.
        unsafe {
            Some(CLibrary {
                sleep_ms: std::mem::transmute::<
                    *mut libc::c_void,
                    extern "C" fn(libc::c_int) -> libc::c_int,
                >(s),
                read: std::mem::transmute::<
                    *mut libc::c_void,
                    extern "C" fn(libc::c_int, *mut libc::c_void, usize) -> isize,
                >(r),
            })
        }
    }
}

/// A connected loopback TCP pair `(client, server)` of plain std sockets.
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    tcp_pair_on(&std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

/// A connected pair `(client, server)` through `listener`: the client socket is created
/// first, so it takes the lowest free descriptor number.
fn tcp_pair_on(listener: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Runs `body` in a green thread after `patch_all()`, within a 30 s `Timeout`: whatever
/// hangs on a stale registration fails the test instead of hanging it.
fn patched_green_thread(body: impl FnOnce() + 'static) {
    monkey::patch_all();
    verdant::spawn(move || {
        let _hang = verdant::Timeout::start(Duration::from_secs(30));
        body()
    })
    .join()
    .unwrap();
}

/// Writes `bytes` to `peer` after `delay`, from a green thread of its own.
fn write_later(
    mut peer: std::net::TcpStream,
    delay: Duration,
    bytes: &'static [u8],
) -> verdant::JoinHandle<std::net::TcpStream> {
    verdant::spawn(move || {
        std::thread::sleep(delay);
        peer.write_all(bytes).unwrap();
        peer
    })
}

/// A connected pair `(client, server)` through `listener` whose server socket has a kept
/// registration: a read of it waited (for "old", written 20 ms later) and drained it.
fn kept_pair_on(listener: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
    let (client, mut server) = tcp_pair_on(listener);
    let writer = write_later(client, Duration::from_millis(20), b"old");
    assert_eq!(read_or_hang(&mut server).unwrap(), b"old");
    (writer.join().unwrap(), server)
}

/// Gives `fresh`'s socket the free descriptor number `fd` by a raw `dup3` system call, which
/// no hook sees or counts, and returns the new descriptor as a std stream.
fn reuse_number_raw(fresh: &std::net::TcpStream, fd: RawFd) -> std::net::TcpStream {
    // SAFETY: `fresh` is open and `fd` is free; the new descriptor is owned by the result.
    let reused = unsafe { libc::syscall(libc::SYS_dup3, fresh.as_raw_fd(), fd, 0) };
    assert_eq!(reused, fd as libc::c_long, "{}", io::Error::last_os_error());
    // SAFETY: `fd` is the new descriptor, owned by nothing else.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// A read of up to 64 bytes in the current green thread, ended with `ETIMEDOUT` after
/// 10 s: a read that waits on a registration nobody fires fails instead of hanging.
fn read_or_hang(s: &mut std::net::TcpStream) -> io::Result<Vec<u8>> {
    let _t = verdant::Timeout::start(Duration::from_secs(10));
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

// The socket hooks keep a descriptor's registration, its O_NONBLOCK flag, its timeouts and
// its drained state between calls (src/monkey/cache.rs): each is changed here behind the
// cache's back, the way callers do, and the next call must behave as unpatched libc would.
isolated! {
    fn o_nonblock_set_after_hooked_waits_is_honoured_via_fcntl_ioctl_and_dups() {
        patched_green_thread(|| {
            let (client, mut server) = tcp_pair();
            // Two waiting reads, the second after a short (draining) read: the registration
            // is kept and the cache says "blocking" and "drained".
            let writer = write_later(client, Duration::from_millis(20), b"one");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"one");
            let client = writer.join().unwrap();
            let writer = write_later(client, Duration::from_millis(20), b"two");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"two");
            let client = writer.join().unwrap();
            let fd = server.as_raw_fd();
            // fcntl(F_SETFL) on a dup of the descriptor: the flag is the open file's.
            // SAFETY: `fd` is open; the dup is closed below.
            let dup = unsafe { libc::dup(fd) };
            assert!(dup >= 0);
            // SAFETY: F_GETFL/F_SETFL take no pointer.
            unsafe {
                let flags = libc::fcntl(dup, libc::F_GETFL);
                assert_eq!(libc::fcntl(dup, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
            }
            // A read that waited would get these bytes instead of WouldBlock.
            let late = write_later(client, Duration::from_millis(200), b"three");
            let err = read_or_hang(&mut server).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
            // Back to blocking with ioctl(FIONBIO) (std's set_nonblocking): the read waits.
            server.set_nonblocking(false).unwrap();
            assert_eq!(read_or_hang(&mut server).unwrap(), b"three");
            // And non-blocking again with ioctl, after a wait and a short read.
            server.set_nonblocking(true).unwrap();
            let client = write_later(late.join().unwrap(), Duration::from_millis(200), b"four");
            let err = read_or_hang(&mut server).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
            client.join().unwrap();
            // SAFETY: `dup` is this test's own descriptor.
            assert_eq!(unsafe { libc::close(dup) }, 0);
        });
    }

    fn a_descriptor_closed_by_a_raw_system_call_and_reused_still_waits_right() {
        patched_green_thread(|| {
            // Created first: no hooked close of the number below may forget its entry.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let (client, server) = kept_pair_on(&listener);
            // Closed behind the close hook: the kept registration of this number is stale.
            let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
            // SAFETY: `fd` is this test's own (taken from the stream above).
            assert_eq!(unsafe { libc::syscall(libc::SYS_close, fd) }, 0);
            // The lowest free number, the old one, for the new client.
            let (mut reader, writer) = tcp_pair_on(&listener);
            assert_eq!(reader.as_raw_fd(), fd, "the new socket did not reuse the number");
            drop(client);
            // Waits on the reused number: a stale registration would never fire.
            let writer = write_later(writer, Duration::from_millis(20), b"new");
            assert_eq!(read_or_hang(&mut reader).unwrap(), b"new");
            let writer = write_later(writer.join().unwrap(), Duration::from_millis(20), b"again");
            assert_eq!(read_or_hang(&mut reader).unwrap(), b"again");
            writer.join().unwrap();
        });
    }

    fn a_socket_closed_on_another_os_thread_then_reused_behind_the_hooks_still_waits_right() {
        patched_green_thread(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // `close`, and `fclose` of an `fdopen`ed stream, whose `close` glibc makes
            // internally, past the close hook.
            for with_fclose in [false, true] {
                let (client, server) = kept_pair_on(&listener);
                let (fresh, mut writer) = tcp_pair_on(&listener);
                let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
                // Closed on another OS thread: its hooks cannot reach this thread's table.
                std::thread::spawn(move || {
                    if with_fclose {
                        // SAFETY: `fd` is this test's own; the stream takes it over.
                        let stream = unsafe { libc::fdopen(fd, c"r+".as_ptr()) };
                        assert!(!stream.is_null(), "fdopen: {}", io::Error::last_os_error());
                        // SAFETY: a stream just opened.
                        assert_eq!(unsafe { libc::fclose(stream) }, 0);
                    } else {
                        // SAFETY: `fd` is this test's own.
                        assert_eq!(unsafe { libc::close(fd) }, 0);
                    }
                })
                .join()
                .unwrap();
                drop(client);
                // The number reused by a call no hook sees (a raw dup3 of another socket):
                // only what the closing hook counted says the kept registration is stale.
                let mut reader = reuse_number_raw(&fresh, fd);
                // Waits on the reused number, drained and not: a stale registration would
                // never fire.
                let late = write_later(writer, Duration::from_millis(20), b"new");
                assert_eq!(read_or_hang(&mut reader).unwrap(), b"new");
                writer = late.join().unwrap();
                let late = write_later(writer, Duration::from_millis(20), b"again");
                assert_eq!(read_or_hang(&mut reader).unwrap(), b"again");
                late.join().unwrap();
                drop(fresh);
            }
        });
    }

    fn a_socket_closed_and_reused_past_every_hook_wakes_within_a_sweep() {
        patched_green_thread(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let (client, server) = kept_pair_on(&listener);
            let (fresh, writer) = tcp_pair_on(&listener);
            let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
            // Closed and reused by raw system calls: no hook sees or counts the number.
            // SAFETY: `fd` is this test's own (taken from the stream above).
            assert_eq!(unsafe { libc::syscall(libc::SYS_close, fd) }, 0);
            drop(client);
            let mut reader = reuse_number_raw(&fresh, fd);
            // The read trusts the old file's registration, which reports nothing; the
            // sweep (every second) proves it and registers the new file: late, not never.
            let late = write_later(writer, Duration::from_millis(20), b"new");
            assert_eq!(read_or_hang(&mut reader).unwrap(), b"new");
            // From then on the number's registration is the new file's.
            let late = write_later(late.join().unwrap(), Duration::from_millis(20), b"again");
            assert_eq!(read_or_hang(&mut reader).unwrap(), b"again");
            late.join().unwrap();
            drop(fresh);
        });
    }

    fn a_read_of_a_socket_another_os_thread_closes_ends_with_ebadf_at_the_sweep() {
        patched_green_thread(|| {
            let (_client, server) = tcp_pair();
            let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
            // Its close hook cannot reach this thread's waiters; the sweep finds the number
            // closed and ends the wait.
            let closer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // SAFETY: `fd` is this test's own (taken from the stream above).
                assert_eq!(unsafe { libc::close(fd) }, 0);
            });
            let mut buf = [0u8; 16];
            // SAFETY: a live buffer of the length passed.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            assert_eq!((n, last_errno()), (-1, Some(libc::EBADF)));
            closer.join().unwrap();
        });
    }

    fn a_read_timeout_changed_between_two_reads_is_honoured() {
        patched_green_thread(|| {
            let (client, mut server) = tcp_pair();
            // No timeout: a wait of 20 ms, and the cache has "no timeout".
            let writer = write_later(client, Duration::from_millis(20), b"one");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"one");
            let client = writer.join().unwrap();
            server
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let start = Instant::now();
            let err = read_or_hang(&mut server).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
            assert!(start.elapsed() >= Duration::from_millis(50));
            // Longer than the old timeout, and no timeout at all: the read waits for data.
            server.set_read_timeout(None).unwrap();
            let client = write_later(client, Duration::from_millis(150), b"two");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"two");
            client.join().unwrap();
        });
    }

    fn close_wakes_a_reader_of_a_kept_registration_and_the_number_starts_afresh() {
        patched_green_thread(|| {
            let (client, mut server) = tcp_pair();
            let writer = write_later(client, Duration::from_millis(20), b"one");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"one");
            let client = writer.join().unwrap();
            let fd = server.as_raw_fd();
            // The second read waits on the kept registration; the close hook wakes it.
            let reader = verdant::spawn(move || {
                let mut buf = [0u8; 8];
                // SAFETY: a live buffer of the length passed.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                (n, last_errno())
            });
            std::thread::sleep(Duration::from_millis(20));
            drop(server);
            assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
            drop(client);
            let (client, server) = tcp_pair();
            let (mut reader, writer) = if server.as_raw_fd() == fd {
                (server, client)
            } else {
                (client, server)
            };
            let writer = write_later(writer, Duration::from_millis(20), b"new");
            assert_eq!(read_or_hang(&mut reader).unwrap(), b"new");
            writer.join().unwrap();
        });
    }

    fn drained_tcp_reads_wait_for_the_next_bytes_and_full_reads_do_not_drain() {
        patched_green_thread(|| {
            let (mut client, mut server) = tcp_pair();
            // A read that fills the buffer leaves bytes behind (no new edge will come for
            // them): the next read must take them without waiting.
            client.write_all(&[7u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut buf = [0u8; 64];
            assert_eq!(server.read(&mut buf).unwrap(), 64);
            assert_eq!(read_or_hang(&mut server).unwrap(), [7u8; 36]);
            // That read was short: drained. Bytes that arrive later wake the next read,
            // including while the reader is not waiting yet.
            client.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(read_or_hang(&mut server).unwrap(), b"x");
            let writer = write_later(client, Duration::from_millis(20), b"y");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"y");
            let client = writer.join().unwrap();
            drop(client);
            assert_eq!(read_or_hang(&mut server).unwrap(), b"");
        });
    }

    fn a_std_socket_that_hooked_calls_waited_on_converts_to_verdant_net() {
        monkey::patch_all();
        verdant::spawn(|| {
            let _hang = verdant::Timeout::start(Duration::from_secs(30));
            let (client, mut server) = tcp_pair();
            let writer = write_later(client, Duration::from_millis(20), b"std");
            assert_eq!(read_or_hang(&mut server).unwrap(), b"std");
            // The kept registration of the hooked wait must not make the socket's own
            // registration fail (EEXIST).
            let mut server = verdant::net::TcpStream::from_std(server).unwrap();
            let client = writer.join().unwrap();
            let writer = write_later(client, Duration::from_millis(20), b"net");
            let mut buf = [0u8; 8];
            let n = server.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"net");
            writer.join().unwrap();
        })
        .join()
        .unwrap();
    }

    fn kept_registrations_do_not_hide_a_wait_nothing_can_end() {
        monkey::patch_all();
        // Hooked waits on both ends leave their registrations kept with the hub.
        let (client, mut server) = tcp_pair();
        let writer = write_later(client, Duration::from_millis(20), b"kept");
        assert_eq!(read_or_hang(&mut server).unwrap(), b"kept");
        let _client = writer.join().unwrap();
        // They are not waiters: the hub still sees that nothing can set this event.
        assert_eq!(
            verdant::Event::new().wait(),
            Err(verdant::WaitError::WouldBlockForever)
        );
    }
}
