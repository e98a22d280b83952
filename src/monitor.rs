//! The stall monitor: which green thread is blocking a hub, and in which system call.
//!
//! A green thread runs until it blocks on the hub. Code that blocks the OS thread instead (a
//! C library that spins, a CPU-bound loop, a regular-file read, a blocking call the
//! `monkey` feature's shim does not cover) stalls every other green thread of
//! that hub. Once started, the monitor notices a hub that has not switched for longer than a
//! threshold (default [`DEFAULT_THRESHOLD`], 100 ms) and reports a [`Stall`]: the OS thread,
//! the green thread that was running (id, name, where it was spawned) and, on Linux, the
//! system call its OS thread is blocked in (from `/proc/self/task/<tid>/syscall`). gevent's
//! monitor thread tells you that the loop was blocked; this tells you by what.
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::Duration;
//!
//! let (tx, stalls) = mpsc::channel();
//! let monitor = verdant::monitor::start_with(verdant::monitor::Config::new().report_to(tx));
//! let blocker = verdant::Builder::new()
//!     .name("blocker")
//!     .spawn(|| std::thread::sleep(Duration::from_millis(300))) // blocks the whole hub
//!     .unwrap();
//! blocker.join().unwrap();
//! monitor.stop();
//! let stall = stalls.recv().unwrap();
//! assert_eq!(stall.green_thread_name(), Some("blocker"));
//! println!("{stall}");
//! // verdant::monitor: the hub of thread 'main' (tid 4242) has not switched for 100 ms:
//! // green thread #3 'blocker' (spawned at src/main.rs:9:6) holds it, in system call
//! // clock_nanosleep (nr 230); ...
//! ```
//!
//! ## Design
//! ```text
//!  hub thread (each monitored hub)                 monitor thread (one per process)
//!  ───────────────────────────────                 ──────────────────────────────────
//!  run / hand-off to green thread #id:             every threshold/2:
//!    activity.running  = id        (relaxed)         for each watched hub:
//!    activity.switches += 1        (relaxed)           switches changed, or the hub is in
//!  hub polls (idle, or between turns):                 its own loop → progress; end a stall
//!    activity.running  = 0         (relaxed)           unchanged for ≥ threshold with a green
//!    activity.switches += 1                            thread running → report it once, with
//!                                                      /proc/self/task/<tid>/syscall
//! ```
//! Every hub has its activity record (an `Arc` of atomics, created with the hub); the hot
//! path pays two relaxed stores per switch, whether a monitor runs or not. Names and spawn
//! sites are copied into the record only while a monitor watches the hub: the monitor
//! cannot read a green thread's record (it lives on the hub's thread), so green threads
//! spawned before their hub was watched are reported by id only. Start the monitor early.
//!
//! A stall is reported once, when the monitor first sees it last at least the threshold, and
//! once more when the hub switches again, with its duration ([`Stall::is_over`]). Both are
//! measured by the monitor's samples, so they can be off by up to half the threshold, and a
//! stall shorter than one and a half thresholds may go unreported. The main green thread
//! counts too: a thread's own code that computes for a second without touching the hub holds
//! back every green thread of that hub, and is reported.
//!
//! Which hubs: [`start`] and [`start_with`] watch the calling thread's hub (created if
//! needed); [`Monitor::watch_this_thread`] adds another thread's, and
//! [`Config::watch_new_hubs`] every hub created after the monitor starts (gevent's
//! `config.monitor_thread` is process-wide in the same way). Several monitors may run at
//! once, each with its own hubs, threshold and reporter; one background OS thread samples
//! for all of them and ends when the last one stops.
//!
//! Under user-mode emulation (`qemu-aarch64` on an x86_64 host) `/proc` describes the
//! emulator's own thread, with the host's numbers and addresses. The monitor checks once
//! that the program counter the kernel reports for its own thread lies in this process's
//! code; where it does not, every answer is [`Syscall::Unknown`]. On systems other than
//! Linux the system call is always [`Syscall::Unknown`].

use crate::sys::thread::{self as os_thread, ThreadSyscall};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// How long a hub may go without switching before it is reported, unless
/// [`Config::threshold`] says otherwise.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(100);

/// `HubActivity::running` while the hub's own loop runs (task ids start at 1).
const IN_HUB: u64 = 0;

/// Locks `m`, ignoring poisoning: every value guarded here stays consistent across a panic
/// (report callbacks run outside every lock, under `catch_unwind`).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the monitor thread knows about one hub: written by the hub's thread, read by the
/// monitor's. Created with the hub, whether a monitor runs or not.
pub(crate) struct HubActivity {
    /// Bumped at every switch into a green thread and every time the hub polls.
    switches: AtomicU64,
    /// The id of the green thread running now, or [`IN_HUB`].
    running: AtomicU64,
    /// How many monitors watch this hub: while 0, spawns record nothing.
    watchers: AtomicUsize,
    /// `tasks.len()`, readable without the lock (a finishing green thread checks it).
    tasks_len: AtomicUsize,
    /// Names and spawn sites of this hub's green threads, recorded while watched.
    tasks: Mutex<HashMap<u64, TaskInfo>>,
    thread_name: Option<String>,
    thread_id: ThreadId,
    os_tid: Option<u64>,
}

#[derive(Clone)]
struct TaskInfo {
    name: Option<String>,
    spawned_at: Option<&'static Location<'static>>,
    is_main: bool,
}

impl HubActivity {
    /// The record of a hub being created on the calling thread; watched at once by the
    /// monitors that watch every new hub.
    pub(crate) fn for_new_hub() -> Arc<HubActivity> {
        let me = thread::current();
        let activity = Arc::new(HubActivity {
            switches: AtomicU64::new(0),
            running: AtomicU64::new(IN_HUB),
            watchers: AtomicUsize::new(0),
            tasks_len: AtomicUsize::new(0),
            tasks: Mutex::new(HashMap::new()),
            thread_name: me.name().map(str::to_owned),
            thread_id: me.id(),
            os_tid: os_thread::current_os_tid(),
        });
        if WATCH_NEW_HUBS.load(Ordering::Acquire) > 0 && !on_monitor_thread() {
            let monitors = lock(&SHARED).monitors.clone();
            for m in monitors.iter().filter(|m| m.watch_new_hubs) {
                m.watch(&activity);
            }
        }
        activity
    }

    /// Green thread `task` starts or resumes running (the hub's hot path: two relaxed
    /// stores; only this hub's thread writes, so the increment needs no atomic RMW).
    #[inline]
    pub(crate) fn enter(&self, task: u64) {
        self.running.store(task, Ordering::Relaxed);
        let n = self.switches.load(Ordering::Relaxed);
        self.switches.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// The hub's own loop runs (it is about to poll): whatever it waits for, no green
    /// thread is blocking it.
    #[inline]
    pub(crate) fn enter_hub(&self) {
        self.enter(IN_HUB);
    }

    /// Whether a monitor watches this hub (then spawns record their name and site).
    #[inline]
    pub(crate) fn is_watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Records a green thread spawned while the hub is watched.
    #[cold]
    pub(crate) fn spawned(&self, id: u64, name: Option<&str>, at: &'static Location<'static>) {
        self.record(
            id,
            TaskInfo {
                name: name.map(str::to_owned),
                spawned_at: Some(at),
                is_main: false,
            },
        );
    }

    /// A green thread the hub did not spawn (the thread's main one, or one switched to by
    /// hand) becomes the current one; the main one is recorded by name while watched (others
    /// are reported by id). Out of line: its caller is on the hub's hot path.
    #[cold]
    #[inline(never)]
    pub(crate) fn adhoc_task(&self, task: &crate::hub::TaskRef) {
        self.enter(task.id);
        if self.is_watched() && task.greenlet.is_main() {
            self.record_main(task.id);
        }
    }

    fn record_main(&self, id: u64) {
        self.record(
            id,
            TaskInfo {
                name: Some("main".to_owned()),
                spawned_at: None,
                is_main: true,
            },
        );
    }

    fn record(&self, id: u64, info: TaskInfo) {
        let mut tasks = lock(&self.tasks);
        tasks.insert(id, info);
        self.tasks_len.store(tasks.len(), Ordering::Relaxed);
    }

    /// Green thread `id` finished: forget its record, if one was made.
    #[inline]
    pub(crate) fn finished(&self, id: u64) {
        if self.tasks_len.load(Ordering::Relaxed) > 0 {
            self.forget(id);
        }
    }

    #[cold]
    fn forget(&self, id: u64) {
        let mut tasks = lock(&self.tasks);
        tasks.remove(&id);
        self.tasks_len.store(tasks.len(), Ordering::Relaxed);
    }

    fn unwatch(&self) {
        if self.watchers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut tasks = lock(&self.tasks);
            tasks.clear();
            self.tasks_len.store(0, Ordering::Relaxed);
        }
    }

    fn task_info(&self, id: u64) -> Option<TaskInfo> {
        lock(&self.tasks).get(&id).cloned()
    }
}

/// The system call a stalled hub's OS thread was seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syscall {
    /// Running in user space, not in the kernel: a busy loop, a computation, a spin.
    Running,
    /// Blocked in (or executing) a system call. `name` is known for the common blocking
    /// calls (`read`, `clock_nanosleep`, `futex`, `epoll_wait`, `recvfrom`, ...).
    Blocked {
        /// The call's number on this target.
        number: i64,
        /// The call's name, if the monitor knows it.
        name: Option<&'static str>,
    },
    /// In the kernel outside a system call (a page fault, for instance).
    InKernel,
    /// This platform does not say (not Linux, `/proc` not readable, the thread is gone,
    /// user-mode emulation).
    Unknown,
}

impl Syscall {
    fn of(state: ThreadSyscall) -> Syscall {
        match state {
            ThreadSyscall::Running => Syscall::Running,
            ThreadSyscall::InSyscall(number) => Syscall::Blocked {
                number,
                name: os_thread::syscall_name(number),
            },
            ThreadSyscall::InKernel => Syscall::InKernel,
            ThreadSyscall::Unknown => Syscall::Unknown,
        }
    }

    /// The system call's name, if the thread is in one the monitor knows.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Syscall::Blocked { name, .. } => *name,
            _ => None,
        }
    }
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syscall::Running => f.write_str("running, not in a system call"),
            Syscall::Blocked {
                number,
                name: Some(name),
            } => write!(f, "in system call {name} (nr {number})"),
            Syscall::Blocked { number, name: None } => write!(f, "in system call {number}"),
            Syscall::InKernel => f.write_str("in the kernel, outside a system call"),
            Syscall::Unknown => f.write_str("system call unknown on this platform"),
        }
    }
}

/// One report of the monitor: a hub that has not switched for at least the threshold
/// ([`is_over`](Self::is_over) `false`), or the end of such a stall (`true`, with its whole
/// duration). `Display` writes one line that says what blocked the hub and what to do.
#[derive(Clone, Debug)]
pub struct Stall {
    thread_name: Option<String>,
    thread_id: ThreadId,
    os_tid: Option<u64>,
    green_id: u64,
    green: Option<TaskInfo>,
    duration: Duration,
    syscall: Syscall,
    over: bool,
}

impl fmt::Debug for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskInfo")
            .field("name", &self.name)
            .field("spawned_at", &self.spawned_at)
            .field("is_main", &self.is_main)
            .finish()
    }
}

impl Stall {
    /// The name of the OS thread whose hub stalled, if it has one.
    pub fn thread_name(&self) -> Option<&str> {
        self.thread_name.as_deref()
    }

    /// The id of the OS thread whose hub stalled.
    pub fn thread_id(&self) -> ThreadId {
        self.thread_id
    }

    /// The kernel's id of that OS thread (Linux `gettid`), where the platform has one.
    pub fn os_thread_id(&self) -> Option<u64> {
        self.os_tid
    }

    /// The id of the green thread that was running (as [`crate::current`] and
    /// [`JoinHandle::id`](crate::JoinHandle::id) report it).
    pub fn green_thread_id(&self) -> u64 {
        self.green_id
    }

    /// Its name: the one given to [`Builder::name`](crate::Builder::name), `"main"` for the
    /// thread's main green thread; `None` if unnamed or spawned before the hub was watched.
    pub fn green_thread_name(&self) -> Option<&str> {
        self.green.as_ref()?.name.as_deref()
    }

    /// Where it was spawned (the caller of `spawn`, `spawn_later` or `Builder::spawn`),
    /// if it was spawned while its hub was watched.
    pub fn spawned_at(&self) -> Option<&'static Location<'static>> {
        self.green.as_ref()?.spawned_at
    }

    /// Whether it was the OS thread's main green thread (the thread's own code).
    pub fn is_main_green_thread(&self) -> bool {
        self.green.as_ref().is_some_and(|g| g.is_main)
    }

    /// How long the hub had not switched: so far, or in all once [`is_over`](Self::is_over).
    /// Measured by the monitor's samples: within half the threshold.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The system call the OS thread was in when the stall was first reported.
    pub fn syscall(&self) -> Syscall {
        self.syscall
    }

    /// Whether the hub has switched again (this is the stall's end report).
    pub fn is_over(&self) -> bool {
        self.over
    }

    fn write_green_thread(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "green thread #{}", self.green_id)?;
        if let Some(name) = self.green_thread_name() {
            write!(f, " '{name}'")?;
        }
        if let Some(at) = self.spawned_at() {
            write!(f, " (spawned at {at})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("verdant::monitor: the hub of thread ")?;
        match &self.thread_name {
            Some(name) => write!(f, "'{name}'")?,
            None => write!(f, "{:?}", self.thread_id)?,
        }
        if let Some(tid) = self.os_tid {
            write!(f, " (tid {tid})")?;
        }
        let ms = self.duration.as_millis();
        if self.over {
            write!(f, " switched again after {ms} ms blocked by ")?;
            self.write_green_thread(f)?;
            write!(f, "; when first reported: {}", self.syscall)
        } else {
            write!(f, " has not switched for {ms} ms: ")?;
            self.write_green_thread(f)?;
            write!(
                f,
                " holds it, {}; every other green thread of this hub waits. Make the call \
                 cooperative (verdant::net, verdant::sleep, the monkey feature), move it to \
                 verdant::spawn_blocking, or call verdant::yield_now in long loops",
                self.syscall
            )
        }
    }
}

type Reporter = Box<dyn Fn(&Stall) + Send + Sync>;

/// What to monitor and how to report, for [`start_with`].
///
/// ```
/// use std::time::Duration;
///
/// let config = verdant::monitor::Config::new()
///     .threshold(Duration::from_millis(250))
///     .report(|stall| eprintln!("{stall}"))
///     .watch_new_hubs(true);
/// let monitor = verdant::monitor::start_with(config);
/// assert_eq!(monitor.threshold(), Duration::from_millis(250));
/// ```
pub struct Config {
    threshold: Duration,
    report: Reporter,
    watch_new_hubs: bool,
}

impl Config {
    /// Threshold [`DEFAULT_THRESHOLD`], reports written to stderr, only the calling thread's
    /// hub.
    pub fn new() -> Config {
        Config {
            threshold: DEFAULT_THRESHOLD,
            report: Box::new(|stall| {
                // Nothing useful can be done if stderr is gone.
                let _ = writeln!(std::io::stderr().lock(), "{stall}");
            }),
            watch_new_hubs: false,
        }
    }

    /// How long a hub may go without switching before it is reported.
    ///
    /// # Panics
    /// If `threshold` is zero (every hub would always be stalled).
    pub fn threshold(mut self, threshold: Duration) -> Config {
        assert!(
            !threshold.is_zero(),
            "verdant::monitor::Config::threshold: the threshold must be longer than zero"
        );
        self.threshold = threshold;
        self
    }

    /// Calls `report` (on the monitor's thread) for each stall and for its end, instead of
    /// writing them to stderr. A panic in `report` is caught; the monitor keeps running.
    pub fn report(mut self, report: impl Fn(&Stall) + Send + Sync + 'static) -> Config {
        self.report = Box::new(report);
        self
    }

    /// Sends each report to `tx` (to collect them, in tests for instance); once the
    /// receiver is gone, reports are dropped.
    pub fn report_to(self, tx: mpsc::Sender<Stall>) -> Config {
        self.report(move |stall| {
            let _ = tx.send(stall.clone());
        })
    }

    /// Also watch the hub of every OS thread that creates one after the monitor started
    /// (a thread creates its hub on first use of verdant).
    pub fn watch_new_hubs(mut self, yes: bool) -> Config {
        self.watch_new_hubs = yes;
        self
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("threshold", &self.threshold)
            .field("watch_new_hubs", &self.watch_new_hubs)
            .finish_non_exhaustive()
    }
}

/// One hub as a monitor sees it.
struct Watch {
    activity: Weak<HubActivity>,
    /// The switch count at the last sample, and when the monitor first saw it.
    seen: u64,
    since: Instant,
    /// The stall reported and not yet over.
    stall: Option<Stall>,
}

/// One running monitor.
struct Inner {
    threshold: Duration,
    report: Reporter,
    watch_new_hubs: bool,
    hubs: Mutex<Vec<Watch>>,
    /// Held while `report` runs; `stop` takes it once `stopped` is set, so that no report
    /// is delivered after `stop` returns.
    reporting: Mutex<()>,
    stopped: AtomicBool,
}

impl Inner {
    fn watch(&self, activity: &Arc<HubActivity>) {
        let mut hubs = lock(&self.hubs);
        let weak = Arc::downgrade(activity);
        if hubs.iter().any(|w| Weak::ptr_eq(&w.activity, &weak)) {
            return;
        }
        activity.watchers.fetch_add(1, Ordering::AcqRel);
        hubs.push(Watch {
            activity: weak,
            seen: activity.switches.load(Ordering::Relaxed),
            since: Instant::now(),
            stall: None,
        });
    }

    /// Looks at every watched hub once; returns the reports to deliver.
    fn sample(&self, now: Instant) -> Vec<Stall> {
        let mut reports = Vec::new();
        let mut hubs = lock(&self.hubs);
        hubs.retain_mut(|w| {
            let Some(activity) = w.activity.upgrade() else {
                // The thread exited (its hub with it), mid-stall or not.
                if let Some(stall) = w.stall.take() {
                    reports.push(ended(stall, now - w.since));
                }
                return false;
            };
            let running = activity.running.load(Ordering::Relaxed);
            let switches = activity.switches.load(Ordering::Relaxed);
            if switches != w.seen || running == IN_HUB {
                if let Some(stall) = w.stall.take() {
                    reports.push(ended(stall, now - w.since));
                }
                w.seen = switches;
                w.since = now;
                return true;
            }
            let stalled = now - w.since;
            if stalled < self.threshold || w.stall.is_some() {
                return true;
            }
            let syscall = Syscall::of(
                activity
                    .os_tid
                    .map_or(ThreadSyscall::Unknown, os_thread::thread_syscall),
            );
            if activity.switches.load(Ordering::Relaxed) != w.seen {
                // It ended while /proc was read: the next sample sees the progress.
                return true;
            }
            let stall = Stall {
                thread_name: activity.thread_name.clone(),
                thread_id: activity.thread_id,
                os_tid: activity.os_tid,
                green_id: running,
                green: activity.task_info(running),
                duration: stalled,
                syscall,
                over: false,
            };
            reports.push(stall.clone());
            w.stall = Some(stall);
            true
        });
        reports
    }

    fn deliver(&self, stall: &Stall) {
        let _reporting = lock(&self.reporting);
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        // The default panic hook has printed the panic; the monitor keeps going.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| (self.report)(stall)));
    }
}

fn ended(mut stall: Stall, duration: Duration) -> Stall {
    stall.duration = duration;
    stall.over = true;
    stall
}

/// The monitors of the process and their one sampling thread.
struct Shared {
    monitors: Vec<Arc<Inner>>,
    /// Changed whenever the sampling thread should end (the last monitor stopped); a
    /// thread whose generation is not the current one ends.
    generation: u64,
    thread: Option<JoinHandle<()>>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    monitors: Vec::new(),
    generation: 0,
    thread: None,
});
static WAKE: Condvar = Condvar::new();
/// Running monitors that watch new hubs (so that creating a hub costs no lock otherwise).
static WATCH_NEW_HUBS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IS_MONITOR_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_monitor_thread() -> bool {
    IS_MONITOR_THREAD
        .try_with(std::cell::Cell::get)
        .unwrap_or(false)
}

fn sampling_thread(generation: u64) {
    IS_MONITOR_THREAD.set(true);
    let mut shared = lock(&SHARED);
    while shared.generation == generation {
        let monitors = shared.monitors.clone();
        let period = monitors
            .iter()
            .map(|m| m.threshold / 2)
            .min()
            .unwrap_or(DEFAULT_THRESHOLD / 2)
            .max(Duration::from_millis(1));
        drop(shared);
        let now = Instant::now();
        for m in &monitors {
            for stall in m.sample(now) {
                m.deliver(&stall);
            }
        }
        drop(monitors);
        shared = lock(&SHARED);
        if shared.generation != generation {
            break;
        }
        shared = WAKE
            .wait_timeout(shared, period)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// A running monitor; [`stop`](Self::stop) it, or drop it, to end its reports.
///
/// ```
/// let monitor = verdant::monitor::start();
/// verdant::sleep(std::time::Duration::from_millis(10)).unwrap(); // switches: no report
/// monitor.stop();
/// ```
#[must_use = "dropping the Monitor stops it at once; bind it to a variable that lives as long as the monitoring should"]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// Starts a monitor with the default [`Config`]: the calling thread's hub, threshold
/// [`DEFAULT_THRESHOLD`], reports on stderr.
pub fn start() -> Monitor {
    start_with(Config::new())
}

/// Starts a monitor of the calling thread's hub (created if needed), and of every new hub
/// if [`Config::watch_new_hubs`] says so.
pub fn start_with(config: Config) -> Monitor {
    let inner = Arc::new(Inner {
        threshold: config.threshold,
        report: config.report,
        watch_new_hubs: config.watch_new_hubs,
        hubs: Mutex::new(Vec::new()),
        reporting: Mutex::new(()),
        stopped: AtomicBool::new(false),
    });
    let monitor = Monitor { inner };
    monitor.watch_this_thread();
    let mut shared = lock(&SHARED);
    if monitor.inner.watch_new_hubs {
        WATCH_NEW_HUBS.fetch_add(1, Ordering::AcqRel);
    }
    shared.monitors.push(monitor.inner.clone());
    if shared.thread.is_none() {
        shared.generation += 1;
        let generation = shared.generation;
        let spawned = thread::Builder::new()
            .name("verdant-monitor".into())
            .spawn(move || sampling_thread(generation));
        match spawned {
            Ok(handle) => shared.thread = Some(handle),
            Err(e) => panic!(
                "verdant::monitor::start: could not start the monitor's OS thread: {e} \
                 (out of threads or memory?)"
            ),
        }
    }
    // A shorter threshold than the others' takes effect at once.
    WAKE.notify_all();
    drop(shared);
    monitor
}

impl Monitor {
    /// Also watches the calling thread's hub (created if needed). Watching it twice is a
    /// no-op.
    pub fn watch_this_thread(&self) {
        let hub = crate::hub::hub();
        self.inner.watch(&hub.activity);
        // The thread's current green thread (its main one, usually) by name.
        let task = crate::hub::current_task();
        if task.greenlet.is_main() {
            hub.activity.record_main(task.id);
        }
    }

    /// The threshold this monitor reports stalls above.
    pub fn threshold(&self) -> Duration {
        self.inner.threshold
    }

    /// Stops the monitor: once this returns, it delivers no more reports (a stall reported
    /// and not over gets no end report). The monitor's OS thread ends with the last monitor.
    pub fn stop(self) {}
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let on_monitor_thread = on_monitor_thread();
        let thread = {
            let mut shared = lock(&SHARED);
            shared.monitors.retain(|m| !Arc::ptr_eq(m, &self.inner));
            if self.inner.watch_new_hubs {
                WATCH_NEW_HUBS.fetch_sub(1, Ordering::AcqRel);
            }
            let thread = if shared.monitors.is_empty() {
                shared.generation += 1;
                shared.thread.take()
            } else {
                None
            };
            WAKE.notify_all();
            thread
        };
        self.inner.stopped.store(true, Ordering::Release);
        if !on_monitor_thread {
            // Waits for a report being delivered right now (a report callback that stops its
            // own monitor already holds the lock).
            drop(lock(&self.inner.reporting));
        }
        for w in lock(&self.inner.hubs).drain(..) {
            if let Some(activity) = w.activity.upgrade() {
                activity.unwatch();
            }
        }
        if let Some(thread) = thread.filter(|_| !on_monitor_thread) {
            // The thread only samples and reports; a panic there was a report's, caught.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("threshold", &self.inner.threshold)
            .field("watch_new_hubs", &self.inner.watch_new_hubs)
            .field("hubs", &lock(&self.inner.hubs).len())
            .finish()
    }
}
