//! OS threads as the stall monitor sees them: the kernel's id of the calling thread, and the
//! system call another thread of this process is blocked in.
//!
//! Linux exposes both: `gettid(2)`, and `/proc/self/task/<tid>/syscall`, whose first field
//! is the number of the system call the thread is blocked in, `running` when it is on a CPU
//! (or waiting for one) in user space, or `-1` when it is in the kernel outside a system call
//! (a page fault, for instance). Other systems report [`ThreadSyscall::Unknown`].
//!
//! Under user-mode emulation (`qemu-aarch64` on an x86_64 host) the kernel describes the
//! emulator's own thread: the numbers are the host's, so the names may be wrong. The
//! caller says so in its docs; nothing here can tell.

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
    match std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) {
        Ok(text) => parse_proc_syscall(&text),
        Err(_) => ThreadSyscall::Unknown,
    }
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
