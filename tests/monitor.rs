//! The stall monitor: a green thread that blocks its OS thread is reported by name, id and
//! spawn site, with the system call it is blocked in where the platform tells; a hub that
//! switches is not reported; `stop` ends the reports.
//!
//! Tests run in parallel in this process, each with its own monitor of its own thread's hub
//! (reports are filtered by green thread or OS thread name where other hubs could show up).
//! Nothing here patches libc: `std::thread::sleep` really blocks the hub.

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};
use verdant::monitor::{self, Config, Stall, Syscall};

/// Waits cooperatively (the hub keeps switching) for a report that `pred` accepts, for at
/// most 20 s (qemu is slow); returns every report seen meanwhile, the accepted one last.
fn wait_for(rx: &Receiver<Stall>, pred: impl Fn(&Stall) -> bool) -> Vec<Stall> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(stall) => {
                let found = pred(&stall);
                seen.push(stall);
                if found {
                    return seen;
                }
            }
            Err(TryRecvError::Empty) if Instant::now() < deadline => {
                verdant::sleep(Duration::from_millis(5)).unwrap();
            }
            Err(e) => panic!("no matching report ({e:?}); reports seen: {seen:#?}"),
        }
    }
}

/// Whether the platform reports syscalls as the test binary's own CPU numbers them:
/// native Linux x86_64 (aarch64 runs here under qemu-user, where `/proc` shows the host's).
const NATIVE_SYSCALLS: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

#[test]
fn a_green_thread_blocked_in_a_syscall_is_reported_with_its_name_id_site_and_syscall() {
    let (tx, rx) = mpsc::channel();
    let monitor = monitor::start_with(Config::new().report_to(tx));
    let line = line!() + 3;
    let sleeper = verdant::Builder::new()
        .name("sleeper")
        .spawn(|| std::thread::sleep(Duration::from_millis(300)))
        .unwrap();
    let id = sleeper.id();
    sleeper.join().unwrap();
    let is_sleeper = |s: &Stall| s.green_thread_id() == id;
    let reports = wait_for(&rx, |s| is_sleeper(s) && s.is_over());
    monitor.stop();

    let stall = reports
        .iter()
        .find(|s| is_sleeper(s) && !s.is_over())
        .unwrap_or_else(|| panic!("no stall report before its end: {reports:#?}"));
    assert_eq!(stall.green_thread_name(), Some("sleeper"));
    assert!(!stall.is_main_green_thread());
    let site = stall
        .spawned_at()
        .expect("spawned while watched: site known");
    assert!(site.file().ends_with("monitor.rs"), "{site}");
    assert_eq!(site.line(), line, "{site}");
    assert_eq!(stall.thread_id(), std::thread::current().id());
    assert!(stall.duration() >= monitor::DEFAULT_THRESHOLD, "{stall:?}");
    if cfg!(target_os = "linux") {
        assert!(stall.os_thread_id().is_some());
    }
    if NATIVE_SYSCALLS {
        // glibc's nanosleep is clock_nanosleep on current systems, nanosleep on old ones.
        let name = stall.syscall().name();
        assert!(
            matches!(name, Some("clock_nanosleep" | "nanosleep")),
            "{:?}",
            stall.syscall()
        );
    }
    let text = stall.to_string();
    assert!(
        text.contains(&format!("green thread #{id} 'sleeper' (spawned at {site})")),
        "{text}"
    );
    assert!(text.contains("has not switched for"), "{text}");
    eprintln!("{text}");

    let end = reports.last().unwrap();
    assert!(end.is_over());
    assert_eq!(end.green_thread_name(), Some("sleeper"));
    // Slept 300 ms: the samples may be off by half the threshold, a loaded machine more.
    assert!(end.duration() >= Duration::from_millis(200), "{end:?}");
    assert!(end.to_string().contains("switched again after"), "{end}");
    eprintln!("{end}");
}

#[test]
fn a_busy_loop_is_reported_as_running() {
    let (tx, rx) = mpsc::channel();
    let monitor = monitor::start_with(Config::new().report_to(tx));
    let spinner = verdant::Builder::new()
        .name("spinner")
        .spawn(|| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(400) {
                for _ in 0..10_000 {
                    n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
                }
            }
            n
        })
        .unwrap();
    let id = spinner.id();
    spinner.join().unwrap();
    let reports = wait_for(&rx, |s| s.green_thread_id() == id && !s.is_over());
    monitor.stop();
    let stall = reports.last().unwrap();
    assert_eq!(stall.green_thread_name(), Some("spinner"));
    eprintln!("{stall}");
    if NATIVE_SYSCALLS {
        assert_eq!(stall.syscall(), Syscall::Running);
        assert!(stall.to_string().contains("running, not in a system call"));
    }
}

#[test]
fn a_hub_that_switches_is_not_reported() {
    let (tx, rx) = mpsc::channel();
    let threshold = Duration::from_millis(200);
    let monitor = monitor::start_with(Config::new().threshold(threshold).report_to(tx));
    // 10 green threads, 60 short sleeps each: the hub switches all the time, and idles in
    // between (its own loop waiting is never a stall).
    let sleepers: Vec<_> = (0..10)
        .map(|i| {
            verdant::Builder::new()
                .name(format!("short-sleeper-{i}"))
                .spawn(|| {
                    for _ in 0..60 {
                        verdant::sleep(Duration::from_millis(3)).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for r in verdant::joinall(sleepers) {
        r.unwrap();
    }
    // Idle on the hub for longer than the threshold: not a stall either.
    verdant::sleep(threshold * 3).unwrap();
    let before: Vec<Stall> = rx.try_iter().collect();
    assert!(
        before.is_empty(),
        "reports for a switching hub: {before:#?}"
    );

    // The same monitor does see a real stall: the silence above was not a dead monitor.
    let blocker = verdant::Builder::new()
        .name("blocker")
        .spawn(move || std::thread::sleep(threshold * 3))
        .unwrap();
    let id = blocker.id();
    blocker.join().unwrap();
    wait_for(&rx, |s| s.green_thread_id() == id);
    monitor.stop();
}

#[test]
fn stop_ends_the_reports() {
    let (tx, rx) = mpsc::channel();
    let monitor = monitor::start_with(Config::new().report_to(tx));
    monitor.stop();
    verdant::Builder::new()
        .name("blocker-after-stop")
        .spawn(|| std::thread::sleep(Duration::from_millis(400)))
        .unwrap()
        .join()
        .unwrap();
    // Nothing was reported, and the reporter (this channel's sender) is gone with the
    // monitor: once stopped, it can never report again.
    match rx.try_recv() {
        Err(TryRecvError::Disconnected) => {}
        other => panic!("expected no report and a dropped reporter, got {other:?}"),
    }
}

#[test]
fn watch_new_hubs_reports_a_thread_started_later() {
    let (tx, rx) = mpsc::channel();
    let monitor = monitor::start_with(Config::new().watch_new_hubs(true).report_to(tx));
    let thread = std::thread::Builder::new()
        .name("stalling-os-thread".into())
        .spawn(|| {
            let h = verdant::Builder::new()
                .name("inner")
                .spawn(|| std::thread::sleep(Duration::from_millis(300)))
                .unwrap();
            let id = h.id();
            h.join().unwrap();
            id
        })
        .unwrap();
    // Joined on the thread pool: this thread's hub keeps switching meanwhile.
    let id = verdant::spawn_blocking(move || thread.join().unwrap())
        .join()
        .unwrap();
    let reports = wait_for(&rx, |s| {
        s.thread_name() == Some("stalling-os-thread") && s.green_thread_id() == id
    });
    monitor.stop();
    let stall = reports.last().unwrap();
    assert_eq!(stall.green_thread_name(), Some("inner"));
    assert_ne!(stall.thread_id(), std::thread::current().id());
}

#[test]
fn a_report_callback_may_stop_its_own_monitor() {
    use std::sync::{Arc, Mutex};
    let slot: Arc<Mutex<Option<monitor::Monitor>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let in_callback = slot.clone();
    let monitor = monitor::start_with(Config::new().report(move |stall| {
        let _ = tx.send(stall.clone());
        // Dropping the monitor from its own report: must not deadlock.
        drop(in_callback.lock().unwrap().take());
    }));
    *slot.lock().unwrap() = Some(monitor);
    for _ in 0..2 {
        verdant::spawn(|| std::thread::sleep(Duration::from_millis(300)))
            .join()
            .unwrap();
    }
    // One report, then the callback stopped the monitor: the second stall is not seen.
    let first = wait_for(&rx, |_| true);
    assert_eq!(first.len(), 1);
    verdant::sleep(Duration::from_millis(200)).unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    assert!(slot.lock().unwrap().is_none());
}
