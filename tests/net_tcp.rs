//! Cooperative TCP: echo round trips, many connections, timeouts, kill, resets, half-close,
//! clones and closing. No test measures time: they check results and which errors occur.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;
use verdant::net::{TcpListener, TcpStream};
use verdant::Timeout;

/// Lets the other green threads run until they block (a few hub turns, and one poll).
fn settle() {
    for _ in 0..4 {
        verdant::yield_now();
    }
    verdant::sleep(Duration::from_millis(1)).unwrap();
    for _ in 0..4 {
        verdant::yield_now();
    }
}

/// An echo server on `listener` that serves `connections` connections, each in its own
/// green thread, echoing until end-of-file.
fn echo_server(listener: TcpListener, connections: usize) -> verdant::JoinHandle<()> {
    verdant::spawn(move || {
        let mut handlers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            handlers.push(verdant::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => conn.write_all(&buf[..n]).unwrap(),
                        Err(e) => panic!("echo handler: {e}"),
                    }
                }
            }));
        }
        for r in verdant::joinall(handlers) {
            r.unwrap();
        }
    })
}

fn echo_once(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    back
}

#[test]
fn echo_round_trip_on_ipv4_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.is_ipv4());
    let server = echo_server(listener, 1);
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(echo_once(addr, &payload), payload);
    server.join().unwrap();
}

#[test]
fn echo_round_trip_on_ipv6_loopback() {
    let listener = match TcpListener::bind("[::1]:0") {
        Ok(l) => l,
        Err(e) => {
            // Skip only for "this host has no IPv6", never for another failure.
            let code = e.raw_os_error();
            assert!(
                code == Some(libc::EADDRNOTAVAIL) || code == Some(libc::EAFNOSUPPORT),
                "binding [::1]:0 failed for another reason than missing IPv6: {e}"
            );
            eprintln!("skipped: IPv6 loopback unavailable ({e})");
            return;
        }
    };
    let addr = listener.local_addr().unwrap();
    assert!(addr.is_ipv6());
    let server = echo_server(listener, 1);
    assert_eq!(echo_once(addr, b"over six"), b"over six");
    server.join().unwrap();
}

#[test]
fn a_thousand_concurrent_echo_connections_check_every_byte() {
    const CONNECTIONS: usize = 1000;
    // Bounded: a hang fails the test instead of stalling the suite.
    let _bound = Timeout::start(Duration::from_secs(120));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = echo_server(listener, CONNECTIONS);
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            verdant::spawn(move || {
                // Distinct content and length per connection.
                let len = 1 + (i * 37) % 6000;
                let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j * 13) as u8).collect();
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&payload).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::with_capacity(len);
                s.read_to_end(&mut back).unwrap();
                assert_eq!(back, payload, "connection {i}");
                back.len()
            })
        })
        .collect();
    let mut bytes = 0;
    for r in verdant::joinall(clients) {
        bytes += r.unwrap();
    }
    server.join().unwrap();
    let expected: usize = (0..CONNECTIONS).map(|i| 1 + (i * 37) % 6000).sum();
    assert_eq!(bytes, expected);
}

#[test]
fn read_timeout_fails_the_read_and_the_stream_stays_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    assert_eq!(
        client
            .set_read_timeout(Some(Duration::ZERO))
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidInput
    );
    client
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    assert_eq!(
        client.read_timeout().unwrap(),
        Some(Duration::from_millis(10))
    );
    let mut buf = [0u8; 4];
    let err = client.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    conn.write_all(b"late").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"late");
}

#[test]
fn write_timeout_fails_a_blocked_write_and_the_stream_stays_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    client
        .set_write_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // Nobody reads: the socket buffers fill up, then a write blocks until the timeout.
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let err = loop {
        match client.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(sent < 1 << 30, "1 GiB written to a peer that reads nothing");
    };
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    // Once the peer reads everything, writing works again.
    let reader = verdant::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while got < sent + 4 {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "early end of stream");
            got += n;
        }
        got
    });
    client.write_all(b"more").unwrap();
    assert_eq!(reader.join().unwrap(), sent + 4);
}

#[test]
fn timeout_around_accept_leaves_the_listener_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let _t = Timeout::start(Duration::from_millis(10));
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
    // Nothing was left registered: another green thread can block in accept now.
    let acceptor = verdant::spawn(move || listener.accept().map(|(_, peer)| peer));
    let client = TcpStream::connect(addr).unwrap();
    assert_eq!(
        acceptor.join().unwrap().unwrap(),
        client.local_addr().unwrap()
    );
}

#[test]
fn killing_a_green_thread_blocked_in_read_closes_its_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let entered = Rc::new(Cell::new(false));
    let e = entered.clone();
    let reader = verdant::spawn(move || {
        let mut client = client;
        e.set(true);
        let mut buf = [0u8; 8];
        let _ = client.read(&mut buf);
        unreachable!("the read must not return");
    });
    settle();
    assert!(entered.get() && !reader.is_finished());
    reader.kill();
    match reader.join() {
        Err(e) => assert!(e.is_killed(), "{e:?}"),
        Ok(()) => unreachable!(),
    }
    // The killed thread's socket was dropped (deregistered, closed): the peer sees EOF.
    let mut buf = [0u8; 8];
    assert_eq!(conn.read(&mut buf).unwrap(), 0);
}

#[test]
fn peer_close_wakes_a_blocked_reader_with_eof() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let reader = verdant::spawn(move || {
        let mut client = client;
        let mut buf = [0u8; 8];
        client.read(&mut buf)
    });
    settle();
    assert!(!reader.is_finished());
    drop(conn);
    assert_eq!(reader.join().unwrap().unwrap(), 0);
}

#[test]
fn peer_reset_wakes_a_blocked_reader_with_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let reader = verdant::spawn(move || {
        let mut client = client;
        // Unread data at the peer makes its close a reset (RST), not a FIN.
        client.write_all(b"never read").unwrap();
        let mut buf = [0u8; 8];
        client.read(&mut buf)
    });
    settle();
    assert!(!reader.is_finished());
    drop(conn);
    let err = reader.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn half_close_peer_reads_eof_and_can_still_write_back() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = verdant::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap(); // ends at the client's shutdown(Write)
        conn.write_all(&request).unwrap();
        conn.write_all(b" (done)").unwrap();
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert!(client.write_all(b"more").is_err(), "the write half is shut");
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "request (done)");
    server.join().unwrap();
}

#[test]
fn clones_share_the_socket_one_reads_while_another_writes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = echo_server(listener, 1);
    let stream = TcpStream::connect(addr).unwrap();
    let writer_half = stream.try_clone().unwrap();
    let writer = verdant::spawn(move || {
        let mut w = writer_half;
        for i in 0..200u8 {
            w.write_all(&[i; 500]).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), 200 * 500);
    assert!(back
        .chunks(500)
        .enumerate()
        .all(|(i, c)| c == [i as u8; 500]));
    server.join().unwrap();
}

#[test]
fn a_second_reader_of_the_same_socket_is_refused_not_hung() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let first = client.try_clone().unwrap();
    let reader = verdant::spawn(move || {
        let mut buf = [0u8; 2];
        (&first).read_exact(&mut buf).map(|()| buf)
    });
    settle();
    let mut buf = [0u8; 2];
    let err = (&client).read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    conn.write_all(b"ok").unwrap();
    assert_eq!(&reader.join().unwrap().unwrap(), b"ok");
}

#[test]
fn dropping_a_clone_does_not_close_but_shutdown_wakes_the_reader() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let clone = client.try_clone().unwrap();
    let reader = verdant::spawn(move || {
        let mut client = client;
        let mut buf = [0u8; 16];
        let first = client.read(&mut buf).map(|n| buf[..n].to_vec());
        let second = client.read(&mut buf);
        (first, second)
    });
    settle();
    let closer = clone.try_clone().unwrap();
    drop(clone);
    settle();
    assert!(
        !reader.is_finished(),
        "dropping a clone must not close the socket"
    );
    conn.write_all(b"still open").unwrap();
    settle();
    // The reader now blocks in its second read; shutdown through another handle wakes it.
    closer.shutdown(Shutdown::Both).unwrap();
    let (first, second) = reader.join().unwrap();
    assert_eq!(first.unwrap(), b"still open");
    assert_eq!(second.unwrap(), 0);
}

#[test]
fn closing_the_last_handle_wakes_a_waiter_on_its_fd_with_an_error() {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_conn, _) = listener.accept().unwrap();
    let fd = client.as_raw_fd();
    let waiter = verdant::spawn(move || verdant::net::wait_readable(fd, None));
    settle();
    assert!(!waiter.is_finished());
    drop(client); // deregisters (waking the waiter), then closes
    let err = waiter.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let err = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn host_names_resolve_without_blocking_the_hub() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let acceptor = verdant::spawn(move || listener.accept().map(|_| ()));
    let ticker = verdant::spawn(move || loop {
        t.set(t.get() + 1);
        verdant::yield_now();
    });
    // "localhost" may resolve to ::1 first (refused: nothing listens there); connect
    // then tries 127.0.0.1, as std does.
    let s = TcpStream::connect(("localhost", port)).unwrap();
    assert_eq!(s.peer_addr().unwrap().port(), port);
    acceptor.join().unwrap().unwrap();
    ticker.kill();
    assert!(ticker.join().unwrap_err().is_killed());
    assert!(ticks.get() > 0, "other green threads run during the lookup");
    let err = TcpStream::connect("no-port-here").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn std_conversions_round_trip_and_options_work() {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let std_client = std::net::TcpStream::connect(addr).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut client = TcpStream::from(std_client);
    client.set_nodelay(true).unwrap();
    assert!(client.nodelay().unwrap());
    let mut std_conn: std::net::TcpStream = conn.into();
    std_conn.write_all(b"std->verdant").unwrap();
    let mut buf = [0u8; 12];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"std->verdant");
    // Raw fd round trip keeps the connection.
    let fd = client.into_raw_fd();
    // SAFETY: `fd` came from into_raw_fd just above and is owned by nothing else.
    let mut client = unsafe { TcpStream::from_raw_fd(fd) };
    assert_eq!(client.as_raw_fd(), fd);
    client.write_all(b"back").unwrap();
    let mut buf = [0u8; 4];
    std_conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
}

#[test]
fn a_green_thread_killed_while_connecting_leaves_nothing_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_secs(60));
        let s = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        let _ = (&s).read(&mut buf);
    });
    settle();
    h.kill();
    assert!(matches!(h.join(), Err(ref e) if e.is_killed()));
    // The hub still works and has no stale waiter: a blocking read elsewhere completes.
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(conn.read(&mut buf).unwrap(), 0);
}

#[test]
fn killing_a_reader_of_a_shared_socket_frees_the_read_side_for_another() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let clone = client.try_clone().unwrap();
    let reader = verdant::spawn(move || {
        let mut buf = [0u8; 8];
        let _ = (&clone).read(&mut buf);
    });
    settle();
    reader.kill();
    assert!(reader.join().unwrap_err().is_killed());
    // The killed reader's wait was removed: this read is not refused as ResourceBusy.
    let second = verdant::spawn(move || {
        let mut buf = [0u8; 2];
        (&client).read_exact(&mut buf).map(|()| buf)
    });
    settle();
    conn.write_all(b"ok").unwrap();
    assert_eq!(&second.join().unwrap().unwrap(), b"ok");
}
