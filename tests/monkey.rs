//! The monkey shim with code nobody here wrote: std's blocking sleeps and sockets, and libc
//! called directly, inside green threads, before and after `patch_all()`.
//!
//! Patching is process-wide and permanent, so every test runs in a child process of its
//! own (this binary re-run with `--exact <name>`): the "before patching" tests cannot see
//! another test's `patch_all()`.
#![cfg(all(feature = "monkey", target_os = "linux"))]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
