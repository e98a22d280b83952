//! Unix-domain sockets: [`UnixListener`], [`UnixStream`], [`UnixDatagram`], the API of
//! `std::os::unix::net` over the hub.

use super::source::Source;
use super::LISTEN_BACKLOG;
use crate::reactor::Direction;
use crate::sys::socket::{self, Domain};
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Longest pause between two attempts to connect to a listener whose backlog is full.
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(50);

/// A Unix-domain server socket whose [`accept`](Self::accept) blocks the green thread.
/// Its listen backlog is [`LISTEN_BACKLOG`] (capped by the kernel).
///
/// ```
/// use std::io::{Read, Write};
/// use verdant::net::{UnixListener, UnixStream};
///
/// let dir = std::env::temp_dir().join(format!("verdant-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("listener.sock");
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path).unwrap();
/// let server = verdant::spawn(move || {
///     let (mut conn, _) = listener.accept().unwrap();
///     conn.write_all(b"hi").unwrap();
/// });
/// let mut client = UnixStream::connect(&path).unwrap();
/// let mut buf = String::new();
/// client.read_to_string(&mut buf).unwrap();
/// assert_eq!(buf, "hi");
/// server.join().unwrap();
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct UnixListener {
    source: Source<std::os::unix::net::UnixListener>,
}

impl UnixListener {
    /// Creates the socket file at `path` and listens on it.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let std = std::os::unix::net::UnixListener::bind(path)?;
        socket::listen(std.as_raw_fd(), LISTEN_BACKLOG)?;
        UnixListener::from_std(std)
    }

    /// Takes over a std listener (made non-blocking and registered with this thread's hub).
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        Ok(UnixListener {
            source: Source::new(listener)?,
        })
    }

    /// Gives back a blocking std listener, deregistered (a `dup` while clones are alive).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixListener> {
        self.source.into_std()
    }

    /// Waits for a connection; honours [`Timeout`](crate::Timeout) and kill.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, addr) = self.source.read_with(|l| l.accept())?;
        Ok((UnixStream::from_std(stream)?, addr))
    }

    /// An endless iterator of [`accept`](Self::accept)ed connections.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// Another handle to the same listener and registration.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        Ok(UnixListener {
            source: self.source.share(),
        })
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

/// The iterator of [`UnixListener::incoming`]: never returns `None`.
///
/// ```
/// use verdant::net::{UnixListener, UnixStream};
///
/// let path = std::env::temp_dir().join(format!("verdant-incoming-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path).unwrap();
/// let p = path.clone();
/// let client = verdant::spawn(move || UnixStream::connect(&p).is_ok());
/// assert!(listener.incoming().next().unwrap().is_ok());
/// assert!(client.join().unwrap());
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A Unix-domain stream whose reads and writes block the green thread. Clones share one
/// registration, as for [`TcpStream`](super::TcpStream).
///
/// ```
/// use std::io::{Read, Write};
/// use verdant::net::UnixStream;
///
/// let (mut a, mut b) = UnixStream::pair().unwrap();
/// let reader = verdant::spawn(move || {
///     let mut s = String::new();
///     b.read_to_string(&mut s).unwrap();
///     s
/// });
/// a.write_all(b"over the pair").unwrap();
/// drop(a);
/// assert_eq!(reader.join().unwrap(), "over the pair");
/// ```
pub struct UnixStream {
    source: Source<std::os::unix::net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket at `path` without blocking the hub. When the listener's
    /// backlog is full (`EAGAIN` on Linux, where nothing signals that room was made) it
    /// retries after a pause that doubles up to 50 ms.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let fd = socket::stream_socket(Domain::Unix)?;
        let mut pause = Duration::from_millis(1);
        loop {
            match socket::connect_unix(fd.as_raw_fd(), path) {
                Ok(()) => return UnixStream::from_std(fd.into()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::sleep(pause)?;
                    pause = (pause * 2).min(CONNECT_RETRY_MAX);
                }
                Err(e) if socket::is_in_progress(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    let stream = UnixStream::from_std(fd.into())?;
                    return stream.finish_connect();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn finish_connect(self) -> io::Result<UnixStream> {
        loop {
            self.source.wait(Direction::Write, None)?;
            if let Some(e) = self.take_error()? {
                return Err(e);
            }
            match self.source.get_ref().peer_addr() {
                Ok(_) => return Ok(self),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair of streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    /// Takes over a std stream (made non-blocking and registered with this thread's hub).
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        Ok(UnixStream {
            source: Source::new(stream)?,
        })
    }

    /// Gives back a blocking std stream, deregistered (a `dup` while clones are alive).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixStream> {
        self.source.into_std()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// Shuts down the read, write or both halves, for every clone (wakes a blocked reader
    /// after `Read` or `Both`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.source.get_ref().shutdown(how)
    }

    /// Another handle to the same socket and registration.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        Ok(UnixStream {
            source: self.source.share(),
        })
    }

    /// Bounds every read (`None`: no bound); a bounded read fails with `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_read_timeout(timeout)
    }

    /// Bounds every write (`None`: no bound).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_write_timeout(timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.source.read_timeout())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.source.write_timeout())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_with(|mut s| s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.source.read_with(|mut s| s.read_vectored(bufs))
    }
}

impl Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.source.write_with(|mut s| s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.source.write_with(|mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A Unix-domain datagram socket whose receives block the green thread.
///
/// ```
/// use verdant::net::UnixDatagram;
///
/// let (a, b) = UnixDatagram::pair().unwrap();
/// let receiver = verdant::spawn(move || {
///     let mut buf = [0; 8];
///     let n = b.recv(&mut buf).unwrap();
///     buf[..n].to_vec()
/// });
/// a.send(b"dgram").unwrap();
/// assert_eq!(receiver.join().unwrap(), b"dgram");
/// ```
pub struct UnixDatagram {
    source: Source<std::os::unix::net::UnixDatagram>,
}

impl UnixDatagram {
    /// Creates the socket file at `path` and binds to it.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::bind(path)?)
    }

    /// A socket bound to no address (it can still send, and receive replies on a pair).
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::unbound()?)
    }

    /// A connected pair of datagram sockets.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a)?, UnixDatagram::from_std(b)?))
    }

    /// Takes over a std socket (made non-blocking and registered with this thread's hub).
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            source: Source::new(socket)?,
        })
    }

    /// Gives back a blocking std socket, deregistered (a `dup` while clones are alive).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixDatagram> {
        self.source.into_std()
    }

    /// Sets the default peer for [`send`](Self::send) (never blocks).
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.source.get_ref().connect(path)
    }

    /// Sends one datagram to the socket at `path`.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.source.write_with(|s| s.send_to(buf, path))
    }

    /// Receives one datagram and its sender's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.source.read_with(|s| s.recv_from(buf))
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.source.write_with(|s| s.send(buf))
    }

    /// Receives one datagram.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_with(|s| s.recv(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().peer_addr()
    }

    /// Shuts down the read, write or both halves, for every clone.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.source.get_ref().shutdown(how)
    }

    /// Another handle to the same socket and registration.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            source: self.source.share(),
        })
    }

    /// Bounds every receive (`None`: no bound); a bounded receive fails with `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_read_timeout(timeout)
    }

    /// Bounds every send that has to wait.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_write_timeout(timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.source.read_timeout())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.source.write_timeout())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

super::fd_conversions!(UnixListener, std::os::unix::net::UnixListener);
super::fd_conversions!(UnixStream, std::os::unix::net::UnixStream);
super::fd_conversions!(UnixDatagram, std::os::unix::net::UnixDatagram);

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::UnixListener")
            .field(&self.source)
            .finish()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::UnixStream")
            .field(&self.source)
            .finish()
    }
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::UnixDatagram")
            .field(&self.source)
            .finish()
    }
}
