//! macOS dyld interposing for the libc shim (`monkey`): the `__DATA,__interpose` table.
//!
//! On ELF systems the shim's hooks are exported under the libc names (`#[no_mangle]`) and
//! symbol resolution does the rest. On macOS that does not reach other images: with the
//! two-level namespace every library binds `read` to *libSystem's* `read`, not to the first
//! definition found. Instead dyld reads a table of `{ replacement, replacee }` pointer pairs
//! from the `__DATA,__interpose` section of a dylib loaded at launch and redirects every
//! other image's binds of `replacee` to `replacement` (see the `## macOS` section of the
//! `monkey` module docs for when that happens and what is verified).
//!
//! [`interpose!`] adds one pair per hook. Elsewhere it expands to nothing, so a hook file
//! writes the same two lines on every OS:
//!
//! ```text
//! #[cfg_attr(not(target_os = "macos"), no_mangle)]
//! pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t { .. }
//! crate::sys::interpose!(readv); // {readv (this hook), libc::readv}
//! ```

/// One entry of the interposing table: what dyld's `DYLD_INTERPOSE` macro
/// (`<mach-o/dyld-interposing.h>`) emits, two pointers.
#[cfg(target_os = "macos")]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
#[repr(C)]
pub(crate) struct Interpose {
    /// The hook.
    pub(crate) replacement: *const (),
    /// The libc function whose binds (in other images) go to the hook.
    pub(crate) replacee: *const (),
}

// SAFETY: two code addresses, written by the linker/dyld and never mutated by Rust code.
#[cfg(target_os = "macos")]
unsafe impl Sync for Interpose {}

/// `interpose!(name)`: on macOS, adds `{ name, libc::name }` to the `__DATA,__interpose`
/// section, `name` being the hook (an `extern "C"` fn in scope at the call site, with the
/// libc signature, not `#[no_mangle]` on macOS). `interpose!(hook => path::to::libc_fn)` when
/// the names differ. Expands to nothing on other systems.
// Used by the `monkey` feature, which exists on Linux and macOS only.
#[allow(unused_macros)]
macro_rules! interpose {
    ($hook:ident) => {
        $crate::sys::interpose!($hook => ::libc::$hook);
    };
    ($hook:ident => $replacee:path) => {
        #[cfg(target_os = "macos")]
        const _: () = {
            #[link_section = "__DATA,__interpose"]
            #[used]
            static INTERPOSE: $crate::sys::interpose::Interpose =
                $crate::sys::interpose::Interpose {
                    replacement: $hook as *const (),
                    replacee: $replacee as *const (),
                };
        };
    };
}
#[allow(unused_imports)] // re-exported as `crate::sys::interpose!`
pub(crate) use interpose;

/// libSystem functions under the plain name where the libc crate binds a variant (on
/// x86_64 macOS its `close` is `close$NOCANCEL`), for a second `interpose!` pair: C code
/// compiled against the SDK binds the plain name.
#[cfg(all(target_os = "macos", target_arch = "x86_64"))]
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) mod plain {
    extern "C" {
        /// libSystem's `_close`.
        pub(crate) fn close(fd: libc::c_int) -> libc::c_int;
    }
}
