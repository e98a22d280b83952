//! OS threads as the stall monitor sees them: the kernel's id of the calling thread, and the
//! system call another thread of this process is blocked in.
//!
//! Linux exposes both: `gettid(2)`, and `/proc/self/task/<tid>/syscall`, whose first field
//! is the number of the system call the thread is blocked in, `running` when it is on a CPU
//! (or waiting for one) in user space, or `-1` when it is in the kernel outside a system call
//! (a page fault, for instance). Other systems report [`ThreadSyscall::Unknown`].
//!
//! Under user-mode emulation (`qemu-aarch64` on an x86_64 host) the kernel describes the
//! emulator's own thread, with the host's system call numbers and addresses, and `running`
//! whenever the emulator's thread is, whatever the emulated one does. The line also gives
//! the thread's user-space program counter: an answer is believed only if, when the calling
//! thread reads its own line (it is then in the `read` call), that address lies in an
//! executable mapping of this process (`/proc/self/maps`, which the emulator does
//! translate), and for a blocked thread only if its own address does too; otherwise the
//! answer is [`ThreadSyscall::Unknown`].

/// What an OS thread is doing in the kernel, read from outside that thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadSyscall {
    /// Running (or runnable) in user space: not in the kernel.
    Running,
    /// Blocked in (or executing) system call number `nr`.
    InSyscall(i64),
    /// In the kernel, but not in a system call (a page fault, for instance).
    InKernel,
    /// The platform cannot tell, or the thread is gone.
    Unknown,
}

/// The kernel's id of the calling OS thread (`gettid`), where the OS has one that
/// [`thread_syscall`] can use.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn current_os_tid() -> Option<u64> {
    // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u64::try_from(tid).ok()
}

/// The kernel's id of the calling OS thread, where the OS has one that
/// [`thread_syscall`] can use.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn current_os_tid() -> Option<u64> {
    None
}

/// What OS thread `tid` of this process is doing in the kernel right now.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn thread_syscall(tid: u64) -> ThreadSyscall {
    static TRUSTWORTHY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let trustworthy = *TRUSTWORTHY.get_or_init(|| {
        // Reading its own line, the calling thread is in a system call, at a known address.
        current_os_tid()
            .and_then(|me| std::fs::read_to_string(format!("/proc/self/task/{me}/syscall")).ok())
            .is_some_and(|own| {
                matches!(parse_proc_syscall(&own), ThreadSyscall::InSyscall(_))
                    && proc_syscall_pc(&own).is_some_and(is_executable_address)
            })
    });
    if !trustworthy {
        return ThreadSyscall::Unknown;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return ThreadSyscall::Unknown;
    };
    let state = parse_proc_syscall(&text);
    if state == ThreadSyscall::Running {
        return state;
    }
    match proc_syscall_pc(&text) {
        Some(pc) if is_executable_address(pc) => state,
        _ => ThreadSyscall::Unknown,
    }
}

/// Whether `addr` lies in an executable mapping of this process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_executable_address(addr: u64) -> bool {
    use std::io::BufRead;
    let Ok(maps) = std::fs::File::open("/proc/self/maps") else {
        return false;
    };
    std::io::BufReader::new(maps)
        .lines()
        .map_while(Result::ok)
        .any(|line| maps_line_contains_code(&line, addr))
}

/// Whether a `/proc/<pid>/maps` line (`start-end perms offset dev inode path`) is an
/// executable mapping that contains `addr`.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn maps_line_contains_code(line: &str, addr: u64) -> bool {
    let mut fields = line.split_whitespace();
    let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
        return false;
    };
    let Some((start, end)) = range.split_once('-') else {
        return false;
    };
    match (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
        (Ok(start), Ok(end)) => perms.contains('x') && (start..end).contains(&addr),
        _ => false,
    }
}

/// The program counter, the last field of a `/proc/<pid>/task/<tid>/syscall` line that is
/// not `running`.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn proc_syscall_pc(text: &str) -> Option<u64> {
    let last = text.split_whitespace().last()?;
    u64::from_str_radix(last.strip_prefix("0x")?, 16).ok()
}

/// What OS thread `tid` of this process is doing in the kernel right now.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn thread_syscall(_tid: u64) -> ThreadSyscall {
    ThreadSyscall::Unknown
}

/// Parses `/proc/<pid>/task/<tid>/syscall`: `running`, `-1 sp pc`, or
/// `nr arg1 .. arg6 sp pc`.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
pub(crate) fn parse_proc_syscall(text: &str) -> ThreadSyscall {
    match text.split_whitespace().next() {
        Some("running") => ThreadSyscall::Running,
        Some(first) => match first.parse::<i64>() {
            Ok(-1) => ThreadSyscall::InKernel,
            Ok(nr) if nr >= 0 => ThreadSyscall::InSyscall(nr),
            _ => ThreadSyscall::Unknown,
        },
        None => ThreadSyscall::Unknown,
    }
}

/// The name of system call `nr` on this target, for the calls a stalled green thread is
/// most likely blocked in; `None` for the others.
#[cfg(target_os = "linux")]
pub(crate) fn syscall_name(nr: i64) -> Option<&'static str> {
    // The constants are the target's own numbering (libc defines them per architecture), so
    // one table serves x86_64, aarch64 and the other Linux targets.
    const COMMON: &[(libc::c_long, &str)] = &[
        (libc::SYS_read, "read"),
        (libc::SYS_write, "write"),
        (libc::SYS_readv, "readv"),
        (libc::SYS_writev, "writev"),
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_pwrite64, "pwrite64"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_close, "close"),
        (libc::SYS_fsync, "fsync"),
        (libc::SYS_fdatasync, "fdatasync"),
        (libc::SYS_flock, "flock"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_ppoll, "ppoll"),
        (libc::SYS_pselect6, "pselect6"),
        (libc::SYS_epoll_pwait, "epoll_pwait"),
        (libc::SYS_futex, "futex"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_accept, "accept"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_recvfrom, "recvfrom"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_recvmsg, "recvmsg"),
        (libc::SYS_sendmsg, "sendmsg"),
        (libc::SYS_wait4, "wait4"),
        (libc::SYS_waitid, "waitid"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_madvise, "madvise"),
    ];
    #[cfg(target_arch = "x86_64")]
    const ARCH: &[(libc::c_long, &str)] = &[
        (libc::SYS_poll, "poll"),
        (libc::SYS_select, "select"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_pause, "pause"),
        (libc::SYS_open, "open"),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    const ARCH: &[(libc::c_long, &str)] = &[];
    // `c_long` is `i64` on 64-bit targets only.
    #[allow(clippy::useless_conversion)]
    COMMON
        .iter()
        .chain(ARCH)
        .find(|&&(n, _)| i64::from(n) == nr)
        .map(|&(_, name)| name)
}

/// The name of system call `nr` on this target (none known on this OS).
#[cfg(not(target_os = "linux"))]
pub(crate) fn syscall_name(_nr: i64) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_syscall_lines_parse() {
        assert_eq!(parse_proc_syscall("running\n"), ThreadSyscall::Running);
        assert_eq!(
            parse_proc_syscall("-1 0x7ffc6b1c3a28 0x7f0e1c2d3e4f\n"),
            ThreadSyscall::InKernel
        );
        let line = "230 0x0 0x0 0x7ffd 0x7ffd 0x0 0x0 0x7ffc6b1c3a28 0x7f0e1c2d3e4f\n";
        assert_eq!(parse_proc_syscall(line), ThreadSyscall::InSyscall(230));
        assert_eq!(proc_syscall_pc(line), Some(0x7f0e_1c2d_3e4f));
        assert_eq!(proc_syscall_pc("running"), None);
        assert_eq!(parse_proc_syscall(""), ThreadSyscall::Unknown);
        assert_eq!(parse_proc_syscall("garbage"), ThreadSyscall::Unknown);
    }

    #[test]
    fn maps_lines_parse() {
        let code = "7f0e1c200000-7f0e1c3b5000 r-xp 00028000 08:01 1234 /usr/lib/libc.so.6";
        assert!(maps_line_contains_code(code, 0x7f0e_1c2d_3e4f));
        assert!(!maps_line_contains_code(code, 0x7f0e_1c3b_5000));
        let data = "7f0e1c200000-7f0e1c3b5000 rw-p 00000000 00:00 0";
        assert!(!maps_line_contains_code(data, 0x7f0e_1c2d_3e4f));
        assert!(!maps_line_contains_code("", 1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    // `c_long` is `i64` on 64-bit targets only.
    #[allow(clippy::useless_conversion)]
    fn syscall_names_use_this_targets_numbers() {
        assert_eq!(
            syscall_name(libc::SYS_clock_nanosleep.into()),
            Some("clock_nanosleep")
        );
        assert_eq!(syscall_name(libc::SYS_futex.into()), Some("futex"));
        assert_eq!(syscall_name(-5), None);
        assert_eq!(syscall_name(100_000), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_sleeping_in_the_kernel_is_seen_in_its_syscall() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            tx.send(current_os_tid()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap().expect("Linux has gettid");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let seen = thread_syscall(tid);
        sleeper.join().unwrap();
        // Under qemu-user the kernel describes the emulator: then the answer is Unknown.
        if let ThreadSyscall::InSyscall(nr) = seen {
            assert!(
                matches!(syscall_name(nr), Some("clock_nanosleep" | "nanosleep")),
                "{nr}"
            );
        } else {
            assert_eq!(seen, ThreadSyscall::Unknown);
        }
        assert_eq!(thread_syscall(u64::from(u32::MAX)), ThreadSyscall::Unknown);
    }
}
