//! TCP: [`TcpListener`] and [`TcpStream`], std's API over the hub.

use super::resolve::{resolve, ToSocketAddrs};
use super::source::Source;
use super::LISTEN_BACKLOG;
use crate::reactor::Direction;
use crate::sys::socket::{self, Domain};
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A TCP server socket whose [`accept`](Self::accept) blocks the green thread, not the
/// OS thread. Its listen backlog is [`LISTEN_BACKLOG`] (capped by the kernel).
///
/// Like every verdant socket it belongs to the OS thread (hub) that created it, so it is
/// `!Send`; move a `std::net::TcpListener` between threads instead
/// (`into_std` / [`from_std`](Self::from_std)).
///
/// ```
/// use std::io::{Read, Write};
/// use verdant::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let server = verdant::spawn(move || {
///     let (mut conn, _peer) = listener.accept().unwrap();
///     let mut buf = [0; 5];
///     conn.read_exact(&mut buf).unwrap();
///     conn.write_all(&buf).unwrap();
/// });
/// let mut client = TcpStream::connect(addr).unwrap();
/// client.write_all(b"hello").unwrap();
/// let mut echo = [0; 5];
/// client.read_exact(&mut echo).unwrap();
/// assert_eq!(&echo, b"hello");
/// server.join().unwrap();
/// ```
pub struct TcpListener {
    source: Source<std::net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` (each address in turn until one works, like std) and listens.
    ///
    /// ```
    /// let l = verdant::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// assert_ne!(l.local_addr().unwrap().port(), 0);
    /// ```
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let addrs = resolve(&addr)?;
        let std = std::net::TcpListener::bind(&addrs[..])?;
        socket::listen(std.as_raw_fd(), LISTEN_BACKLOG)?;
        TcpListener::from_std(std)
    }

    /// Takes over a std listener (made non-blocking and registered with this thread's hub).
    /// Its backlog is left as it is.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            source: Source::new(listener)?,
        })
    }

    /// Gives back a blocking std listener, deregistered (a `dup` while clones are alive:
    /// it then stays non-blocking, a flag it shares with them).
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        self.source.into_std()
    }

    /// Waits for a connection; the new stream is non-blocking and registered. A
    /// [`Timeout`](crate::Timeout) makes it fail with `TimedOut`; a kill unwinds out of it.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.source.read_with(|l| l.accept())?;
        Ok((TcpStream::from_std(stream)?, addr))
    }

    /// An endless iterator of [`accept`](Self::accept)ed connections.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// let listener = verdant::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// for conn in listener.incoming() {
    ///     let mut conn = conn.unwrap();
    ///     verdant::spawn(move || conn.write_all(b"hi\n"));
    /// }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// Another handle to the same listener (sharing its registration: one green thread
    /// at a time may block in `accept`; a second gets `ResourceBusy`).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener {
            source: self.source.share(),
        })
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.source.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.source.get_ref().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

/// The iterator of [`TcpListener::incoming`]: never returns `None`.
///
/// ```
/// use verdant::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let clients = verdant::spawn(move || (0..3).map(|_| TcpStream::connect(addr).unwrap()).count());
/// let accepted = listener.incoming().take(3).filter(|c| c.is_ok()).count();
/// assert_eq!((accepted, clients.join().unwrap()), (3, 3));
/// ```
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A TCP connection whose reads and writes block the green thread, not the OS thread.
///
/// [`try_clone`](Self::try_clone) returns a handle to the same socket (one registration
/// with the hub): give one clone to a reading green thread and one to a writing green
/// thread. Two green threads blocked in the *same* direction of one socket are refused
/// with `ResourceBusy`. The fd closes when the last clone is dropped;
/// [`shutdown`](Self::shutdown) ends the connection at once for every clone and wakes a
/// green thread blocked reading it (it reads end-of-file).
///
/// Read and write timeouts ([`set_read_timeout`](Self::set_read_timeout)) bound each
/// call and fail it with `TimedOut`; a [`Timeout`](crate::Timeout) in scope bounds it too.
///
/// ```
/// use std::io::{Read, Write};
/// use verdant::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let client = verdant::spawn(move || {
///     let mut s = TcpStream::connect(addr).unwrap();
///     s.write_all(b"ping").unwrap();
///     s.shutdown(std::net::Shutdown::Write).unwrap();
///     let mut reply = String::new();
///     s.read_to_string(&mut reply).unwrap();
///     reply
/// });
/// let (mut conn, _) = listener.accept().unwrap();
/// let mut msg = String::new();
/// conn.read_to_string(&mut msg).unwrap(); // until the client's shutdown(Write)
/// conn.write_all(msg.replace("i", "o").as_bytes()).unwrap();
/// drop(conn);
/// assert_eq!(client.join().unwrap(), "pong");
/// ```
pub struct TcpStream {
    source: Source<std::net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn (std's rule). The
    /// connection is made without blocking the hub.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in resolve(&addr)? {
            match connect_addr(&addr, None) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }

    /// Connects to `addr` within `timeout` (`TimedOut` after it; zero is `InvalidInput`,
    /// as in std).
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = verdant::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = l.local_addr().unwrap();
    /// let s = verdant::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    /// assert_eq!(s.peer_addr().unwrap(), addr);
    /// ```
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        connect_addr(addr, Some(Instant::now() + timeout))
    }

    /// Takes over a std stream (made non-blocking and registered with this thread's hub).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream {
            source: Source::new(stream)?,
        })
    }

    /// Gives back a blocking std stream, deregistered (a `dup` while clones are alive: it
    /// then stays non-blocking, a flag it shares with them).
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        self.source.into_std()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// Shuts down the read, write or both halves, for every clone. A green thread blocked
    /// reading this socket is woken and reads end-of-file after `Read` or `Both`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.source.get_ref().shutdown(how)
    }

    /// Another handle to the same socket and registration (see the type's docs).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            source: self.source.share(),
        })
    }

    /// Bounds every read (`None`: no bound). Shared by the clones, like `SO_RCVTIMEO`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_read_timeout(timeout)
    }

    /// Bounds every write (`None`: no bound). Shared by the clones, like `SO_SNDTIMEO`.
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

    /// Reads without consuming (waits for data like `read`).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_with(|s| s.peek(buf))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.source.get_ref().set_nodelay(nodelay)
    }

    /// `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.source.get_ref().nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.source.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.source.get_ref().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

/// Starts a non-blocking connect, registers the socket, and waits for writability.
fn connect_addr(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let fd = socket::stream_socket(Domain::of(addr))?;
    // Registered only once the connect has started: an unconnected TCP socket polls as
    // hung up, and that stale edge would mark the new registration closed.
    let started = socket::connect_inet(fd.as_raw_fd(), addr);
    let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
    match started {
        Ok(()) => return Ok(stream),
        Err(e) if socket::is_in_progress(&e) || e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    loop {
        stream.source.wait(Direction::Write, deadline)?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => return Ok(stream),
            // A spurious wake-up: still connecting.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
    }
}

impl TcpStream {
    /// `read` for `TcpStream` and `&TcpStream`: the lean loop of
    /// [`Source::read_stream`], inlined into the caller, so that a parked read adds no frame
    /// of its own between the caller's and the hub's (a frame here held six saved registers
    /// and a return address, 80 bytes: two more stack lines a server's connection missed in
    /// cache at every request). A read timeout calls out of line.
    #[inline]
    fn read_direct(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_stream(buf.len(), |mut s| s.read(buf))
    }

    /// `write` for `TcpStream` and `&TcpStream`: one function, called directly, whose
    /// first attempt is inlined ([`Source::write_stream`]).
    #[inline(never)]
    fn write_direct(&self, buf: &[u8]) -> io::Result<usize> {
        self.source.write_stream(|mut s| s.write(buf))
    }
}

impl Read for TcpStream {
    // Inlined into the caller with `read_direct`: no frame between the caller and the hub
    // while a read waits (see `Source::read_stream`).
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_direct(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Read for &TcpStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_direct(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        // std passes at most IOV_MAX (1024 on Linux, macOS and FreeBSD) buffers to readv;
        // beyond that a short read proves nothing, so no drained shortcut then.
        if bufs.len() > 1024 {
            return self.source.read_with(|mut s| s.read_vectored(bufs));
        }
        let len = bufs.iter().map(|b| b.len()).sum();
        self.source.read_stream(len, |mut s| s.read_vectored(bufs))
    }
}

impl Write for TcpStream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_direct(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_direct(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.source.write_with(|mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

super::fd_conversions!(TcpListener, std::net::TcpListener);
super::fd_conversions!(TcpStream, std::net::TcpStream);

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::TcpListener")
            .field(&self.source)
            .finish()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::TcpStream")
            .field(&self.source)
            .finish()
    }
}
