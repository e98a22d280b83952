//! Turning addresses into `SocketAddr`s without blocking the hub.
//!
//! [`ToSocketAddrs`] has std's implementors. Literal addresses (`SocketAddr`, `(IpAddr,
//! port)`, `"127.0.0.1:80"`, `"[::1]:80"`) are parsed on the spot. A host name
//! (`"localhost:80"`, `("example.com", 443)`) needs `getaddrinfo`, which blocks its OS
//! thread for as long as DNS takes; it runs on the blocking thread pool
//! ([`threadpool::resolve`](crate::threadpool::resolve)) while the green thread waits for
//! the answer, so other green threads keep running. The wait honours a
//! [`Timeout`](crate::Timeout) and a kill (the look-up then finishes in the background and
//! its answer is dropped).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What an address needs before a socket can use it.
pub(crate) enum Addrs {
    /// Already numeric.
    Resolved(Vec<SocketAddr>),
    /// A host name to look up, with the port.
    Lookup(String, u16),
}

mod sealed {
    /// Keeps [`ToSocketAddrs`](super::ToSocketAddrs) implementable only here.
    pub trait Sealed {}
}

/// Addresses verdant's sockets accept: the same types as [`std::net::ToSocketAddrs`], but
/// host names are looked up without blocking the hub (see the module docs of
/// [`verdant::net`](crate::net)).
///
/// ```
/// use verdant::net::TcpListener;
///
/// // Numeric: parsed at once.
/// let a = TcpListener::bind("127.0.0.1:0").unwrap();
/// let b = TcpListener::bind(("127.0.0.1", 0)).unwrap();
/// let c = TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
/// assert!(a.local_addr().unwrap().ip().is_loopback());
/// # drop((b, c));
/// ```
pub trait ToSocketAddrs: sealed::Sealed {
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs>;
}

macro_rules! numeric {
    ($($ty:ty => |$s:ident| $e:expr),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl ToSocketAddrs for $ty {
            #[allow(private_interfaces)]
            fn verdant_addrs(&self) -> io::Result<Addrs> {
                let $s = self;
                Ok(Addrs::Resolved(vec![$e]))
            }
        }
    )*};
}

numeric!(
    SocketAddr => |s| *s,
    SocketAddrV4 => |s| SocketAddr::V4(*s),
    SocketAddrV6 => |s| SocketAddr::V6(*s),
    (IpAddr, u16) => |s| SocketAddr::new(s.0, s.1),
    (Ipv4Addr, u16) => |s| SocketAddr::new(IpAddr::V4(s.0), s.1),
    (Ipv6Addr, u16) => |s| SocketAddr::new(IpAddr::V6(s.0), s.1),
);

impl sealed::Sealed for (&str, u16) {}
impl ToSocketAddrs for (&str, u16) {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        host_port(self.0, self.1)
    }
}

impl sealed::Sealed for (String, u16) {}
impl ToSocketAddrs for (String, u16) {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        host_port(&self.0, self.1)
    }
}

impl sealed::Sealed for str {}
impl ToSocketAddrs for str {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return Ok(Addrs::Resolved(vec![addr]));
        }
        let (host, port) = self
            .rsplit_once(':')
            .ok_or_else(|| invalid("invalid socket address"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("invalid port value"))?;
        host_port(host, port)
    }
}

impl sealed::Sealed for String {}
impl ToSocketAddrs for String {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        self.as_str().verdant_addrs()
    }
}

impl sealed::Sealed for [SocketAddr] {}
impl ToSocketAddrs for [SocketAddr] {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::Resolved(self.to_vec()))
    }
}

impl sealed::Sealed for Vec<SocketAddr> {}
impl ToSocketAddrs for Vec<SocketAddr> {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::Resolved(self.clone()))
    }
}

impl<T: ToSocketAddrs + ?Sized> sealed::Sealed for &T {}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    #[allow(private_interfaces)]
    fn verdant_addrs(&self) -> io::Result<Addrs> {
        (**self).verdant_addrs()
    }
}

fn host_port(host: &str, port: u16) -> io::Result<Addrs> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(Addrs::Resolved(vec![SocketAddr::new(ip, port)])),
        Err(_) => Ok(Addrs::Lookup(host.to_owned(), port)),
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Every address `addr` stands for (at least one), looking host names up off the hub.
pub(crate) fn resolve<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    let addrs = match addr.verdant_addrs()? {
        Addrs::Resolved(v) => v,
        Addrs::Lookup(host, port) => lookup(host, port)?,
    };
    if addrs.is_empty() {
        return Err(invalid("could not resolve to any addresses"));
    }
    Ok(addrs)
}

/// Runs `getaddrinfo` for `host` on the blocking thread pool.
fn lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    crate::threadpool::resolve((host, port))
}
