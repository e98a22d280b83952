//! Offloading blocking work to OS threads (gevent's `threadpool`): a green thread hands a
//! closure to a pool of worker threads and waits for its result *without* blocking its hub,
//! so the other green threads of its OS thread keep running meanwhile.
//!
//! This is the way out for work that cannot be made cooperative: CPU-heavy computations,
//! regular-file I/O (`read`/`write` on a file never report `WouldBlock`), name resolution
//! (`getaddrinfo` is a blocking C call), and C libraries that block.
//!
//! ```
//! use std::time::Duration;
//!
//! // The blocking sleep runs on a worker thread; this green thread waits for it while the
//! // ticker keeps running on the hub.
//! let ticker = verdant::spawn(|| {
//!     let mut ticks = 0;
//!     while verdant::sleep(Duration::from_millis(1)).is_ok() && ticks < 5 {
//!         ticks += 1;
//!     }
//!     ticks
//! });
//! let answer = verdant::spawn_blocking(|| {
//!     std::thread::sleep(Duration::from_millis(20));
//!     6 * 7
//! })
//! .join()
//! .unwrap();
//! assert_eq!(answer, 42);
//! assert_eq!(ticker.join().unwrap(), 5);
//! ```
//!
//! ## Design
//! ```text
//!  hub thread                         ThreadPool (Arc, any thread)          worker threads
//!  ──────────                         ────────────────────────────          ──────────────
//!  spawn(f) ── push job ────────────▶ Mutex<{ queue, threads, idle }> ◀──── pop job, run f
//!     │        (start a worker if                                             │
//!     │         none is idle and                                              │ catch_unwind
//!     ▼         threads < max)                                                ▼
//!  BlockingHandle ── Arc<Slot> ─────────────────────────────────────────▶ slot.result = r
//!  join(): put a RemoteWaker in the slot, park()    ◀── RemoteWaker::wake ── take the waker
//! ```
//! * **Lazy, bounded, self-shrinking.** No worker exists until the first job. A job starts a
//!   new worker only when no worker is idle and fewer than `max_threads` run; otherwise it
//!   waits in the queue (FIFO). A worker that stays idle for the pool's idle timeout exits.
//! * **The waiting green thread owns the wake-up.** The `RemoteWaker` is created by
//!   whichever green thread calls `join`, and lives in the result slot only while it waits:
//!   the hub knows someone can still wake it (no false "would block forever"), and a handle
//!   nobody waits on holds nothing on the hub.
//! * **Interrupting a wait does not cancel the work.** A [`Timeout`](crate::Timeout) or a
//!   kill stops the *green thread's* wait: `join` returns [`BlockingError::TimedOut`] (or
//!   unwinds, for a kill) and its registration is removed. The closure keeps running on its
//!   OS thread — nothing can stop an OS thread safely — and its result is dropped, on the
//!   worker thread, when it arrives. The same holds for a handle that is dropped.
//! * **Panics are values.** A panic in the closure is caught on the worker and returned by
//!   `join` as [`BlockingError::Panicked`]; the worker thread survives and serves the next
//!   job.
//! * **Running out of OS threads is an error, not a crash.** If a worker thread cannot be
//!   started and none is running that could take the job, `join` returns
//!   [`BlockingError::Spawn`]. If some worker runs, the job waits in the queue for it.
//! * Dropping the last clone of a [`ThreadPool`] lets its workers finish the queued jobs
//!   and exit; it does not wait for them.
//!
//! ## Regular files and name resolution
//! [`read_file`], [`write_file`] and [`resolve`] are the `std` calls run through the
//! default pool. Any other blocking call follows the same pattern:
//! `spawn_blocking(move || std::fs::metadata(path)).join()`.

use crate::hub::panic_message;
use crate::hub::{self, RemoteWaker, WaitError};
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Most worker threads of the default pool (gevent's default `threadpool` size): enough to
/// overlap a handful of slow DNS look-ups and file operations, few enough that a burst of
/// blocking calls cannot start hundreds of OS threads. Change it with
/// [`ThreadPool::set_max_threads`] on [`ThreadPool::global`].
pub const DEFAULT_MAX_THREADS: usize = 10;

/// How long a worker thread waits for a new job before it exits (see
/// [`ThreadPool::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`BlockingHandle::join`] did not return the closure's value.
pub enum BlockingError {
    /// The closure panicked on its worker thread; the payload is the panic's. The pool
    /// keeps working.
    Panicked(Box<dyn Any + Send + 'static>),
    /// A [`Timeout`](crate::Timeout) covering the wait fired, or `join_timeout`'s duration
    /// elapsed. The closure keeps running on its worker thread; its result is dropped when
    /// it arrives.
    TimedOut,
    /// No worker thread could be started to run the closure (the OS refused to create a
    /// thread and none of the pool's threads was running). The closure never ran.
    Spawn(io::Error),
}

impl BlockingError {
    /// Whether the closure panicked.
    ///
    /// ```
    /// let err = verdant::spawn_blocking(|| panic!("boom")).join().unwrap_err();
    /// assert!(err.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, BlockingError::Panicked(_))
    }

    /// The panic payload, if the closure panicked (to re-raise it with
    /// `std::panic::resume_unwind`).
    ///
    /// ```
    /// let err = verdant::spawn_blocking(|| panic!("boom")).join().unwrap_err();
    /// assert_eq!(*err.into_panic().unwrap().downcast::<&str>().unwrap(), "boom");
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            BlockingError::Panicked(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Debug for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::Panicked(p) => write!(f, "Panicked({:?})", panic_message(p.as_ref())),
            BlockingError::TimedOut => f.write_str("TimedOut"),
            BlockingError::Spawn(e) => f.debug_tuple("Spawn").field(e).finish(),
        }
    }
}

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::Panicked(p) => write!(
                f,
                "the closure panicked on its worker thread: {}",
                panic_message(p.as_ref())
            ),
            BlockingError::TimedOut => {
                f.write_str("timed out waiting for the worker thread (the closure keeps running)")
            }
            BlockingError::Spawn(e) => write!(f, "could not start a worker thread: {e}"),
        }
    }
}

impl std::error::Error for BlockingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockingError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BlockingError> for io::Error {
    /// `TimedOut` becomes an error of kind `TimedOut`, `Spawn` its own error, a panic an
    /// error of kind `Other` carrying the panic message.
    fn from(e: BlockingError) -> io::Error {
        match e {
            BlockingError::Spawn(e) => e,
            BlockingError::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, BlockingError::TimedOut.to_string())
            }
            BlockingError::Panicked(p) => {
                let msg = format!(
                    "the closure panicked on its worker thread: {}",
                    panic_message(p.as_ref())
                );
                io::Error::other(msg)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still
    // consistent (every critical section is a few assignments).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a worker leaves a result and finds who to wake.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    result: Option<Result<T, BlockingError>>,
    /// The waker of the green thread waiting in `join`, present only while it waits.
    waker: Option<RemoteWaker>,
}

impl<T> Slot<T> {
    fn deliver(&self, result: Result<T, BlockingError>) {
        let waker = {
            let mut state = lock(&self.state);
            state.result = Some(result);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Takes the waiting green thread's waker out of the slot when its wait ends, however it
/// ends (result, timeout, kill unwinding through it).
struct Registration<'a, T>(&'a Slot<T>);

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        let waker = lock(&self.0.state).waker.take();
        // Dropped outside the lock: it posts to the hub's inbox.
        drop(waker);
    }
}

/// An owned permission to wait for a closure running on a [`ThreadPool`] and take its
/// result. Dropping it abandons the result (the closure still runs to completion).
///
/// It is `Send` when `T` is: the green thread that joins need not be the one that spawned,
/// nor even on the same OS thread.
///
/// ```
/// let handle = verdant::spawn_blocking(|| (1..=10u64).product::<u64>());
/// // ... this green thread can do other things meanwhile ...
/// assert_eq!(handle.join().unwrap(), 3_628_800);
/// ```
pub struct BlockingHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> BlockingHandle<T> {
    /// Waits for the closure to finish and returns its value. Only the calling green
    /// thread blocks: the other green threads of its hub keep running.
    ///
    /// Returns `Err(Panicked)` if the closure panicked, `Err(Spawn)` if no worker thread
    /// could run it, and `Err(TimedOut)` if a [`Timeout`](crate::Timeout) covering this call
    /// fired (the closure keeps running; its result is dropped when it arrives). A kill
    /// unwinds out of this call, with the same effect on the closure.
    ///
    /// ```
    /// let h = verdant::spawn_blocking(|| std::fs::read_dir(".").map(|d| d.count()));
    /// assert!(h.join().unwrap().unwrap() > 0);
    /// ```
    pub fn join(self) -> Result<T, BlockingError> {
        self.wait(None)?;
        self.take()
    }

    /// Like [`join`](Self::join), giving up after `timeout` with `Err(TimedOut)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let h = verdant::spawn_blocking(move || wait.recv().is_ok());
    /// assert!(matches!(
    ///     h.join_timeout(Duration::from_millis(5)),
    ///     Err(verdant::BlockingError::TimedOut)
    /// ));
    /// drop(release); // let the worker thread go
    /// ```
    pub fn join_timeout(self, timeout: Duration) -> Result<T, BlockingError> {
        if !self.wait(Some(Instant::now() + timeout))? {
            return Err(BlockingError::TimedOut);
        }
        self.take()
    }

    /// Whether the result (value, panic or spawn error) is there, so that
    /// [`join`](Self::join) would return without waiting.
    ///
    /// ```
    /// let h = verdant::spawn_blocking(|| 1);
    /// while !h.is_finished() {
    ///     verdant::sleep(std::time::Duration::from_millis(1)).unwrap();
    /// }
    /// assert_eq!(h.join().unwrap(), 1);
    /// ```
    pub fn is_finished(&self) -> bool {
        lock(&self.slot.state).result.is_some()
    }

    fn take(self) -> Result<T, BlockingError> {
        let result = lock(&self.slot.state).result.take();
        result.expect("wait returned true, so the result is there")
    }

    /// Blocks the current green thread until the result is there (`Ok(true)`) or the
    /// deadline passed (`Ok(false)`).
    fn wait(&self, deadline: Option<Instant>) -> Result<bool, BlockingError> {
        if self.is_finished() {
            return Ok(true);
        }
        let waker = hub::remote_waker();
        {
            let mut state = lock(&self.slot.state);
            if state.result.is_some() {
                return Ok(true);
            }
            state.waker = Some(waker);
        }
        let _registration = Registration(&self.slot);
        loop {
            let woke = match deadline {
                Some(d) => hub::park_until(d),
                None => hub::park().map(|()| false),
            };
            if self.is_finished() {
                return Ok(true);
            }
            match woke {
                Ok(true) => return Ok(false),
                Ok(false) => {} // spurious: look again
                Err(WaitError::TimedOut) => return Err(BlockingError::TimedOut),
                Err(WaitError::WouldBlockForever) => {
                    unreachable!("the waker in the slot keeps the hub from reporting a deadlock")
                }
            }
        }
    }
}

impl<T> fmt::Debug for BlockingHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

struct PoolState {
    queue: VecDeque<Job>,
    /// Worker threads alive.
    threads: usize,
    /// Worker threads waiting for a job.
    idle: usize,
    max_threads: usize,
    idle_timeout: Duration,
    stack_size: Option<usize>,
    name: String,
    /// No `ThreadPool` handle is left: workers drain the queue and exit.
    shutdown: bool,
}

struct Shared {
    state: Mutex<PoolState>,
    work: Condvar,
}

/// Owned by the `ThreadPool` clones (not by the workers): the last one to go shuts down.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
    }
}

/// A pool of OS threads that run blocking closures for green threads (gevent's
/// `ThreadPool`). Clones share the pool and its settings.
///
/// Worker threads start lazily, at most [`max_threads`](Self::max_threads) at a time, and
/// exit after [`idle_timeout`](Self::idle_timeout) without work. [`spawn_blocking`] uses
/// the process-wide [`ThreadPool::global`].
///
/// ```
/// use verdant::ThreadPool;
///
/// let pool = ThreadPool::new(2);
/// let handles: Vec<_> = (0..4u64).map(|i| pool.spawn(move || i * i)).collect();
/// let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(squares, [0, 1, 4, 9]);
/// assert!(pool.threads() <= 2);
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    owner: Arc<Owner>,
}

impl ThreadPool {
    /// A pool of at most `max_threads` worker threads, none started yet, with the default
    /// idle timeout ([`DEFAULT_IDLE_TIMEOUT`]).
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(4);
    /// assert_eq!((pool.max_threads(), pool.threads()), (4, 0));
    /// ```
    ///
    /// # Panics
    /// If `max_threads` is 0 (such a pool could never run anything).
    pub fn new(max_threads: usize) -> ThreadPool {
        assert!(
            max_threads > 0,
            "verdant::ThreadPool::new: max_threads must be at least 1"
        );
        ThreadPool::from_parts(
            max_threads,
            DEFAULT_IDLE_TIMEOUT,
            None,
            "verdant-threadpool".into(),
        )
    }

    fn from_parts(
        max_threads: usize,
        idle_timeout: Duration,
        stack_size: Option<usize>,
        name: String,
    ) -> ThreadPool {
        ThreadPool {
            owner: Arc::new(Owner {
                shared: Arc::new(Shared {
                    state: Mutex::new(PoolState {
                        queue: VecDeque::new(),
                        threads: 0,
                        idle: 0,
                        max_threads,
                        idle_timeout,
                        stack_size,
                        name,
                        shutdown: false,
                    }),
                    work: Condvar::new(),
                }),
            }),
        }
    }

    /// Sets how long a worker thread waits for a job before it exits (builder style; a
    /// thread already idle keeps the timeout it started waiting with).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = verdant::ThreadPool::new(2).idle_timeout(Duration::from_millis(100));
    /// assert_eq!(pool.spawn(|| 1).join().unwrap(), 1);
    /// ```
    pub fn idle_timeout(self, timeout: Duration) -> ThreadPool {
        lock(&self.owner.shared.state).idle_timeout = timeout;
        self
    }

    /// Sets the stack size of the worker threads in bytes (builder style, see
    /// [`idle_timeout`](Self::idle_timeout)); applies to threads started afterwards. The
    /// default is `std::thread`'s.
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(1).stack_size(4 << 20);
    /// assert_eq!(pool.spawn(|| 2).join().unwrap(), 2);
    /// ```
    pub fn stack_size(self, bytes: usize) -> ThreadPool {
        lock(&self.owner.shared.state).stack_size = Some(bytes);
        self
    }

    /// Sets the name of the worker threads (builder style, see
    /// [`idle_timeout`](Self::idle_timeout)); applies to threads started afterwards. The
    /// default is `verdant-threadpool`.
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(1).name("dns");
    /// let name = pool.apply(|| std::thread::current().name().map(str::to_owned));
    /// assert_eq!(name.unwrap().as_deref(), Some("dns"));
    /// ```
    pub fn name(self, name: impl Into<String>) -> ThreadPool {
        lock(&self.owner.shared.state).name = name.into();
        self
    }

    /// The process-wide pool that [`spawn_blocking`], [`resolve`], [`read_file`] and
    /// [`write_file`] use: at most [`DEFAULT_MAX_THREADS`] threads, created on first use.
    ///
    /// ```
    /// let pool = verdant::ThreadPool::global();
    /// assert!(pool.max_threads() >= 1);
    /// assert_eq!(pool.apply(|| 3).unwrap(), 3);
    /// ```
    pub fn global() -> &'static ThreadPool {
        static GLOBAL: OnceLock<ThreadPool> = OnceLock::new();
        GLOBAL.get_or_init(|| ThreadPool::new(DEFAULT_MAX_THREADS))
    }

    /// The most worker threads this pool runs at once.
    ///
    /// ```
    /// assert_eq!(verdant::ThreadPool::new(3).max_threads(), 3);
    /// ```
    pub fn max_threads(&self) -> usize {
        lock(&self.owner.shared.state).max_threads
    }

    /// Changes the most worker threads this pool runs at once (gevent's `maxsize`). Raising
    /// it lets queued jobs start new threads as soon as more jobs arrive; lowering it does
    /// not stop running threads, they exit as they go idle.
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(1);
    /// pool.set_max_threads(8);
    /// assert_eq!(pool.max_threads(), 8);
    /// ```
    ///
    /// # Panics
    /// If `max_threads` is 0.
    pub fn set_max_threads(&self, max_threads: usize) {
        assert!(
            max_threads > 0,
            "verdant::ThreadPool::set_max_threads: max_threads must be at least 1"
        );
        lock(&self.owner.shared.state).max_threads = max_threads;
    }

    /// How many worker threads are alive now (busy or idle).
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(2);
    /// assert_eq!(pool.threads(), 0); // started lazily
    /// pool.apply(|| ()).unwrap();
    /// assert_eq!(pool.threads(), 1);
    /// ```
    pub fn threads(&self) -> usize {
        lock(&self.owner.shared.state).threads
    }

    /// Runs `f` on one of the pool's threads and returns a handle to wait for its result.
    /// Does not block: the closure is queued (starting a worker thread if none is idle and
    /// fewer than `max_threads` run). If no thread can be started to run it, the handle's
    /// `join` returns [`BlockingError::Spawn`].
    ///
    /// May be called from any thread, green or not; only [`BlockingHandle::join`] needs a
    /// green thread (any OS thread has one: its main green thread).
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(2);
    /// let h = pool.spawn(|| std::env::var("PATH").is_ok());
    /// assert!(h.join().unwrap());
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> BlockingHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                result: None,
                waker: None,
            }),
        });
        let worker_slot = slot.clone();
        let job: Job = Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f)).map_err(BlockingError::Panicked);
            worker_slot.deliver(result);
        });
        if let Err(e) = self.owner.shared.submit(job) {
            slot.deliver(Err(BlockingError::Spawn(e)));
        }
        BlockingHandle { slot }
    }

    /// Runs `f` on one of the pool's threads and waits for its result (gevent's
    /// `threadpool.apply`): `self.spawn(f).join()`. Only the calling green thread waits.
    ///
    /// ```
    /// let pool = verdant::ThreadPool::new(2);
    /// let digits = pool.apply(|| 2u128.pow(100).to_string().len()).unwrap();
    /// assert_eq!(digits, 31);
    /// ```
    pub fn apply<F, T>(&self, f: F) -> Result<T, BlockingError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(f).join()
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.owner.shared.state);
        f.debug_struct("ThreadPool")
            .field("name", &state.name)
            .field("max_threads", &state.max_threads)
            .field("threads", &state.threads)
            .field("idle", &state.idle)
            .field("queued", &state.queue.len())
            .field("idle_timeout", &state.idle_timeout)
            .finish()
    }
}

impl Shared {
    /// Queues `job`, starting a worker if needed. Errs (and drops the job) only when no
    /// worker could be started and none is alive to run it.
    fn submit(self: &Arc<Shared>, job: Job) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.queue.push_back(job);
        // Idle workers not yet claimed by a queued job take it; otherwise grow.
        if state.queue.len() <= state.idle {
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        if state.threads >= state.max_threads {
            return Ok(());
        }
        let mut builder = thread::Builder::new().name(state.name.clone());
        if let Some(bytes) = state.stack_size {
            builder = builder.stack_size(bytes);
        }
        let shared = self.clone();
        match builder.spawn(move || shared.work_loop()) {
            Ok(_detached) => {
                state.threads += 1;
                Ok(())
            }
            Err(e) if state.threads == 0 => {
                // Nothing alive could ever run it: hand it back as an error. (With no
                // thread alive, the queue held nothing else: workers exit only when it is
                // empty, and earlier failures took their job back the same way.)
                drop(state.queue.pop_back());
                Err(e)
            }
            // A running worker will get to it.
            Err(_) => Ok(()),
        }
    }

    fn work_loop(&self) {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                // The job catches the closure's panic itself; this catches anything else
                // (a panicking destructor of a panic payload), so the worker survives.
                let _ = panic::catch_unwind(AssertUnwindSafe(job));
                state = lock(&self.state);
                continue;
            }
            if state.shutdown {
                break;
            }
            state.idle += 1;
            let deadline = Instant::now() + state.idle_timeout;
            let mut timed_out = false;
            while state.queue.is_empty() && !state.shutdown {
                let now = Instant::now();
                if now >= deadline {
                    timed_out = true;
                    break;
                }
                state = self
                    .work
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            state.idle -= 1;
            if timed_out {
                break;
            }
        }
        state.threads -= 1;
    }
}

/// Runs `f` on the default [`ThreadPool`] ([`ThreadPool::global`]) and returns a handle
/// to wait for its result; the calling green thread does not block until it calls
/// [`BlockingHandle::join`], and then only it waits, not its hub.
///
/// ```
/// use std::time::Duration;
///
/// let h = verdant::spawn_blocking(|| {
///     std::thread::sleep(Duration::from_millis(10)); // blocks a worker, not the hub
///     "done"
/// });
/// let other = verdant::spawn(|| "ran meanwhile");
/// assert_eq!(other.join().unwrap(), "ran meanwhile");
/// assert_eq!(h.join().unwrap(), "done");
/// ```
pub fn spawn_blocking<F, T>(f: F) -> BlockingHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ThreadPool::global().spawn(f)
}

/// Resolves `addr` to socket addresses on the default pool (`getaddrinfo` blocks the OS
/// thread, so it must not run on the hub). Accepts what `std::net::ToSocketAddrs` accepts,
/// owned: `("example.com".to_string(), 80)`, `"localhost:8080"`, a `SocketAddr`.
///
/// Meant to be re-exported by `verdant::net` as its resolver. A
/// [`Timeout`](crate::Timeout) covering the call returns an error of kind `TimedOut` (the
/// look-up finishes in the background).
///
/// ```
/// let addrs = verdant::threadpool::resolve(("localhost", 8080)).unwrap();
/// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080));
/// ```
pub fn resolve<A>(addr: A) -> io::Result<Vec<SocketAddr>>
where
    A: ToSocketAddrs + Send + 'static,
{
    spawn_blocking(move || addr.to_socket_addrs().map(Iterator::collect)).join()?
}

/// `std::fs::read` on the default pool: the whole file, without blocking the hub.
///
/// ```
/// let bytes = verdant::threadpool::read_file("Cargo.toml").unwrap();
/// assert!(bytes.starts_with(b"[package]"));
/// ```
pub fn read_file(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref().to_path_buf();
    spawn_blocking(move || std::fs::read(path)).join()?
}

/// `std::fs::write` on the default pool: creates or truncates the file and writes
/// `contents`, without blocking the hub.
///
/// ```
/// let path = std::env::temp_dir().join(format!("verdant-doc-{}", std::process::id()));
/// verdant::threadpool::write_file(&path, "hello").unwrap();
/// assert_eq!(verdant::threadpool::read_file(&path).unwrap(), b"hello");
/// std::fs::remove_file(path).unwrap();
/// ```
pub fn write_file(path: impl AsRef<Path>, contents: impl Into<Vec<u8>>) -> io::Result<()> {
    let path = path.as_ref().to_path_buf();
    let contents = contents.into();
    spawn_blocking(move || std::fs::write(path, contents)).join()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_wait_leaves_no_waker_registered() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let h = spawn_blocking(move || wait.recv().is_ok());
        let guard = crate::Timeout::start(Duration::from_millis(5));
        assert!(matches!(h.join(), Err(BlockingError::TimedOut)));
        drop(guard);
        // The worker still runs, but nobody waits for it: a lone park is a deadlock again.
        assert_eq!(hub::park(), Err(WaitError::WouldBlockForever));
        drop(release);
    }

    #[test]
    fn a_waiting_main_green_thread_is_not_a_deadlock() {
        let h = spawn_blocking(|| {
            thread::sleep(Duration::from_millis(20));
            5
        });
        // Nothing else could wake the main green thread; the worker's waker can.
        assert_eq!(h.join().unwrap(), 5);
    }
}
