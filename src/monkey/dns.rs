//! Hooks of the name lookups, `getaddrinfo` and `getnameinfo` ([`Family::Dns`]).
//!
//! glibc's resolver does its I/O internally, past every other hook, so a lookup cannot be
//! made cooperative piece by piece. Instead the whole call runs on verdant's blocking
//! thread pool ([`spawn_blocking`]) while the green thread waits on the hub. The
//! arguments are copied first (strings, hints, the address, the output buffers' current
//! contents), so a worker never touches the caller's memory, even if the caller stops
//! waiting; the answer — return value, errno, the `addrinfo` list or the two output
//! buffers — is then handed back exactly as the real call produced it. The list is
//! allocated by glibc and freed with the ordinary `freeaddrinfo`.
//!
//! An interrupted wait (a [`Timeout`](crate::Timeout) or a kill) returns `EAI_SYSTEM`
//! with errno `ETIMEDOUT` or `ECANCELED`; the lookup finishes on its worker and its result
//! is freed there. If no worker thread can be started, the lookup runs in place.
//!
//! [`Family::Dns`]: super::Family::Dns
//! [`spawn_blocking`]: crate::threadpool::spawn_blocking

use super::{cooperative, errno, original, set_errno, suspended, Nested, DNS};
use crate::greenlet::GreenletExit;
use crate::hub::Killed;
use crate::sys::NameInfoLen;
use crate::threadpool::{spawn_blocking, BlockingError};
use libc::{addrinfo, c_char, c_int, sockaddr, socklen_t};
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};

/// The address of the hook called `name`, for [`original`]'s self-lookup check.
#[cfg(not(target_os = "macos"))]
pub(super) fn address_of(name: &str) -> usize {
    match name {
        "getaddrinfo" => getaddrinfo as *const () as usize,
        "getnameinfo" => getnameinfo as *const () as usize,
        _ => 0,
    }
}

/// What a call made on a worker thread produced: its return value, the worker's errno
/// right after it, and its outputs.
struct Answer<T> {
    ret: c_int,
    errno: c_int,
    out: T,
}

/// Runs `lookup` on the thread pool while the green thread waits on the hub; `in_place`
/// if no worker can be started. Returns the answer, or the `EAI_SYSTEM` errno of an
/// interrupted wait.
fn on_pool<T: Send + 'static>(
    lookup: impl FnOnce() -> Answer<T> + Send + 'static,
    in_place: impl FnOnce() -> c_int,
) -> Result<Answer<T>, (c_int, c_int)> {
    let _nested = Nested::enter();
    let joined = panic::catch_unwind(AssertUnwindSafe(|| {
        let job = spawn_blocking(lookup);
        suspended(|| job.join())
    }));
    match joined {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(BlockingError::TimedOut)) => Err((libc::EAI_SYSTEM, libc::ETIMEDOUT)),
        Ok(Err(BlockingError::Spawn(_))) => {
            let ret = in_place();
            Err((ret, errno()))
        }
        // The real call does not panic; a panic here is a bug in the closure above.
        Ok(Err(BlockingError::Panicked(payload))) => panic::resume_unwind(payload),
        Err(payload) if payload.is::<Killed>() || payload.is::<GreenletExit>() => {
            Err((libc::EAI_SYSTEM, libc::ECANCELED))
        }
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// A `getaddrinfo` result list owned by a worker's answer: freed if nobody takes it (the
/// waiting green thread was interrupted).
struct AddrList(*mut addrinfo);

// SAFETY: the list is plain heap memory from glibc's malloc, reachable only through this
// value until `take`; it may be freed from any thread.
unsafe impl Send for AddrList {}

impl AddrList {
    fn take(mut self) -> *mut addrinfo {
        std::mem::replace(&mut self.0, std::ptr::null_mut())
    }
}

impl Drop for AddrList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a list getaddrinfo returned and nobody else owns.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// The fields of `hints` that `getaddrinfo` reads (the others must be zero or null).
#[derive(Clone, Copy)]
struct Hints {
    flags: c_int,
    family: c_int,
    socktype: c_int,
    protocol: c_int,
}

/// Hook of `getaddrinfo(3)`: after [`patch_dns`](super::patch_dns), inside a green thread,
/// the lookup runs on the thread pool (see the module docs).
///
/// # Safety
/// The contract of libc's `getaddrinfo`: `node` and `service` are null or NUL-terminated,
/// `hints` is null or a valid `addrinfo`, `res` is writable.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    if !cooperative(&DNS) || res.is_null() {
        // SAFETY: the caller's contract is getaddrinfo's.
        return unsafe { original::getaddrinfo(node, service, hints, res) };
    }
    // SAFETY (three blocks): the caller's contract: null or NUL-terminated / valid.
    let copy = |s: *const c_char| (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_owned());
    let (node_c, service_c) = (copy(node), copy(service));
    let hints_c = (!hints.is_null()).then(|| {
        // SAFETY: as above.
        let h = unsafe { &*hints };
        Hints {
            flags: h.ai_flags,
            family: h.ai_family,
            socktype: h.ai_socktype,
            protocol: h.ai_protocol,
        }
    });
    let lookup = move || {
        let hints = hints_c.map(|h| {
            // SAFETY: an all-zero addrinfo is a valid value (null pointers, zero fields).
            let mut a: addrinfo = unsafe { std::mem::zeroed() };
            a.ai_flags = h.flags;
            a.ai_family = h.family;
            a.ai_socktype = h.socktype;
            a.ai_protocol = h.protocol;
            a
        });
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut list = std::ptr::null_mut();
        // SAFETY: the strings and hints are owned by this closure, `list` is writable.
        let ret = unsafe {
            original::getaddrinfo(
                ptr(&node_c),
                ptr(&service_c),
                hints
                    .as_ref()
                    .map_or(std::ptr::null(), |h| h as *const addrinfo),
                &mut list,
            )
        };
        Answer {
            ret,
            errno: errno(),
            out: AddrList(list),
        }
    };
    // SAFETY: the caller's contract is getaddrinfo's.
    let in_place = || unsafe { original::getaddrinfo(node, service, hints, res) };
    match on_pool(lookup, in_place) {
        Ok(answer) => {
            let list = answer.out.take();
            if answer.ret == 0 {
                // SAFETY: the caller's contract: `res` is writable.
                unsafe { *res = list };
            }
            set_errno(answer.errno);
            answer.ret
        }
        Err((ret, e)) => {
            set_errno(e);
            ret
        }
    }
}
crate::sys::interpose!(getaddrinfo);

/// A copy of a caller's output buffer with its current contents, which may be
/// uninitialized bytes (hence `MaybeUninit`): written back whole.
struct OutBuf {
    bytes: Vec<MaybeUninit<u8>>,
}

impl OutBuf {
    /// # Safety
    /// `p` is null or valid for `len` bytes of reads.
    unsafe fn copy(p: *const c_char, len: NameInfoLen) -> Option<OutBuf> {
        if p.is_null() {
            return None;
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // SAFETY: the function's contract; `bytes` has room for `len` bytes, which are
        // then initialized as far as `MaybeUninit<u8>` requires (not at all).
        unsafe {
            std::ptr::copy_nonoverlapping(
                p.cast::<MaybeUninit<u8>>(),
                bytes.as_mut_ptr(),
                len as usize,
            );
            bytes.set_len(len as usize);
        }
        Some(OutBuf { bytes })
    }

    fn ptr(this: &mut Option<OutBuf>) -> *mut c_char {
        this.as_mut()
            .map_or(std::ptr::null_mut(), |b| b.bytes.as_mut_ptr().cast())
    }
}

/// Hook of `getnameinfo(3)`: after [`patch_dns`](super::patch_dns), inside a green thread,
/// the lookup runs on the thread pool (see the module docs); the `host` and `serv`
/// buffers receive exactly what the real call wrote.
///
/// # Safety
/// The contract of libc's `getnameinfo`: `sa` is valid for `salen` bytes, `host` and
/// `serv` are null or valid for `hostlen` and `servlen` bytes of writes.
#[cfg_attr(not(target_os = "macos"), no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: NameInfoLen,
    serv: *mut c_char,
    servlen: NameInfoLen,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's contract is getnameinfo's.
    let pass = || unsafe { original::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) };
    let storage = std::mem::size_of::<libc::sockaddr_storage>();
    if !cooperative(&DNS) || sa.is_null() || salen as usize > storage {
        return pass();
    }
    // SAFETY: the caller's contract: `sa` is readable for `salen <= storage` bytes.
    let addr = unsafe { std::slice::from_raw_parts(sa.cast::<u8>(), salen as usize) }.to_vec();
    // SAFETY: the caller's contract for `host`/`serv`, readable as they are writable.
    let (host_c, serv_c) = unsafe { (OutBuf::copy(host, hostlen), OutBuf::copy(serv, servlen)) };
    let lookup = move || {
        let (mut host_c, mut serv_c) = (host_c, serv_c);
        // An aligned copy of the address (the Vec's bytes may not be).
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: `addr.len() <= size_of::<sockaddr_storage>()` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.as_ptr(),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                addr.len(),
            )
        };
        // SAFETY: every pointer is owned by this closure and valid for the length passed.
        let ret = unsafe {
            original::getnameinfo(
                (&ss as *const libc::sockaddr_storage).cast(),
                salen,
                OutBuf::ptr(&mut host_c),
                hostlen,
                OutBuf::ptr(&mut serv_c),
                servlen,
                flags,
            )
        };
        Answer {
            ret,
            errno: errno(),
            out: (host_c, serv_c),
        }
    };
    match on_pool(lookup, pass) {
        Ok(answer) => {
            let (host_c, serv_c) = answer.out;
            for (to, from) in [(host, host_c), (serv, serv_c)] {
                if let Some(b) = from {
                    // SAFETY: the caller's contract: `to` is writable for as many bytes
                    // as were copied from it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(b.bytes.as_ptr(), to.cast(), b.bytes.len())
                    };
                }
            }
            set_errno(answer.errno);
            answer.ret
        }
        Err((ret, e)) => {
            set_errno(e);
            ret
        }
    }
}
crate::sys::interpose!(getnameinfo);
