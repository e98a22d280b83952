//! Memory mappings for green-thread stacks: `mmap`, `mprotect`, `munmap`, the page size and
//! the process's mapping limit, with the per-OS flags kept here.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system page size (cached after the first call). Inline: a spawn reads it twice
/// (whether a kept stack fits, and where its usable range begins).
#[inline]
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if size > 0 { size as usize } else { 4096 };
    PAGE.store(size, Ordering::Relaxed);
    size
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const STACK_FLAGS: libc::c_int =
    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
#[cfg(target_os = "freebsd")]
const STACK_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_STACK;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const STACK_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON;

/// Maps `len` bytes of private, readable and writable memory suitable for a stack.
/// `len` must be a multiple of the page size.
pub(crate) fn map_stack(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address has no preconditions.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            STACK_FLAGS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(ptr.cast())
    }
}

/// Makes `len` bytes at `ptr` inaccessible (a guard page).
///
/// # Safety
/// `ptr..ptr+len` must be page-aligned and lie in a mapping this crate owns.
pub(crate) unsafe fn protect_none(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: per the caller's contract the range is ours and page-aligned.
    if unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_NONE) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmaps `len` bytes at `ptr`.
///
/// # Safety
/// `ptr..ptr+len` must be a mapping this crate owns, with nothing referring to it any more.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: per the caller's contract the range is ours and unused.
    let rc = unsafe { libc::munmap(ptr.cast(), len) };
    debug_assert_eq!(rc, 0, "munmap failed: {}", io::Error::last_os_error());
}

/// The per-process limit on memory mappings, where the OS has one that a program can read
/// (Linux: `vm.max_map_count`).
pub(crate) fn max_map_count() -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

/// The number of mappings the process has now, where the OS can tell (Linux).
///
/// Called when a stack could not be mapped, so it must not need memory itself: it counts
/// the lines of `/proc/self/maps` through a buffer on the stack. (Reading the file into a
/// `String` needs several MiB at 65,000 mappings, and that allocation fails exactly when
/// the mapping limit is reached.)
pub(crate) fn map_count() -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::io::Read;
        let mut maps = std::fs::File::open("/proc/self/maps").ok()?;
        let mut buf = [0u8; 4096];
        let mut lines = 0;
        loop {
            match maps.read(&mut buf) {
                Ok(0) => return Some(lines),
                Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}
