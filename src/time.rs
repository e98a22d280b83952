//! Time for green threads: [`sleep`], and [`Timeout`], which bounds every blocking call in
//! its scope (gevent's `gevent.sleep`, `gevent.Timeout` and `with_timeout`).
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! // Two green threads sleeping 30 ms each take about 30 ms together, not 60.
//! let start = Instant::now();
//! let a = verdant::spawn(|| verdant::sleep(Duration::from_millis(30)));
//! let b = verdant::spawn(|| verdant::sleep(Duration::from_millis(30)));
//! a.join().unwrap();
//! b.join().unwrap();
//! assert!(start.elapsed() >= Duration::from_millis(30));
//! ```

use crate::hub::{self, TimerAction, WaitError};
use crate::timer::TimerKey;
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Blocks the current green thread for at least `duration`; other green threads run
/// meanwhile. `sleep(Duration::ZERO)` yields (see [`yield_now`](crate::yield_now)).
///
/// Returns early with `Err(WaitError::TimedOut)` if a [`Timeout`] covering it fires; a
/// kill unwinds out of it.
pub fn sleep(duration: Duration) -> Result<(), WaitError> {
    if duration.is_zero() {
        crate::yield_now();
        return Ok(());
    }
    sleep_until(Instant::now() + duration)
}

/// Blocks the current green thread until `deadline` (see [`sleep`]).
pub fn sleep_until(deadline: Instant) -> Result<(), WaitError> {
    while Instant::now() < deadline {
        match hub::park_until(deadline) {
            Ok(_) => {}
            Err(WaitError::WouldBlockForever) => unreachable!("a pending deadline can wake us"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error of [`with_timeout`]: the time limit elapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// The time limit that elapsed.
    pub fn duration(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// A guard that bounds every blocking call of the current green thread while it lives.
///
/// Once `duration` has passed, the blocking call in progress (and every later one, until
/// the guard is dropped) returns its timed-out error: `WaitError::TimedOut`,
/// `JoinError::TimedOut`, an `io::Error` of kind `TimedOut`. Timeouts nest: the earliest
/// one to fire interrupts. Dropping the guard cancels it and leaves nothing registered.
///
/// ```
/// use std::time::Duration;
/// use verdant::{Timeout, WaitError};
///
/// let guard = Timeout::start(Duration::from_millis(10));
/// let r = verdant::sleep(Duration::from_secs(60));
/// assert_eq!(r, Err(WaitError::TimedOut));
/// assert!(guard.expired());
/// ```
pub struct Timeout {
    key: TimerKey,
    fired: Rc<Cell<bool>>,
    task: hub::TaskRef,
    duration: Duration,
}

impl Timeout {
    /// Starts a timeout of `duration` for the current green thread.
    pub fn start(duration: Duration) -> Timeout {
        let task = hub::current_task();
        let fired = Rc::new(Cell::new(false));
        let key = hub::hub().add_timer(
            Instant::now() + duration,
            TimerAction::Expire(task.clone(), fired.clone()),
        );
        Timeout {
            key,
            fired,
            task,
            duration,
        }
    }

    /// Whether the time limit has passed.
    pub fn expired(&self) -> bool {
        self.fired.get()
    }

    /// The time limit this guard was started with.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if self.fired.get() {
            self.task.expired.set(self.task.expired.get() - 1);
        } else {
            hub::hub().cancel_timer(self.key);
        }
    }
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("duration", &self.duration)
            .field("expired", &self.fired.get())
            .finish()
    }
}

/// Runs `f` with a [`Timeout`] of `duration`: `Ok(value)` if it finished in time,
/// `Err(Elapsed)` if the time limit passed while it ran (its own result, typically the
/// timed-out error of the call that was interrupted, is dropped).
///
/// ```
/// use std::time::Duration;
/// let r = verdant::with_timeout(Duration::from_millis(5), || {
///     verdant::sleep(Duration::from_secs(60))
/// });
/// assert!(r.is_err());
/// let r = verdant::with_timeout(Duration::from_secs(60), || 7);
/// assert_eq!(r, Ok(7));
/// ```
pub fn with_timeout<T>(duration: Duration, f: impl FnOnce() -> T) -> Result<T, Elapsed> {
    let guard = Timeout::start(duration);
    let value = f();
    if guard.expired() {
        Err(Elapsed { after: duration })
    } else {
        Ok(value)
    }
}
