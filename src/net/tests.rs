//! `net` behaviour that needs crate internals: the count of fd waits.

use super::source::FD_WAITS;
use super::{TcpListener, TcpStream};
use std::io::{Read, Write};
use std::time::Duration;

/// A writer far ahead of a slow reader waits in the hub instead of retrying its write in
/// a loop: each of its waits is matched by reads that made room.
#[test]
fn a_writer_blocked_on_a_slow_reader_waits_instead_of_spinning() {
    const TOTAL: usize = 8 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = crate::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut reads) = (0usize, 0u64);
        while got < TOTAL {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "early end of stream");
            assert!(buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((got + i) % 251) as u8));
            got += n;
            reads += 1;
            // Slow: let the writer fill the socket buffers between reads.
            if reads % 8 == 0 {
                crate::sleep(Duration::from_millis(1)).unwrap();
            }
        }
        reads
    });
    let mut conn = TcpStream::connect(addr).unwrap();
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let before = FD_WAITS.with(|n| n.get());
    conn.write_all(&data).unwrap();
    // Both green threads run on this OS thread, so the counter holds the reader's waits
    // too; each reader wait and each writer wait needs the other side to make progress.
    let waits = FD_WAITS.with(|n| n.get()) - before;
    let reads = reader.join().unwrap();
    assert!(
        waits > 0,
        "8 MiB must have filled the socket buffers at least once"
    );
    assert!(
        waits <= 4 * reads + 64,
        "{waits} fd waits for {reads} reads: the writer is spinning"
    );
}

/// A TCP read that returns fewer bytes than asked for drained the socket: the next read
/// waits at once instead of first failing with `EAGAIN`, its wait clears the hub's cached
/// readiness (no poll came in between), and data sent later still wakes it.
#[test]
fn a_short_tcp_read_marks_the_socket_drained_and_the_next_read_still_gets_new_data() {
    use crate::reactor::{Direction, SourceId};
    use std::cell::Cell;
    use std::os::fd::AsRawFd;
    use std::rc::Rc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_id: Rc<Cell<Option<SourceId>>> = Rc::new(Cell::new(None));
    let seen = Rc::clone(&server_id);
    let client = crate::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"ping").unwrap();
        crate::sleep(Duration::from_millis(20)).unwrap();
        // The server waits in its second read: its wait cleared the cached readiness.
        let id = seen.get().expect("the server's registration");
        let readable = crate::hub::fd_may_be_ready(id, Direction::Read);
        s.write_all(b"pong").unwrap();
        readable
    });
    let (mut conn, _) = listener.accept().unwrap();
    let (id, temp) = super::source::registration_for(conn.as_raw_fd()).unwrap();
    assert!(temp.is_none(), "the socket owns its registration");
    server_id.set(Some(id));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 4 {
        let n = conn.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping");
    assert!(crate::hub::fd_may_be_ready(id, Direction::Write));
    let waits = FD_WAITS.with(|n| n.get());
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(
        FD_WAITS.with(|n| n.get()),
        waits + 1,
        "the second read waited once (a drained wait refused as Ready counts twice)"
    );
    assert!(
        !client.join().unwrap(),
        "the drained read's wait left the socket marked readable"
    );
    assert_eq!(conn.read(&mut buf).unwrap(), 0);
}

/// A drained read followed by a poll (the reader slept) before the next read: the poll
/// may have recorded new data, so the next read's wait must not clear the cached
/// readiness (that would lose the edge and hang); it finds the data at once.
#[test]
fn a_poll_between_a_drained_read_and_the_next_read_keeps_the_new_edge() {
    use crate::Timeout;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = crate::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"ping").unwrap();
        crate::sleep(Duration::from_millis(10)).unwrap();
        s.write_all(b"pong").unwrap();
        s
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 4 {
        let n = conn.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping");
    // The hub polls while this sleeps, and sees "pong" arrive.
    crate::sleep(Duration::from_millis(100)).unwrap();
    let _client = client.join().unwrap();
    let waits = FD_WAITS.with(|n| n.get());
    let _bound = Timeout::start(Duration::from_secs(10));
    let n = conn
        .read(&mut buf)
        .expect("the read after the poll lost the edge");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(
        FD_WAITS.with(|n| n.get()),
        waits + 1,
        "one wait, which found the socket ready"
    );
}
