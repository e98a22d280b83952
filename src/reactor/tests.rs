use super::*;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// `n` socket pairs, each registered with a read waiter named `w0`, `w1`, ...: the names,
/// and each pair with its source id.
fn read_waiters(
    r: &mut Reactor<&'static str>,
    n: usize,
) -> (Vec<&'static str>, Vec<(UnixStream, UnixStream, SourceId)>) {
    let names: Vec<&'static str> = (0..n)
        .map(|i| &*Box::leak(format!("w{i}").into_boxed_str()))
        .collect();
    let mut pairs = Vec::new();
    for name in &names {
        let (a, b) = pair();
        let id = r.register(a.as_raw_fd()).unwrap();
        r.clear_ready(id, Direction::Read);
        r.set_waiter(id, Direction::Read, *name).unwrap();
        pairs.push((a, b, id));
    }
    (names, pairs)
}

/// Polls without blocking and returns the woken waiters.
fn poll_now(r: &mut Reactor<&'static str>) -> (Vec<&'static str>, PollReport) {
    let mut woken = Vec::new();
    let report = r.poll(Some(Duration::ZERO), |w| woken.push(w)).unwrap();
    assert_eq!(report.woken, woken.len());
    (woken, report)
}

/// Drains `s` until WouldBlock, as the hub's read loop does.
fn drain(s: &mut UnixStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn new_source_starts_ready_and_waiter_needs_would_block_first() {
    let mut r = Reactor::new().unwrap();
    let (a, _b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    assert!(r.contains(id));
    assert_eq!(r.fd(id), Some(a.as_raw_fd()));
    assert!(r.is_ready(id, Direction::Read));
    assert!(r.is_ready(id, Direction::Write));
    assert_eq!(
        r.set_waiter(id, Direction::Read, "r"),
        Err(WaiterError::Ready("r"))
    );
}

#[test]
fn reader_is_woken_by_data_and_not_before() {
    let mut r = Reactor::new().unwrap();
    let (mut a, mut b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    poll_now(&mut r); // consume the registration edges

    drain(&mut a);
    r.clear_ready(id, Direction::Read);
    r.set_waiter(id, Direction::Read, "reader").unwrap();
    let (woken, _) = poll_now(&mut r);
    assert!(woken.is_empty(), "woken with nothing to read: {woken:?}");
    assert!(!r.is_ready(id, Direction::Read));

    b.write_all(b"ping").unwrap();
    let (woken, report) = poll_now(&mut r);
    assert_eq!(woken, ["reader"]);
    assert!(!report.notified);
    assert!(r.is_ready(id, Direction::Read));
    // The waiter was moved out: nothing is parked any more.
    assert_eq!(r.remove_waiter(id, Direction::Read), None);
}

#[test]
fn readiness_is_cached_across_polls() {
    let mut r: Reactor<&str> = Reactor::new().unwrap();
    let (mut a, mut b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    poll_now(&mut r);
    drain(&mut a);
    r.clear_ready(id, Direction::Read);

    b.write_all(b"0123456789").unwrap();
    poll_now(&mut r);
    // The edge is reported once by the kernel, but the reactor keeps the level.
    for _ in 0..3 {
        poll_now(&mut r);
        assert!(r.is_ready(id, Direction::Read));
    }
    // A partial read leaves data behind: still ready, as it should be.
    let mut buf = [0u8; 4];
    assert_eq!(a.read(&mut buf).unwrap(), 4);
    assert!(r.is_ready(id, Direction::Read));
    drain(&mut a);
    r.clear_ready(id, Direction::Read);
    assert!(!r.is_ready(id, Direction::Read));
    assert!(
        r.is_ready(id, Direction::Write),
        "directions are independent"
    );
}

#[test]
fn writer_is_woken_when_buffer_drains() {
    let mut r = Reactor::new().unwrap();
    let (mut a, mut b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    poll_now(&mut r);
    let chunk = [0u8; 65536];
    loop {
        match a.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    r.clear_ready(id, Direction::Write);
    r.set_waiter(id, Direction::Write, "writer").unwrap();
    assert!(poll_now(&mut r).0.is_empty());
    drain(&mut b);
    let (woken, _) = poll_now(&mut r);
    assert_eq!(woken, ["writer"]);
}

#[test]
fn peer_close_wakes_both_directions() {
    let mut r = Reactor::new().unwrap();
    let (mut a, b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    poll_now(&mut r);
    drain(&mut a);
    r.clear_ready(id, Direction::Read);
    r.clear_ready(id, Direction::Write);
    r.set_waiter(id, Direction::Read, "reader").unwrap();
    r.set_waiter(id, Direction::Write, "writer").unwrap();

    drop(b);
    let (mut woken, _) = poll_now(&mut r);
    woken.sort();
    assert_eq!(woken, ["reader", "writer"]);
    let ready = r.readiness(id).unwrap();
    assert!(
        ready.is_read_closed() && ready.is_write_closed(),
        "{ready:?}"
    );
    assert!(ready.is_readable() && ready.is_writable());
}

#[test]
fn second_waiter_in_same_direction_is_refused() {
    let mut r = Reactor::new().unwrap();
    let (a, _b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    r.clear_ready(id, Direction::Read);
    r.set_waiter(id, Direction::Read, "first").unwrap();
    let err = r.set_waiter(id, Direction::Read, "second").unwrap_err();
    assert_eq!(err, WaiterError::Busy("second"));
    assert_eq!(io::Error::from(err).kind(), ErrorKind::ResourceBusy);
    assert_eq!(r.remove_waiter(id, Direction::Read), Some("first"));
    assert_eq!(r.remove_waiter(id, Direction::Read), None);
    r.set_waiter(id, Direction::Read, "third").unwrap();
}

#[test]
fn deregister_hands_back_waiters_and_makes_id_stale() {
    let mut r = Reactor::new().unwrap();
    let (a, mut b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    assert_eq!(r.registered_count(), 1);
    r.clear_ready(id, Direction::Read);
    r.clear_ready(id, Direction::Write);
    r.set_waiter(id, Direction::Read, "reader").unwrap();
    r.set_waiter(id, Direction::Write, "writer").unwrap();

    assert_eq!(r.deregister(id), (Some("reader"), Some("writer")));
    assert!(r.is_empty());
    assert_eq!(r.deregister(id), (None, None));
    assert!(!r.contains(id));
    assert!(!r.is_ready(id, Direction::Read));
    assert_eq!(r.readiness(id), None);
    assert_eq!(
        r.set_waiter(id, Direction::Read, "late"),
        Err(WaiterError::Stale("late"))
    );
    assert_eq!(r.remove_waiter(id, Direction::Read), None);

    // The slot is reused under a new generation; the old id must not reach the new source.
    let (c, _d) = pair();
    let id2 = r.register(c.as_raw_fd()).unwrap();
    assert_eq!(id2.index, id.index);
    assert_ne!(id2, id);
    r.clear_ready(id, Direction::Read);
    assert!(r.is_ready(id2, Direction::Read));

    // No event from the deregistered fd reaches anyone.
    r.clear_ready(id2, Direction::Read);
    r.set_waiter(id2, Direction::Read, "new").unwrap();
    b.write_all(b"old fd").unwrap();
    let (woken, _) = poll_now(&mut r);
    assert!(!woken.contains(&"new"), "{woken:?}");
}

#[test]
fn stale_kernel_event_is_filtered_by_generation() {
    // An fd that is closed while a dup keeps the kernel registration alive: its events still
    // carry the old token. They must not wake the source now living in the same slot.
    let mut r = Reactor::new().unwrap();
    let (a, mut b) = pair();
    let dup = a.try_clone().unwrap();
    let id = r.register(a.as_raw_fd()).unwrap();
    poll_now(&mut r);
    // Forget the slot without telling the kernel, as if deregistration had failed.
    let fd = a.as_raw_fd();
    drop(a);
    r.deregister(id); // EBADF from the kernel is ignored; `dup` keeps the registration
    let (c, _d) = pair();
    let id2 = r.register(c.as_raw_fd()).unwrap();
    assert_eq!(id2.index, id.index);
    poll_now(&mut r);
    r.clear_ready(id2, Direction::Read);
    r.set_waiter(id2, Direction::Read, "new").unwrap();
    b.write_all(b"to the dup").unwrap();
    let (woken, _) = poll_now(&mut r);
    assert!(woken.is_empty(), "stale event woke {woken:?} (fd {fd})");
    drop(dup);
}

#[test]
fn register_bad_fd_changes_nothing() {
    let mut r: Reactor<()> = Reactor::new().unwrap();
    assert!(r.register(-1).is_err());
    assert!(r.is_empty());
    let (a, _b) = pair();
    let id = r.register(a.as_raw_fd()).unwrap();
    assert_eq!(id.index, 0);
}

#[test]
fn waker_from_another_thread_unblocks_poll_none() {
    let mut r: Reactor<&str> = Reactor::new().unwrap();
    let waker = r.waker();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        waker.wake().unwrap();
    });
    let mut woken = Vec::new();
    let report = loop {
        let report = r.poll(None, |w| woken.push(w)).unwrap();
        if report.notified {
            break report;
        }
    };
    t.join().unwrap();
    assert_eq!(report.woken, 0);
    // Re-armed: the next poll does not report it again, and a new wake is seen.
    assert!(!poll_now(&mut r).1.notified);
    r.waker().wake().unwrap();
    assert!(poll_now(&mut r).1.notified);
}

#[test]
fn many_sources_each_woken_once() {
    let mut r = Reactor::new().unwrap();
    let (names, mut pairs) = read_waiters(&mut r, 64);
    poll_now(&mut r);
    for (_, b, _) in pairs.iter_mut() {
        b.write_all(b"x").unwrap();
    }
    let (mut woken, _) = poll_now(&mut r);
    woken.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(woken, expected);
    for (_, _, id) in pairs {
        assert_eq!(r.deregister(id), (None, None));
    }
    assert!(r.is_empty());
}

#[test]
fn more_ready_sources_than_one_poll_takes_are_each_woken_once_by_later_polls() {
    let mut r = Reactor::new().unwrap();
    let n = EVENTS_PER_POLL + EVENTS_PER_POLL / 2 + 3;
    let (names, mut pairs) = read_waiters(&mut r, n);
    // The registration edges (writable), over as many polls as they take.
    for _ in 0..n.div_ceil(EVENTS_PER_POLL) {
        assert_eq!(poll_now(&mut r).0, Vec::<&str>::new());
    }
    for (_, b, _) in pairs.iter_mut() {
        b.write_all(b"x").unwrap();
    }
    let mut woken = Vec::new();
    let mut polls = 0;
    loop {
        let (w, _) = poll_now(&mut r);
        assert!(
            w.len() <= EVENTS_PER_POLL,
            "one poll woke {} waiters",
            w.len()
        );
        if w.is_empty() {
            break;
        }
        woken.extend(w);
        polls += 1;
    }
    assert_eq!(polls, 2, "{n} events take two polls of {EVENTS_PER_POLL}");
    woken.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(woken, expected, "every waiter woken exactly once");
    for (_, _, id) in pairs {
        assert_eq!(r.deregister(id), (None, None));
    }
}

/// A TCP pair on loopback, both non-blocking: (client, server side).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

#[test]
fn drained_read_clears_readiness_and_new_data_wakes_the_reader() {
    let mut r = Reactor::new().unwrap();
    let (mut client, mut server) = tcp_pair();
    let id = r.register(server.as_raw_fd()).unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(server.read(&mut buf).unwrap(), 5);
    r.clear_ready_drained(id, Direction::Read);
    assert!(!r.is_ready(id, Direction::Read), "a short read drained it");
    assert!(
        r.is_ready(id, Direction::Write),
        "the other direction is untouched"
    );
    r.set_waiter(id, Direction::Read, "reader").unwrap();
    // The edge of the data already read may still be queued: that wake is spurious
    // (readiness is set again), and the reader retries, drains and waits again.
    let (woken, _) = poll_now(&mut r);
    if !woken.is_empty() {
        assert!(matches!(server.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock));
        r.clear_ready(id, Direction::Read);
        r.set_waiter(id, Direction::Read, "reader").unwrap();
    }
    client.write_all(b"more").unwrap();
    let mut woken = Vec::new();
    r.poll(Some(Duration::from_secs(5)), |w| woken.push(w))
        .unwrap();
    assert_eq!(woken, ["reader"], "data after a drained read is a new edge");
    assert_eq!(server.read(&mut buf).unwrap(), 4);
}

#[test]
fn drained_shortcut_is_refused_once_the_read_side_closed() {
    let mut r: Reactor<&'static str> = Reactor::new().unwrap();
    let (mut client, mut server) = tcp_pair();
    let id = r.register(server.as_raw_fd()).unwrap();
    client.write_all(b"bye").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    // Wait until the FIN's event has been seen (it is then consumed: no new edge comes).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !r.readiness(id).unwrap().is_read_closed() {
        assert!(std::time::Instant::now() < deadline, "no EOF event");
        r.poll(Some(Duration::from_millis(10)), |_| {}).unwrap();
    }
    let mut buf = [0u8; 64];
    assert_eq!(server.read(&mut buf).unwrap(), 3);
    r.clear_ready_drained(id, Direction::Read);
    assert!(
        r.is_ready(id, Direction::Read),
        "the EOF is still to be read: the reader must not wait for an edge already consumed"
    );
    assert_eq!(server.read(&mut buf).unwrap(), 0);
}

// kqueue reports no priority data (see `Event::is_priority`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn drained_shortcut_is_refused_while_urgent_data_is_pending() {
    let mut r: Reactor<&'static str> = Reactor::new().unwrap();
    let (mut client, mut server) = tcp_pair();
    let id = r.register(server.as_raw_fd()).unwrap();
    // "ab", urgent "c", then "de": a read stops at the urgent mark, short of "de".
    assert_eq!(
        crate::sys::socket::send_oob(client.as_raw_fd(), b"abc").unwrap(),
        3
    );
    client.write_all(b"de").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while r.readiness(id).unwrap().0 & Readiness::PRIORITY == 0 {
        assert!(std::time::Instant::now() < deadline, "no EPOLLPRI event");
        r.poll(Some(Duration::from_millis(10)), |_| {}).unwrap();
    }
    let mut buf = [0u8; 64];
    assert_eq!(
        server.read(&mut buf).unwrap(),
        2,
        "stops at the urgent mark"
    );
    r.clear_ready_drained(id, Direction::Read);
    assert!(
        r.is_ready(id, Direction::Read),
        "data is left behind the urgent mark: the reader must try again"
    );
    let n = server.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"de");
}
