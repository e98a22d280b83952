//! UDP: [`UdpSocket`], std's API over the hub.

use super::resolve::{resolve, ToSocketAddrs};
use super::source::Source;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A UDP socket whose receives (and, when the send buffer is full, sends) block the green
/// thread, not the OS thread.
///
/// Clones from [`try_clone`](Self::try_clone) share one registration: one green thread
/// may block receiving and another sending at a time. `!Send`, like every verdant socket.
///
/// ```
/// use verdant::net::UdpSocket;
///
/// let a = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b_addr = b.local_addr().unwrap();
/// let receiver = verdant::spawn(move || {
///     let mut buf = [0; 16];
///     let (n, from) = b.recv_from(&mut buf).unwrap();
///     (buf[..n].to_vec(), from)
/// });
/// a.send_to(b"datagram", b_addr).unwrap();
/// let (data, from) = receiver.join().unwrap();
/// assert_eq!(data, b"datagram");
/// assert_eq!(from, a.local_addr().unwrap());
/// ```
pub struct UdpSocket {
    source: Source<std::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr` (each address in turn until one works, like std).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        let addrs = resolve(&addr)?;
        UdpSocket::from_std(std::net::UdpSocket::bind(&addrs[..])?)
    }

    /// Takes over a std socket (made non-blocking and registered with this thread's hub).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            source: Source::new(socket)?,
        })
    }

    /// Gives back a blocking std socket, deregistered (a `dup` while clones are alive: it
    /// then stays non-blocking, a flag it shares with them).
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        self.source.into_std()
    }

    /// Receives one datagram and its sender's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.source.read_with(|s| s.recv_from(buf))
    }

    /// Like [`recv_from`](Self::recv_from) without consuming the datagram.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.source.read_with(|s| s.peek_from(buf))
    }

    /// Sends one datagram to the first address `addr` resolves to.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let to = resolve(&addr)?[0];
        self.source.write_with(|s| s.send_to(buf, to))
    }

    /// Sets the default peer for [`send`](Self::send) and filters what
    /// [`recv`](Self::recv) gets (std's rule: each address in turn until one works).
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let addrs = resolve(&addr)?;
        self.source.get_ref().connect(&addrs[..])
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.source.write_with(|s| s.send(buf))
    }

    /// Receives one datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_with(|s| s.recv(buf))
    }

    /// Like [`recv`](Self::recv) without consuming the datagram.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read_with(|s| s.peek(buf))
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.get_ref().local_addr()
    }

    /// Another handle to the same socket and registration.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            source: self.source.share(),
        })
    }

    /// Bounds every receive (`None`: no bound); a bounded receive fails with `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.set_read_timeout(timeout)
    }

    /// Bounds every send that has to wait for buffer space.
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

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.source.get_ref().set_broadcast(on)
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.source.get_ref().broadcast()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.source.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.source.get_ref().ttl()
    }

    /// Joins an IPv4 multicast group.
    pub fn join_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.source.get_ref().join_multicast_v4(group, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.source.get_ref().join_multicast_v6(group, interface)
    }

    /// Leaves an IPv4 multicast group.
    pub fn leave_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.source.get_ref().leave_multicast_v4(group, interface)
    }

    /// Leaves an IPv6 multicast group.
    pub fn leave_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.source.get_ref().leave_multicast_v6(group, interface)
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source.get_ref().take_error()
    }
}

super::fd_conversions!(UdpSocket, std::net::UdpSocket);

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("verdant::UdpSocket")
            .field(&self.source)
            .finish()
    }
}
