//! StreamServer: handlers per connection, the connection bound, graceful stop, and the
//! accept loop surviving EMFILE (in a child process with a lowered RLIMIT_NOFILE).

mod support;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use verdant::net::TcpStream;
use verdant::StreamServer;

fn echo(mut conn: TcpStream, _peer: std::net::SocketAddr) {
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    back
}

#[test]
fn handler_runs_per_connection_with_peer_address() {
    let peers = Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = peers.clone();
    let server = StreamServer::bind("127.0.0.1:0", move |conn, peer| {
        seen.borrow_mut().push(peer);
        echo(conn, peer)
    })
    .unwrap();
    server.start().unwrap();
    assert!(server.start().is_err(), "a second start is refused");
    let addr = server.local_addr().unwrap();
    let clients: Vec<_> = (0..20u8)
        .map(|i| {
            verdant::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let local = s.local_addr().unwrap();
                assert_eq!(round_trip(&mut s, &[i; 100]), [i; 100]);
                local
            })
        })
        .collect();
    let mut locals: Vec<_> = verdant::joinall(clients)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    server.stop(Duration::from_secs(1));
    assert!(server.is_stopped());
    assert_eq!(server.connection_count(), 0);
    let mut peers = peers.borrow().clone();
    locals.sort();
    peers.sort();
    assert_eq!(locals, peers);
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn max_connections_bounds_concurrent_handlers() {
    let (now, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (n, p) = (now.clone(), peak.clone());
    let server = StreamServer::bind("127.0.0.1:0", move |conn, peer| {
        n.set(n.get() + 1);
        p.set(p.get().max(n.get()));
        verdant::sleep(Duration::from_millis(5)).unwrap();
        echo(conn, peer);
        n.set(n.get() - 1);
    })
    .unwrap()
    .max_connections(3);
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let clients: Vec<_> = (0..12u8)
        .map(|i| {
            verdant::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                round_trip(&mut s, &[i; 10]) == [i; 10]
            })
        })
        .collect();
    assert!(verdant::joinall(clients).into_iter().all(|r| r.unwrap()));
    server.stop(Duration::from_secs(1));
    assert_eq!(peak.get(), 3);
}

#[test]
fn stop_lets_handlers_finish_then_kills_the_rest() {
    let finished = Rc::new(Cell::new(0));
    let dropped = Rc::new(Cell::new(0));
    struct CountDrop(Rc<Cell<u32>>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let (f, d) = (finished.clone(), dropped.clone());
    let server = StreamServer::bind("127.0.0.1:0", move |mut conn, _| {
        let _guard = CountDrop(d.clone());
        let mut ms = [0u8; 1];
        conn.read_exact(&mut ms).unwrap();
        verdant::sleep(Duration::from_millis(u64::from(ms[0]) * 10)).unwrap();
        f.set(f.get() + 1);
        conn.write_all(b"done").unwrap();
    })
    .unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    // One handler finishes in 10 ms, one would take 2.5 s.
    let mut quick = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    quick.write_all(&[1]).unwrap();
    slow.write_all(&[250]).unwrap();
    while server.connection_count() < 2 {
        verdant::sleep(Duration::from_millis(1)).unwrap();
    }
    let t0 = Instant::now();
    server.stop(Duration::from_millis(200));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(190), "stop waited {took:?}");
    assert!(took < Duration::from_secs(2), "stop waited {took:?}");
    assert_eq!(finished.get(), 1);
    assert_eq!(dropped.get(), 2, "the killed handler unwound");
    let mut buf = Vec::new();
    quick.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"done");
    buf.clear();
    assert_eq!(slow.read_to_end(&mut buf).unwrap_or(0), 0, "killed: closed");
    server.stop(Duration::ZERO);
}

#[test]
fn serve_forever_returns_after_stop() {
    let server = Rc::new(StreamServer::bind("127.0.0.1:0", echo).unwrap());
    let addr = server.local_addr().unwrap();
    let s = server.clone();
    let client = verdant::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        assert_eq!(round_trip(&mut c, b"ping"), b"ping");
        drop(c);
        s.stop(Duration::from_secs(1));
    });
    server.serve_forever().unwrap();
    client.join().unwrap();
    assert!(server.is_stopped());
    assert!(server.start().is_err(), "a stopped server does not restart");
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer, which is valid for writes.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn set_fd_limit(limit: u64) {
    let rl = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both pointers are to valid rlimit structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let rl = libc::rlimit {
            rlim_max: old.rlim_max,
            ..rl
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
}

#[test]
fn accept_backs_off_on_emfile_and_recovers() {
    if support::is_child("emfile") {
        emfile_scenario();
        return;
    }
    let child = support::run_child("accept_backs_off_on_emfile_and_recovers", "emfile");
    assert_eq!(child.signal(), None, "{}", child.transcript());
    assert!(child.status.success(), "{}", child.transcript());
    assert!(
        child.stdout.contains("emfile: ok"),
        "{}",
        child.transcript()
    );
}

fn emfile_scenario() {
    set_fd_limit(256);
    let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let mut first = TcpStream::connect(addr).unwrap();
    assert_eq!(round_trip(&mut first, b"before"), b"before");

    // Use up every fd but one, connect with that one: the kernel completes the handshake
    // (backlog), but the server's accept fails with EMFILE.
    let mut hogs = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hogs.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    hogs.pop();
    let mut client = TcpStream::connect(addr).unwrap();
    // The accept loop tried, failed, and now backs off: it must not burn the CPU.
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    verdant::sleep(Duration::from_millis(500)).unwrap();
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    assert!(
        cpu < wall / 4,
        "accept loop spun while out of fds: {cpu:?} CPU in {wall:?}"
    );
    // Open connections are still served.
    assert_eq!(round_trip(&mut first, b"during"), b"during");
    assert_eq!(
        server.connection_count(),
        1,
        "nothing accepted while out of fds"
    );

    // Free the fds: the pending connection is accepted and served.
    drop(hogs);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(round_trip(&mut client, b"after"), b"after");
    let mut third = TcpStream::connect(addr).unwrap();
    assert_eq!(round_trip(&mut third, b"again"), b"again");
    drop((first, client, third));
    server.stop(Duration::from_secs(1));
    println!("emfile: ok");
}
