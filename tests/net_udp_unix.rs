//! Cooperative UDP and Unix-domain sockets, and waiting on arbitrary fds (pipes).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use verdant::net::{UdpSocket, UnixDatagram, UnixListener, UnixStream};
use verdant::Timeout;

/// A fresh directory for socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("verdant-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn udp_send_to_and_recv_from_between_green_threads() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let ponger = verdant::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut buf = [0u8; 64];
    for i in 0..10u8 {
        a.send_to(&[i; 20], b_addr).unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (20, b_addr));
        assert_eq!(buf[..n], [i; 20]);
    }
    ponger.join().unwrap();
    assert_ne!(a_addr, b_addr);
}

#[test]
fn udp_connected_send_recv_and_read_timeout() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        b.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    a.send(b"hello").unwrap();
    assert_eq!(b.peek(&mut buf).unwrap(), 5);
    assert_eq!(b.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn udp_recv_is_interrupted_by_a_timeout_and_kill() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    {
        let _t = Timeout::start(Duration::from_millis(5));
        let mut buf = [0u8; 8];
        assert_eq!(
            s.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }
    let addr = s.local_addr().unwrap();
    let h = verdant::spawn(move || {
        let mut buf = [0u8; 8];
        let _ = s.recv_from(&mut buf);
    });
    verdant::sleep(Duration::from_millis(1)).unwrap();
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    // The killed green thread's socket is closed: its port can be bound again.
    UdpSocket::bind(addr).unwrap();
}

#[test]
fn unix_stream_echo_through_a_listener() {
    let dir = TempDir::new("unix-echo");
    let path = dir.0.join("echo.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = verdant::spawn(move || {
        let mut served = 0;
        for conn in listener.incoming().take(3) {
            let mut conn = conn.unwrap();
            verdant::spawn(move || {
                let mut data = Vec::new();
                conn.read_to_end(&mut data).unwrap();
                conn.write_all(&data).unwrap();
            });
            served += 1;
        }
        served
    });
    let clients: Vec<_> = (0..3u8)
        .map(|i| {
            let path = path.clone();
            verdant::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                let payload = vec![i; 50_000];
                s.write_all(&payload).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).unwrap();
                back == payload
            })
        })
        .collect();
    assert!(verdant::joinall(clients).into_iter().all(|r| r.unwrap()));
    assert_eq!(server.join().unwrap(), 3);
}

#[test]
fn unix_stream_pair_read_timeout_and_clone_shutdown() {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        b.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    b.set_read_timeout(None).unwrap();
    let closer = b.try_clone().unwrap();
    let reader = verdant::spawn(move || b.read(&mut [0u8; 4]));
    verdant::sleep(Duration::from_millis(1)).unwrap();
    assert!(!reader.is_finished());
    closer.shutdown(Shutdown::Read).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), 0);
    drop(a);
}

#[test]
fn unix_datagram_bound_and_paired() {
    let dir = TempDir::new("unix-dgram");
    let server = UnixDatagram::bind(dir.0.join("server.sock")).unwrap();
    let client = UnixDatagram::bind(dir.0.join("client.sock")).unwrap();
    let server_path = dir.0.join("server.sock");
    let echo = verdant::spawn(move || {
        let mut buf = [0u8; 32];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        let from = from.as_pathname().unwrap().to_owned();
        server.send_to(&buf[..n], from).unwrap();
    });
    client.send_to(b"datagram", &server_path).unwrap();
    let mut buf = [0u8; 32];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram");
    assert_eq!(from.as_pathname(), Some(server_path.as_path()));
    echo.join().unwrap();

    let (a, b) = UnixDatagram::pair().unwrap();
    let r = verdant::spawn(move || {
        let mut buf = [0u8; 8];
        let n = b.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    a.send(b"pair").unwrap();
    assert_eq!(r.join().unwrap(), b"pair");
}

#[test]
fn wait_readable_on_a_pipe() {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run cat");
    let mut to_cat = child.stdin.take().unwrap();
    let mut from_cat = child.stdout.take().unwrap();
    // Nothing written yet: a bounded wait times out and leaves nothing registered.
    let err = verdant::net::wait_readable(from_cat.as_raw_fd(), Some(Duration::from_millis(10)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let waiter = verdant::spawn(move || {
        verdant::net::wait_readable(from_cat.as_raw_fd(), None).unwrap();
        let mut buf = [0u8; 5];
        from_cat.read_exact(&mut buf).unwrap();
        buf
    });
    verdant::sleep(Duration::from_millis(1)).unwrap();
    verdant::net::wait_writable(to_cat.as_raw_fd(), None).unwrap();
    to_cat.write_all(b"piped").unwrap();
    assert_eq!(&waiter.join().unwrap(), b"piped");
    drop(to_cat);
    child.wait().unwrap();
}
