//! [`StreamServer`]: a TCP server that runs a green thread per connection (gevent's
//! `gevent.server.StreamServer`).
//!
//! The user writes the handler for one connection as ordinary blocking code over a
//! [`TcpStream`]; the server accepts connections on a green thread of its own and spawns the
//! handler for each.
//!
//! ```text
//!            start()                       stop(timeout)
//!              │                                │
//!   ┌──────────▼──────────┐                     │ 1. kill the accept loop, close the listener
//!   │ accept loop          │◀────────────────────┤
//!   │  [wait for a slot]   │  (max_connections)  │ 2. wait up to `timeout` for handlers
//!   │  accept()            │                     │ 3. kill the handlers still running
//!   │   ok ──▶ spawn handler(stream, peer)  ──▶ members (Group or Pool)
//!   │   EMFILE/ENFILE/ENOBUFS/ENOMEM ──▶ sleep 10 ms, 20, 40, 80, 100 …, retry
//!   │   ECONNABORTED/EINTR/EPROTO… ──▶ retry at once
//!   └─────────────────────┘
//! ```
//!
//! # Invariants
//!
//! * The accept loop never spins: an error it cannot fix by retrying at once (running out of
//!   file descriptors, memory or buffers, or anything unexpected) makes it sleep, doubling the
//!   pause up to [`MAX_ACCEPT_BACKOFF`]; a successful accept resets it. So a server that runs
//!   out of fds keeps its open connections, keeps serving them and accepts again once fds
//!   are freed.
//! * With [`max_connections`](StreamServer::max_connections), the loop waits for a free slot
//!   *before* it accepts, so surplus connections wait in the kernel's listen backlog instead
//!   of being accepted and starved.
//! * Like everything on a hub, a server and its handlers belong to the OS thread that
//!   created them (`!Send`); handlers may share state through `Rc<RefCell<_>>`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::hub::JoinHandle;
use crate::net::{TcpListener, TcpStream, ToSocketAddrs};
use crate::pool::{Group, Pool};
use crate::sync::Event;

/// The first pause after an accept error that retrying at once would not fix.
pub const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between accept attempts while accept keeps failing (the pause doubles
/// from [`MIN_ACCEPT_BACKOFF`] up to this): at most ten futile attempts a second, and a
/// server that gets fds back accepts again within this time.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A TCP server that runs `handler(stream, peer_address)` on a green thread of its own for
/// every connection it accepts.
///
/// [`start`](Self::start) spawns the accept loop and returns; [`serve_forever`](Self::serve_forever)
/// starts it and blocks until [`stop`](Self::stop) is called. Dropping the `StreamServer`
/// does not stop it (the accept loop holds the server, as gevent's loop does): call `stop`.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use verdant::net::TcpStream;
/// use verdant::StreamServer;
///
/// // An echo server.
/// let server = StreamServer::bind("127.0.0.1:0", |mut conn: TcpStream, _peer| {
///     let mut buf = [0; 4096];
///     while let Ok(n @ 1..) = conn.read(&mut buf) {
///         if conn.write_all(&buf[..n]).is_err() {
///             break;
///         }
///     }
/// })
/// .unwrap();
/// server.start().unwrap();
///
/// let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
/// client.write_all(b"hello").unwrap();
/// let mut back = [0; 5];
/// client.read_exact(&mut back).unwrap();
/// assert_eq!(&back, b"hello");
///
/// drop(client);
/// server.stop(Duration::from_secs(1));
/// ```
pub struct StreamServer {
    inner: Rc<Inner>,
}

struct Inner {
    /// `None` once stopped: the last handle closes the socket.
    listener: RefCell<Option<TcpListener>>,
    local_addr: SocketAddr,
    handler: Rc<dyn Fn(TcpStream, SocketAddr)>,
    members: Members,
    accept_loop: RefCell<Option<JoinHandle<()>>>,
    stopping: Cell<bool>,
    stopped: Event,
}

/// The handlers' green threads.
enum Members {
    Unbounded(Group),
    Bounded(Pool),
}

impl Members {
    fn spawn(&self, f: impl FnOnce() + 'static) {
        match self {
            Members::Unbounded(group) => drop(group.spawn(f)),
            Members::Bounded(pool) => drop(pool.spawn(f)),
        }
    }

    fn wait_available(&self) {
        if let Members::Bounded(pool) = self {
            let _ = pool.wait_available();
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::Unbounded(group) => group.len(),
            Members::Bounded(pool) => pool.len(),
        }
    }

    fn join_timeout(&self, timeout: Duration) -> bool {
        let r = match self {
            Members::Unbounded(group) => group.join_timeout(timeout),
            Members::Bounded(pool) => pool.join_timeout(timeout),
        };
        r.unwrap_or(false)
    }

    fn kill(&self) {
        match self {
            Members::Unbounded(group) => group.kill(),
            Members::Bounded(pool) => pool.kill(),
        }
    }
}

impl StreamServer {
    /// A server on a new listener bound to `addr` (with verdant's large listen backlog, see
    /// [`LISTEN_BACKLOG`](crate::net::LISTEN_BACKLOG)). It does not accept until
    /// [`start`](Self::start) or [`serve_forever`](Self::serve_forever).
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer::new(TcpListener::bind(addr)?, handler)
    }

    /// A server on an existing listener.
    ///
    /// ```
    /// let listener = verdant::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let server = verdant::StreamServer::new(listener, |_conn, _peer| {}).unwrap();
    /// assert!(!server.is_started());
    /// ```
    pub fn new<F>(listener: TcpListener, handler: F) -> io::Result<StreamServer>
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        let local_addr = listener.local_addr()?;
        Ok(StreamServer {
            inner: Rc::new(Inner {
                listener: RefCell::new(Some(listener)),
                local_addr,
                handler: Rc::new(handler),
                members: Members::Unbounded(Group::new()),
                accept_loop: RefCell::new(None),
                stopping: Cell::new(false),
                stopped: Event::new(),
            }),
        })
    }

    /// Serves at most `limit` connections at once (gevent's `spawn=Pool(limit)`): while
    /// `limit` handlers run, the server stops accepting and further connections wait in the
    /// listen backlog. Call it before [`start`](Self::start).
    ///
    /// ```
    /// let server = verdant::StreamServer::bind("127.0.0.1:0", |_conn, _peer| {})
    ///     .unwrap()
    ///     .max_connections(10_000);
    /// # drop(server);
    /// ```
    ///
    /// # Panics
    /// If `limit` is 0, or if the server has started.
    pub fn max_connections(self, limit: usize) -> StreamServer {
        assert!(
            limit > 0,
            "StreamServer::max_connections(0): no connection could be served"
        );
        assert!(
            !self.is_started(),
            "StreamServer::max_connections: the server has already started"
        );
        let inner = Rc::try_unwrap(self.inner)
            .unwrap_or_else(|_| unreachable!("a server that has not started has one owner"));
        StreamServer {
            inner: Rc::new(Inner {
                members: Members::Bounded(Pool::new(limit)),
                ..inner
            }),
        }
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr)
    }

    /// Spawns the accept loop on the current hub and returns at once.
    ///
    /// # Errors
    /// `InvalidInput` if the server was already started, or stopped.
    pub fn start(&self) -> io::Result<()> {
        if self.is_started() || self.inner.stopping.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "StreamServer::start: the server was already started",
            ));
        }
        let listener = match &*self.inner.listener.borrow() {
            Some(listener) => listener.try_clone()?,
            None => unreachable!("the listener is only closed by stop"),
        };
        let inner = self.inner.clone();
        let handle = crate::Builder::new()
            .name("StreamServer accept loop")
            .spawn(move || accept_loop(&inner, &listener))?;
        *self.inner.accept_loop.borrow_mut() = Some(handle);
        Ok(())
    }

    /// Starts the server (unless it has started) and blocks the current green thread until
    /// [`stop`](Self::stop) has finished (gevent's `serve_forever`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = std::rc::Rc::new(
    ///     verdant::StreamServer::bind("127.0.0.1:0", |_conn, _peer| {}).unwrap(),
    /// );
    /// let stopper = server.clone();
    /// verdant::spawn(move || {
    ///     verdant::sleep(Duration::from_millis(10)).unwrap();
    ///     stopper.stop(Duration::from_secs(1));
    /// });
    /// server.serve_forever().unwrap();
    /// assert!(server.is_stopped());
    /// ```
    ///
    /// # Errors
    /// As [`start`](Self::start), when the server has been stopped.
    pub fn serve_forever(&self) -> io::Result<()> {
        if !self.is_started() {
            self.start()?;
        }
        // A kill or a Timeout of the caller ends the wait; the server keeps running.
        self.inner
            .stopped
            .wait()
            .map_err(|e| io::Error::new(io::ErrorKind::Interrupted, e.to_string()))
    }

    /// Stops the server gracefully: stops accepting and closes the listener at once, then
    /// waits up to `timeout` for the running handlers to finish, then kills the rest (each
    /// unwinds at its blocking point, so its destructors run and its connection closes).
    /// Returns once every handler has finished. Idempotent.
    ///
    /// Call it from outside the handlers: a handler that stops its own server would wait for
    /// itself until `timeout`, then be killed.
    pub fn stop(&self, timeout: Duration) {
        if self.inner.stopping.replace(true) {
            let _ = self.inner.stopped.wait();
            return;
        }
        if let Some(accept_loop) = self.inner.accept_loop.borrow_mut().take() {
            accept_loop.kill();
            let _ = accept_loop.join();
        }
        drop(self.inner.listener.borrow_mut().take());
        if !self.inner.members.join_timeout(timeout) {
            self.inner.members.kill();
        }
        self.inner.stopped.set();
    }

    /// Whether [`start`](Self::start) has been called.
    pub fn is_started(&self) -> bool {
        self.inner.accept_loop.borrow().is_some() || self.inner.stopping.get()
    }

    /// Whether [`stop`](Self::stop) has finished.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.is_set()
    }

    /// Connections being handled now.
    pub fn connection_count(&self) -> usize {
        self.inner.members.len()
    }
}

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("local_addr", &self.inner.local_addr)
            .field("started", &self.is_started())
            .field("stopped", &self.is_stopped())
            .field("connections", &self.connection_count())
            .finish()
    }
}

/// Whether an accept error only concerns the connection it tried to accept, so the next
/// accept may succeed at once.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

fn accept_loop(inner: &Inner, listener: &TcpListener) {
    let mut backoff = MIN_ACCEPT_BACKOFF;
    loop {
        inner.members.wait_available();
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = MIN_ACCEPT_BACKOFF;
                let handler = inner.handler.clone();
                inner.members.spawn(move || handler(stream, peer));
            }
            Err(e) if is_transient(&e) => {}
            Err(_) => {
                // Out of fds (EMFILE/ENFILE), buffers or memory, or something unexpected:
                // pause so that the loop neither spins nor gives up.
                let _ = crate::sleep(backoff);
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}
