//! Stacks for coroutines and green threads: `mmap`'d memory with a guard page, a per-thread
//! pool, and stack-overflow reporting.
//!
//! Layout of one stack (addresses grow upwards; the stack grows down from `top`):
//!
//! ```text
//!   mapping + total ┌──────────────────────────┐
//!                   │ Header (registry node)   │  id, name, guard range, list links
//!                   ├──────────────────────────┤
//!                   │ colour (0..MAX_COLOUR)   │  unused, 64-byte steps (see below)
//!             top → ├──────────────────────────┤  16-byte aligned
//!                   │                          │
//!                   │ usable stack             │  `size` bytes requested, rounded up
//!                   │   (grows down)           │  to pages; untouched pages cost no RAM
//!          bottom → ├──────────────────────────┤
//!                   │ guard page (PROT_NONE)   │  any access faults
//!         mapping → └──────────────────────────┘
//! ```
//!
//! ## Colour
//! Every mapping ends on a page boundary, so without a colour every stack would start at
//! the same offset in its page, and so would the frames of green threads that run the
//! same code (a server's connections, parked in the same read): the same few cache sets
//! would hold every one of them. A cache picks the set of a line by its address bits
//! above the line offset, the lowest of which (6 to 11) are the offset in the page: an L1
//! cache (48 KiB, 12-way: 64 sets) would hold 12 connections' copies of each such line,
//! an L2 (2 MiB, 16-way) 512 instead of the 32,768 lines it has. With 1,000 connections
//! each parked frame missed both at every request while tokio's tasks, spread by `malloc`
//! over every offset, stayed in L2. So `top` lies a *colour* below the header: 0 to
//! [`MAX_COLOUR`] − 64 bytes in 64-byte steps, picked from the mapping's address (the same
//! stack keeps its colour when it is pooled and reused). The colour is reserved on top of
//! the requested size, which pages usually round up anyway. The wider the range, the
//! more sets the copies of a line spread over (`http_hello` at 1,000 connections under
//! `CACHE=... scripts/callgrind-http`, 2 MiB L2: 7.4 L2 misses per request with no colour,
//! 4.7 with 32 colours, 1.7 with 40, 1.2 with 44, 0.6 with 60), but a thread's frames
//! start lower in the top page and spill into the next page sooner, which costs a page of
//! RAM per thread: at 2.5 KiB (40 colours) the frames of an `http_hello` connection
//! (1.15 KiB below the 112-byte header) lie in the top page, with 344 bytes to spare.
//!
//! One stack is one `mmap` plus one `mprotect`, which the kernel keeps as **two** mappings.
//! Linux caps mappings per process at `vm.max_map_count` (65,530 by default), so about
//! 32,000 guarded stacks can exist at once under the default limit. Running out of memory or
//! of mappings is reported as a [`StackError`] that names the limit, never as a crash.
//!
//! ## Overflow reporting
//! Every live stack's header is linked into a per-thread intrusive list. A SIGSEGV/SIGBUS
//! handler (see `sys::signal`) walks the faulting thread's list: a fault inside a guard page
//! is reported as `verdant: stack overflow in green thread ...` with the owner's id, name and
//! stack size, and the process aborts. The id and name are copied into the header
//! ([`Stack::set_owner`]), or the header points at an [`Owner`] its owner keeps in place
//! ([`Stack::set_owner_at`]: a greenlet, whose record re-armed on the same stack then
//! stores nothing for the report at a spawn, where it used to copy its new id). Faults elsewhere go to the previous handler. The
//! list is only modified by its own thread with single pointer stores in an order that
//! leaves it consistent for a forward walk at every instruction, which is what makes the
//! walk from a (synchronous) signal handler sound.
//!
//! ## Pool
//! Finished coroutines hand their stack back to a per-thread pool, so creating a coroutine
//! after warm-up performs no `mmap`/`munmap`. The pool keeps at most
//! [`POOL_LIMIT`] stacks per thread.
//!
//! A dead greenlet may instead *keep* its stack (`keep`), so that the next green thread
//! re-armed in its record (the hub's spare task records) runs on the same stack without a
//! trip through the pool. A kept stack stays in the *kept set* while its record runs the
//! next lives on it, and leaves the set (`unkeep`) only when it leaves its record (for the
//! pool); so a record that dies and is re-armed on its own stack over and over touches the
//! count once, not at every life. Pooled and kept stacks together are at most
//! [`POOL_LIMIT`]: beyond that a finished coroutine's stack is unmapped.

use crate::sys::{memory, signal};
use core::num::NonZeroUsize;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ptr;

/// Default usable size of a green thread's stack: 256 KiB.
///
/// The memory is reserved, not committed: a green thread that only ever uses 8 KiB of its
/// stack costs 8 KiB (two pages) of RAM. Raise it for deep recursion; lower it to fit more
/// stacks in a constrained address space.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest usable stack size accepted; smaller requests are rounded up to it.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// Most stacks a thread keeps for reuse: in its pool, or kept by greenlets' records (dead,
/// or re-armed on the stack they kept: see "Pool" in the module docs).
pub const POOL_LIMIT: usize = 1024;

/// Stack tops are spread over this many bytes below the header, in 64-byte (cache line)
/// steps: see "Colour" in the module docs.
const MAX_COLOUR: usize = 2560;

/// Longest owner name kept for overflow reports (longer names are truncated).
const NAME_CAP: usize = 46;

/// Why a stack could not be allocated.
#[derive(Debug)]
pub struct StackError {
    size: usize,
    error: io::Error,
    map_count: Option<usize>,
    map_limit: Option<usize>,
}

impl StackError {
    fn new(size: usize, error: io::Error) -> Self {
        StackError {
            size,
            error,
            map_count: memory::map_count(),
            map_limit: memory::max_map_count(),
        }
    }

    /// The usable size that was requested, in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The operating system's error.
    pub fn os_error(&self) -> &io::Error {
        &self.error
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not allocate a {}-byte green-thread stack: {}",
            self.size, self.error
        )?;
        match (self.map_count, self.map_limit) {
            (Some(count), Some(limit)) if count + 64 >= limit => write!(
                f,
                "; the process has {count} memory mappings and vm.max_map_count is {limit} \
                 (each stack takes two: the stack and its guard page): raise the limit \
                 (sysctl vm.max_map_count=...) or run fewer green threads at once"
            ),
            (_, Some(limit)) => write!(
                f,
                "; out of memory or address space (vm.max_map_count is {limit}): use \
                 smaller stacks or fewer green threads"
            ),
            _ => write!(
                f,
                "; out of memory or memory mappings: use smaller stacks or fewer green threads"
            ),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<StackError> for io::Error {
    fn from(e: StackError) -> io::Error {
        let kind = e.error.kind();
        io::Error::new(
            if kind == io::ErrorKind::Other {
                io::ErrorKind::OutOfMemory
            } else {
                kind
            },
            e,
        )
    }
}

/// Who runs on a stack, for overflow reports, kept by the owner where the stack's header
/// can point at it ([`Stack::set_owner_at`]).
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) id: u64,
    pub(crate) name: Option<Box<str>>,
}

/// Registry node at the top of each stack, read by the fault handler.
#[repr(C, align(16))]
struct Header {
    next: Cell<*mut Header>,
    prev: Cell<*mut Header>,
    guard_lo: usize,
    guard_hi: usize,
    usable: usize,
    /// The owner's [`Owner`], or null: then `owner_id` and `name` say who it is.
    owner: Cell<*const Owner>,
    owner_id: Cell<u64>,
    name_len: Cell<u8>,
    name: Cell<[u8; NAME_CAP]>,
}

const HEADER_BYTES: usize = (core::mem::size_of::<Header>() + 15) & !15;

thread_local! {
    /// Head of this thread's list of live stacks (const-initialised, no destructor, so it
    /// is readable from a signal handler and during thread teardown).
    static REGISTRY: Cell<*mut Header> = const { Cell::new(ptr::null_mut()) };
    static POOL: RefCell<Vec<Stack>> = const { RefCell::new(Vec::new()) };
    /// How many stacks this thread keeps for reuse: in `POOL`, or in the kept set (kept by
    /// greenlets' records for their reuse in place, [`keep`]). At most [`POOL_LIMIT`].
    static IDLE: Cell<usize> = const { Cell::new(0) };
}

/// A guarded, `mmap`'d stack owned by one OS thread.
pub(crate) struct Stack {
    mapping: *mut u8,
    total: usize,
    /// [`top`](Self::top), computed once (its colour takes a hash and a division): every
    /// spawn on a pooled or kept stack reads it.
    top: *mut u8,
    /// A size this stack [`fits`](Self::fits) for sure: the one it was mapped for, then the
    /// one last asked of [`take`] for it. Tested first, without arithmetic (a green thread
    /// re-armed on its kept stack asks the same size as the one before).
    ///
    /// Never 0 (a request for 0 bytes is kept as one for 1, which every stack fits that
    /// fits 0: both round up to [`MIN_STACK_SIZE`]), so that an `Option<Stack>` (a dead
    /// greenlet's kept one) is `None` when it is 0: the re-arm's test for a kept stack of
    /// the size asked is then the compare of this one word with the size (which is never
    /// 0), where a tag of its own cost a load, a compare and a branch per spawn.
    asked: NonZeroUsize,
}

// The niche is `asked`: an `Option<Stack>` is no bigger than a `Stack`.
const _: () = assert!(core::mem::size_of::<Option<Stack>>() == core::mem::size_of::<Stack>());

/// `size` as [`Stack::asked`] keeps it: 0 as 1 (the same stack: both round up to
/// [`MIN_STACK_SIZE`]).
#[inline]
fn asked(size: usize) -> NonZeroUsize {
    NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN)
}

impl Stack {
    /// Maps a new stack with at least `size` usable bytes.
    pub(crate) fn new(size: usize) -> Result<Stack, StackError> {
        let page = memory::page_size();
        // The header shares the top page with the stack, so a green thread that uses little
        // stack touches a single page.
        let total = page + round_up(size.max(MIN_STACK_SIZE) + HEADER_BYTES + MAX_COLOUR, page);
        let mapping = memory::map_stack(total).map_err(|e| StackError::new(size, e))?;
        // Own the mapping at once, so that an error below unmaps it.
        let end = mapping as usize + total;
        // SAFETY: the colour (below MAX_COLOUR) and the header lie within the mapping.
        let top = unsafe { mapping.add(total - HEADER_BYTES - colour(end)) };
        let stack = Stack {
            mapping,
            total,
            top,
            asked: asked(size),
        };
        // SAFETY: the first page of our fresh mapping becomes the guard.
        unsafe { memory::protect_none(mapping, page) }.map_err(|e| StackError::new(size, e))?;
        signal::install_fault_handler(on_fault);
        signal::ensure_alt_stack().map_err(|e| StackError::new(size, e))?;
        let header = stack.header_ptr();
        // SAFETY: the header lies in the writable part of our mapping, suitably aligned
        // (HEADER_BYTES is a multiple of 16 and the mapping ends on a page boundary).
        unsafe {
            header.write(Header {
                next: Cell::new(ptr::null_mut()),
                prev: Cell::new(ptr::null_mut()),
                guard_lo: mapping as usize,
                guard_hi: mapping as usize + page,
                usable: stack.size(),
                owner: Cell::new(ptr::null()),
                owner_id: Cell::new(0),
                name_len: Cell::new(0),
                name: Cell::new([0; NAME_CAP]),
            });
        }
        link(header);
        Ok(stack)
    }

    #[inline]
    fn header_ptr(&self) -> *mut Header {
        // SAFETY: the header occupies the last HEADER_BYTES of the mapping.
        unsafe { self.mapping.add(self.total - HEADER_BYTES).cast() }
    }

    /// The highest usable address (exclusive), 16-byte aligned: where the stack starts,
    /// its colour below the header (see the module docs).
    #[inline]
    pub(crate) fn top(&self) -> *mut u8 {
        self.top
    }

    /// The lowest usable address: just above the guard page.
    ///
    /// Read from the header (the guard's end) with plain loads rather than computed from
    /// the page size, whose cache is an atomic: a context backend that does not use it
    /// (the asm ones) then costs no instruction to a spawn for it.
    #[inline]
    pub(crate) fn bottom(&self) -> *mut u8 {
        // SAFETY: the header is valid for the stack's lifetime; `guard_hi` is never
        // written after `new`.
        unsafe { (*self.header_ptr()).guard_hi as *mut u8 }
    }

    /// Usable bytes the stack guarantees: what `take` matches a request against, the same
    /// for every stack of one mapping size. `bottom..top` may be up to [`MAX_COLOUR`] − 64
    /// bytes longer (a stack of colour 0).
    pub(crate) fn size(&self) -> usize {
        self.total - memory::page_size() - HEADER_BYTES - MAX_COLOUR
    }

    /// Whether this stack is what [`take`]`(size)` would hand out: the same usable size
    /// (the same mapping size). One compare when `size` is the one last asked for it.
    #[inline(always)]
    pub(crate) fn fits(&self, size: usize) -> bool {
        size == self.asked.get() || self.fits_computed(size)
    }

    /// [`fits`](Self::fits) for a size not asked of this stack before.
    #[inline(never)]
    fn fits_computed(&self, size: usize) -> bool {
        let page = memory::page_size();
        self.total == page + round_up(size.max(MIN_STACK_SIZE) + HEADER_BYTES + MAX_COLOUR, page)
    }

    /// Records who runs on this stack, for overflow reports: a copy of `id` and `name`
    /// (and no [`Owner`] pointed at any more).
    #[inline]
    pub(crate) fn set_owner(&self, id: u64, name: Option<&str>) {
        // SAFETY: the header is valid for the stack's lifetime; only this thread touches it.
        let header = unsafe { &*self.header_ptr() };
        header.owner.set(ptr::null());
        header.owner_id.set(id);
        let Some(name) = name else {
            // Only the first `name_len` bytes are ever read: no buffer to write (the common
            // case, on every spawn and every return to the pool).
            header.name_len.set(0);
            return;
        };
        let mut buf = [0u8; NAME_CAP];
        let bytes = name.as_bytes();
        let len = bytes.len().min(NAME_CAP);
        buf[..len].copy_from_slice(&bytes[..len]);
        header.name.set(buf);
        header.name_len.set(len as u8);
    }
}

impl Stack {
    /// Records who runs on this stack, for overflow reports: `owner`, read at the report
    /// (what it says then), which its owner may update in place (no store here when the
    /// same owner runs on the stack again).
    ///
    /// # Safety
    /// `owner` must stay valid for reads (not moved, not freed, not mutably borrowed but
    /// while it is written) until this stack gets another owner ([`set_owner`] or this),
    /// goes back to the pool ([`give_back`]) or is dropped.
    ///
    /// [`set_owner`]: Self::set_owner
    #[inline]
    pub(crate) unsafe fn set_owner_at(&self, owner: *const Owner) {
        // SAFETY: the header is valid for the stack's lifetime; only this thread touches it.
        let header = unsafe { &*self.header_ptr() };
        header.owner.set(owner);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        unlink(self.header_ptr());
        // SAFETY: the mapping is ours, unlinked from the registry, and nothing runs on it
        // (a stack is only dropped once its context is dead).
        unsafe { memory::unmap(self.mapping, self.total) };
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &self.bottom())
            .field("top", &self.top())
            .finish()
    }
}

/// The usable size `Stack::new(size)` produces.
fn usable_for(size: usize) -> usize {
    let page = memory::page_size();
    let reserved = HEADER_BYTES + MAX_COLOUR;
    round_up(size.max(MIN_STACK_SIZE) + reserved, page) - reserved
}

/// The colour of the stack whose mapping ends at `end` (a page boundary): a multiple of
/// 64 below [`MAX_COLOUR`], from a multiplicative hash of the page number, so that stacks
/// mapped next to each other (every few pages) get colours spread over the whole range.
#[inline]
fn colour(end: usize) -> usize {
    const LINES: usize = MAX_COLOUR / 64;
    let page = (end >> 12) as u64;
    let hash = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (hash as usize % LINES) * 64
}

/// `n` rounded up to a multiple of `to`, a power of two (the page size).
#[inline]
fn round_up(n: usize, to: usize) -> usize {
    debug_assert!(to.is_power_of_two());
    (n + to - 1) & !(to - 1)
}

fn link(node: *mut Header) {
    REGISTRY.with(|head| {
        let old = head.get();
        // SAFETY: `node` is a fresh header; `old` is a live header of this thread or null.
        // The node is fully initialised before the single store that publishes it.
        unsafe {
            (*node).next.set(old);
            (*node).prev.set(ptr::null_mut());
            if !old.is_null() {
                (*old).prev.set(node);
            }
        }
        head.set(node);
    });
}

fn unlink(node: *mut Header) {
    // `try_with` cannot fail for a const-initialised Cell, but never panic in a destructor.
    let _ = REGISTRY.try_with(|head| {
        // SAFETY: `node` and its neighbours are live headers of this thread. A forward walk
        // (the signal handler's) sees either the old or the new `next`, both valid.
        unsafe {
            let prev = (*node).prev.get();
            let next = (*node).next.get();
            if prev.is_null() {
                head.set(next);
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
        }
    });
}

/// Fault hook (runs in a signal handler): reports and aborts on a guard-page hit.
fn on_fault(addr: usize) {
    let Ok(mut node) = REGISTRY.try_with(Cell::get) else {
        return;
    };
    while !node.is_null() {
        // SAFETY: nodes on this thread's list are live headers (see the module docs).
        let header = unsafe { &*node };
        if addr >= header.guard_lo && addr < header.guard_hi {
            report_overflow(header);
        }
        node = header.next.get();
    }
}

fn report_overflow(header: &Header) -> ! {
    let mut buf = [0u8; 256];
    let mut w = FixedWriter {
        buf: &mut buf,
        len: 0,
    };
    w.put(b"verdant: stack overflow in green thread #");
    let owner = header.owner.get();
    let copied_name;
    let name = if owner.is_null() {
        w.put_num(header.owner_id.get());
        copied_name = header.name.get();
        &copied_name[..header.name_len.get() as usize]
    } else {
        // SAFETY: an owner set by `set_owner_at` is valid while this stack is linked and
        // has it (its contract); the fault is synchronous, on this thread.
        let owner = unsafe { &*owner };
        w.put_num(owner.id);
        let name = owner.name.as_deref().unwrap_or("").as_bytes();
        &name[..name.len().min(NAME_CAP)]
    };
    if !name.is_empty() {
        w.put(b" '");
        w.put(name);
        w.put(b"'");
    }
    w.put(b" (stack size ");
    w.put_num(header.usable as u64);
    w.put(b" bytes); give it a larger stack (stack_size on its builder)\n");
    let len = w.len;
    signal::write_stderr(&buf[..len]);
    signal::abort()
}

/// Formats into a fixed buffer without allocating (async-signal-safe).
struct FixedWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl FixedWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn put_num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }
}

/// Takes a stack with at least `size` usable bytes from this thread's pool, or maps one.
pub(crate) fn take(size: usize) -> Result<Stack, StackError> {
    let want = usable_for(size);
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let pos = pool.iter().rposition(|s| s.size() == want)?;
            // One idle stack fewer.
            unkeep();
            Some(pool.swap_remove(pos))
        })
        .ok()
        .flatten();
    let mut stack = match pooled {
        Some(stack) => stack,
        // Report the size the caller asked for, not the rounded one.
        None => Stack::new(want).map_err(|e| StackError { size, ..e })?,
    };
    stack.asked = asked(size);
    Ok(stack)
}

/// Returns a stack whose context is dead to this thread's pool (or unmaps it if the thread
/// has [`POOL_LIMIT`] idle stacks already, or is exiting).
pub(crate) fn give_back(stack: Stack) {
    stack.set_owner(0, None);
    let rejected = POOL.try_with(|pool| {
        // With the stacks dead greenlets keep, at most POOL_LIMIT idle ones.
        if !keep() {
            return Some(stack);
        }
        pool.borrow_mut().push(stack);
        None
    });
    // Dropping outside the borrow: a full pool, or thread teardown, unmaps the stack.
    drop(rejected);
}

/// Asks to keep the stack of a context that just died with its owner, for the owner's next
/// lives on the same stack, instead of [`give_back`]: granted while this thread has fewer
/// than [`POOL_LIMIT`] stacks pooled or kept, so dead greenlets that are never reused
/// (e.g. finished green threads whose handles are held) cannot pin stacks without bound. A
/// granted stack stays in the kept set through its owner's next lives on it, and is
/// reported to [`unkeep`] when it leaves its owner.
///
/// Always inlined, with the thread-local read and written by `LocalKey`'s `get` and
/// `replace` (tiny instances shared by every `Cell<usize>` thread-local, which LLVM inlines;
/// `LocalKey::set` goes through an out-of-line `initialize_with`): a closure of its own
/// made a `LocalKey::with` instance that LLVM kept out of line in a join's receipt of the
/// final switch once its callers grew, a call of 15 instructions where three do.
#[inline(always)]
pub(crate) fn keep() -> bool {
    // `IDLE` is const-initialised with no destructor: always accessible, no state test.
    let n = IDLE.get();
    if n >= POOL_LIMIT {
        return false;
    }
    IDLE.replace(n + 1);
    true
}

/// One stack fewer kept for reuse: a stack granted by [`keep`] left its owner (for the pool,
/// or unmapped with it), or a pooled one was taken. Every call matches a stack counted
/// before, so the count does not wrap (a plain decrement).
///
/// Always inlined, with `LocalKey`'s `get` and `replace`, as [`keep`].
#[inline(always)]
pub(crate) fn unkeep() {
    let n = IDLE.get();
    debug_assert!(n > 0, "stack::unkeep without an idle stack counted");
    IDLE.replace(n.wrapping_sub(1));
}

/// Number of stacks in the kept set on this thread (kept by greenlets' records, dead or
/// re-armed on them; for tests).
#[cfg(test)]
pub(crate) fn kept_count() -> usize {
    IDLE.try_with(Cell::get).unwrap_or(0) - pooled_count()
}

/// Number of stacks in this thread's pool (for tests).
#[cfg(test)]
pub(crate) fn pooled_count() -> usize {
    POOL.try_with(|p| p.borrow().len()).unwrap_or(0)
}

/// Number of live stacks (in use or pooled) on this thread (for tests).
#[cfg(test)]
pub(crate) fn live_count() -> usize {
    let mut n = 0;
    let mut node = REGISTRY.with(Cell::get);
    while !node.is_null() {
        n += 1;
        // SAFETY: nodes on this thread's list are live headers.
        node = unsafe { (*node).next.get() };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_and_are_aligned() {
        let s = Stack::new(1).unwrap();
        assert!(s.size() >= MIN_STACK_SIZE);
        assert_eq!(s.top() as usize % 16, 0);
        let s = Stack::new(100_000).unwrap();
        assert!(s.size() >= 100_000);
        assert!(s.size() < 100_000 + 2 * memory::page_size());
    }

    #[test]
    fn whole_usable_range_is_writable() {
        let s = Stack::new(64 * 1024).unwrap();
        let len = s.top() as usize - s.bottom() as usize;
        assert!(len >= s.size());
        // SAFETY: bottom..top is our writable stack memory, unused by any context.
        unsafe { ptr::write_bytes(s.bottom(), 0xA5, len) };
    }

    #[test]
    fn a_stack_fits_the_sizes_of_its_mapping_size_only() {
        // Taken for one size, it fits that size (the remembered one) and the others that
        // map to the same size, not the sizes of other mappings.
        let page = memory::page_size();
        let s = take(64 * 1024).unwrap();
        assert!(s.fits(64 * 1024));
        assert!(s.fits(64 * 1024 - 16));
        assert!(!s.fits(64 * 1024 + 4 * page));
        assert!(!s.fits(MIN_STACK_SIZE));
        give_back(s);
        let s = Stack::new(200_000).unwrap();
        assert!(s.fits(200_000));
        assert!(!s.fits(64 * 1024));
        assert!(!s.fits(400_000));
    }

    #[test]
    fn stack_tops_are_coloured() {
        // Stacks mapped one after the other start at different offsets in their pages,
        // 16-byte aligned, never above their header.
        let stacks: Vec<Stack> = (0..32)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        let mut offsets: Vec<usize> = stacks
            .iter()
            .map(|s| s.top() as usize % memory::page_size())
            .collect();
        for s in &stacks {
            assert_eq!(s.top() as usize % 16, 0);
            assert!(s.top() <= s.header_ptr().cast());
            assert!(s.top() as usize - s.bottom() as usize >= MIN_STACK_SIZE);
        }
        offsets.sort_unstable();
        offsets.dedup();
        assert!(offsets.len() >= 8, "stack tops share offsets: {offsets:?}");
    }

    #[test]
    fn registry_tracks_live_stacks() {
        let before = live_count();
        let a = Stack::new(MIN_STACK_SIZE).unwrap();
        let b = Stack::new(MIN_STACK_SIZE).unwrap();
        let c = Stack::new(MIN_STACK_SIZE).unwrap();
        assert_eq!(live_count(), before + 3);
        drop(b); // middle of the list
        assert_eq!(live_count(), before + 2);
        drop(c); // head
        drop(a);
        assert_eq!(live_count(), before);
    }

    #[test]
    fn pool_reuses_stacks() {
        let s = take(DEFAULT_STACK_SIZE).unwrap();
        let addr = s.top();
        let pooled = pooled_count();
        give_back(s);
        assert_eq!(pooled_count(), pooled + 1);
        let again = take(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(again.top(), addr, "the pooled stack was not reused");
        assert_eq!(pooled_count(), pooled);
        give_back(again);
    }

    #[test]
    fn error_message_names_the_limit() {
        let e = StackError {
            size: 4096,
            error: io::Error::from_raw_os_error(libc::ENOMEM),
            map_count: Some(65_525),
            map_limit: Some(65_530),
        };
        let msg = e.to_string();
        assert!(msg.contains("vm.max_map_count is 65530"), "{msg}");
        assert!(msg.contains("4096-byte"), "{msg}");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::OutOfMemory);
    }
}
