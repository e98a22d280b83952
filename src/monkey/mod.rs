//! Monkey patching at the C library boundary: ordinary blocking code — `std::net`,
//! `std::thread::sleep`, third-party crates, C code linked into the program — waits on the
//! hub inside green threads (gevent's `monkey.patch_all()`, one level lower).
//!
//! ```no_run
//! use std::io::Read;
//! use std::time::Duration;
//!
//! verdant::monkey::patch_all();
//! // Plain std code, no verdant types: these 100 sleeps overlap on one OS thread.
//! let sleepers: Vec<_> = (0..100)
//!     .map(|_| verdant::spawn(|| std::thread::sleep(Duration::from_millis(20))))
//!     .collect();
//! verdant::joinall(sleepers);
//! // So do blocking std sockets.
//! let fetch = verdant::spawn(|| {
//!     let mut s = std::net::TcpStream::connect("127.0.0.1:8080")?;
//!     let mut body = Vec::new();
//!     s.read_to_end(&mut body).map(|_| body)
//! });
//! # drop(fetch);
//! ```
//!
//! ## How it works
//! With the `monkey` cargo feature the crate defines (`#[no_mangle] extern "C"` on Linux and
//! FreeBSD; on macOS see [below](#macos)) its own `read`, `write`, `recv`, `send`,
//! `recvfrom`, `sendto`, `connect`, `accept`, `accept4` (not macOS), `poll`, `ppoll` (not
//! macOS), `select`, `pselect`, `epoll_wait` and `epoll_pwait` (Linux), `close`, `dup2`,
//! `dup3` (not macOS), `getaddrinfo`, `getnameinfo`, `nanosleep`, `clock_nanosleep` (not
//! macOS), `usleep` and `sleep`, and `readv`, `writev`, `recvmsg`, `sendmsg` (in `io.rs`);
//! on Linux also `fcntl`, `fcntl64` (glibc), `ioctl`, `setsockopt`, `socket`,
//! `socketpair`, `dup` and `fclose`, which only watch for changes of what the other hooks
//! cache (`cache.rs`, see [below](#what-the-socket-hooks-keep-linux); `fclose` also wakes
//! waiters as `close` does).
//! Every call to them in the process lands in a hook, which decides in a few loads:
//!
//! ```text
//!   hook(args)
//!     family not patched (one relaxed atomic load) ───────────────▶ original(args)
//!     nested: called from inside a hook on this thread ───────────▶ original(args)
//!     not a green thread of a running hub (OS thread without a hub,
//!       the hub greenlet itself, hub creation or teardown) ───────▶ original(args)
//!     descriptor the caller made non-blocking, regular file,
//!       block device, directory, unknown clock ───────────────────▶ original(args)
//!     otherwise: try without blocking; on EAGAIN wait on the hub (other green
//!       threads run), retry; return what blocking libc would have returned
//! ```
//!
//! The originals are looked up once with `dlsym(RTLD_NEXT, ..)` ([`original`]; on macOS a
//! direct call). On every pass-through path errno is exactly what the original set.
//!
//! ## When the exported symbols take effect (Linux)
//! Measured on Linux/glibc with rustc 1.95 and each of its default linker (rust-lld), GNU
//! ld.bfd and gold (`-C link-arg=-fuse-ld=..`), in debug, release and fat-LTO builds, with
//! a hooked crate that the program depends on but never calls (`tests/monkey.rs` checks
//! std, and a C library built and `dlopen`ed at test time):
//! * **Rust code, std included**, in the final executable: yes, with no build changes.
//!   rustc links the verdant rlib into the executable; the linker resolves std's undefined
//!   `read`/`recv`/`clock_nanosleep` to the executable's own definitions before looking at
//!   libc.so (definitions in regular objects win over shared libraries), and keeps them
//!   even though nothing in Rust names them. Note that std (1.95) sleeps with
//!   `clock_nanosleep`, not `nanosleep`.
//! * **C code compiled into the same executable** (the `cc` crate, a static `.a`): yes, the
//!   same static resolution.
//! * **Shared libraries** (linked at build time or `dlopen`ed later): yes, with no build
//!   changes. The linker (all three alike) puts a symbol defined in the executable into its
//!   dynamic symbol table when a shared library of the link (here libc.so.6) also defines
//!   it, so `nm -D` on the executable lists `T read`, `T nanosleep`, ...; the dynamic linker searches the
//!   executable first and every library's `read` binds to the hook. No `-rdynamic`, no
//!   `--export-dynamic-symbol`, no `.cargo/config.toml` entry is needed (rustc itself
//!   exports no other `#[no_mangle]` symbol of an executable: it is libc.so's presence in
//!   the link that does it).
//! * **Not reached**: calls glibc makes internally (they bypass the PLT: `sleep` does not go
//!   through `nanosleep`, `getaddrinfo` does not go through `poll`/`recvfrom` — hence one
//!   hook per public function); raw `syscall(2)`; fully static executables (no `dlsym`).
//!   Not measured, by reasoning from the lookup order: a verdant inside a `cdylib` that a
//!   non-Rust program `dlopen`s would not take effect (libc comes first in the global
//!   scope) unless the library is `LD_PRELOAD`ed.
//!
//! ## macOS
//! **Compiled, never run here**: CI builds the library with `--features monkey` for
//! `aarch64-apple-darwin` and `x86_64-apple-darwin` (`scripts/xbuild`), and checks nothing
//! more. What follows is how it is built and what is known about when it takes effect.
//!
//! (x86_64 FreeBSD is also compiled, never run: it is ELF, so it takes the Linux way
//! unchanged — `#[no_mangle]` exports, `dlsym(RTLD_NEXT, ..)` originals, `accept4` and
//! `clock_nanosleep` included — with `__error` for errno and the kqueue `PollSet`. Whether
//! its linker and libthr's interposing of the cancellation points let the executable's
//! definitions win as they do on Linux is untried. Other systems: `compile_error!`.)
//!
//! **How.** With macOS's two-level namespace every image binds `read` to *libSystem's*
//! `read`, so a same-named definition would reach no other library (and would capture the
//! executable's own calls, the originals' included). So on macOS the hooks keep their Rust
//! (mangled) names and each is registered with dyld's interposing: a `#[repr(C)]` pair
//! `{ hook, libc::read }` in the `__DATA,__interpose` section (what `DYLD_INTERPOSE` in
//! `<mach-o/dyld-interposing.h>` emits). dyld redirects the binds of `read` in *other*
//! images to the hook. The 22 hooks macOS has are in the table (not `accept4`,
//! `clock_nanosleep`, `ppoll`, `dup3`, `epoll_wait`, `epoll_pwait`, which it does not have;
//! on x86_64 `close` twice, see below); `poll`, `select` and `pselect` wait on a temporary
//! kqueue set instead of an epoll set (`crate::sys::PollSet`, which cannot mirror
//! `POLLPRI`/`POLLRDBAND`/`POLLWRBAND`: such a `poll`, or a `select` with an except set,
//! blocks as unpatched). std sleeps with `nanosleep` on macOS.
//!
//! **Originals.** dyld does not apply an image's interposing to the calls that image makes
//! itself (it records a per-image exception so that the interposer "can call through to
//! old impl"), so [`original`]`::read` is a plain call of `libc::read`: libSystem's, or the
//! previous interposer's if another dylib interposed `read` first (dyld chains them). No
//! `dlsym`: `RTLD_NEXT` would find the same function (the hooks are not exported under libc
//! names there), at the price of a lookup and a cache.
//!
//! **When it takes effect.** From dyld's source (dyld4, `RuntimeState::buildInterposingTables`
//! in apple-oss-distributions/dyld; dyld2 also skipped the main executable), not verified on
//! a Mac:
//! * Only the `__interpose` sections of **dylibs loaded at launch** are read (not of the
//!   main executable, not of the shared cache, not of a library `dlopen`ed later: "interposing
//!   is only registered at launch"). Once registered, the pairs apply to every other image,
//!   including ones loaded later and the shared cache's binds.
//! * So with verdant linked statically into the executable (cargo's default) the table is
//!   present but **dyld ignores it: nothing is patched** (`patch_all` only sets its flags).
//!   For the hooks to take effect verdant must live in a dylib the program loads at launch
//!   and shares with the code that spawns green threads (one copy of verdant: a second copy,
//!   e.g. a `DYLD_INSERT_LIBRARIES` shim with its own verdant, would see no hub and pass every
//!   call through): e.g. a Rust `dylib` crate that re-exports verdant, built with
//!   `-C prefer-dynamic` so that std is its own image and its calls are interposed.
//!   Untried. The private `dyld_dynamic_interpose` (used by some test tools to interpose
//!   from an already-loaded image) is not used.
//! * Calls from the image that holds verdant (anything linked statically into the same
//!   dylib) are never interposed.
//! * AMFI can forbid interposing for the process (dyld's `allowInterposing`; e.g. restricted
//!   or platform binaries): then nothing is patched.
//! * Several libSystem functions have more than one exported name (`select$DARWIN_EXTSN`,
//!   `*$NOCANCEL`, on x86_64 `select$1050`); a pair interposes exactly one name, the one
//!   the libc crate binds (`scripts/check-interpose` lists them). On x86_64 that is
//!   `close$NOCANCEL` for `close`, so a second pair interposes plain `close`, which is what
//!   the SDK headers bind C code to; `select$1050`/`pselect$1050` are what the headers bind
//!   by default on x86_64 (plain names on arm64). `select$DARWIN_EXTSN` (C code built with
//!   `_DARWIN_C_SOURCE` or `_DARWIN_UNLIMITED_SELECT`) is not interposed; the headers'
//!   names are read from memory of the SDK, not checked here. `interpose!(hook => path)`
//!   adds a pair for another name (`sys::interpose::plain` declares such names).
//!
//! **Adding a hook** (the same two lines on every OS; the macro is `crate::sys::interpose!`):
//!
//! ```text
//! #[cfg_attr(not(target_os = "macos"), no_mangle)]   // instead of #[no_mangle]
//! pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t { .. }
//! crate::sys::interpose!(readv);                       // right after the hook
//! ```
//!
//! plus its line in [`original`]'s `originals!` list (unchanged: on macOS the same entry
//! becomes a direct call). A function some system lacks gets a `cfg` naming where it
//! exists, on the hook, on its `originals!` entry and on its `address_of` arm, and its
//! `interpose!` line only if macOS has it: `#[cfg(not(target_os = "macos"))]` for
//! `accept4`, `clock_nanosleep`, `ppoll` and `dup3` (Linux and FreeBSD),
//! `#[cfg(target_os = "linux")]` for `epoll_wait`/`epoll_pwait`; for others the libc
//! crate's declarations decide, and `scripts/xbuild -- --features monkey` checks all three
//! targets. A Linux-only constant in a hook body (`POLLRDHUP`, `MSG_NOSIGNAL`,
//! `MSG_ERRQUEUE`, ...) belongs in `sys` (`sys::MSG_ERRQUEUE` is 0 elsewhere), or behind
//! the same kind of `cfg`; so does a signature that differs (`sys::NameInfoLen`, the
//! `size_t` lengths of FreeBSD's `getnameinfo`). Add the hook's name to `expected=` in
//! `scripts/check-interpose`. errno is `crate::sys::errno`/`set_errno`.
//!
//! ## Descriptors the caller believes blocking
//! The descriptor is left blocking. The choices and their races:
//! * **Sockets** (`read`, `write`, `recv`, `send`, `recvfrom`, `sendto`): the call is made
//!   with `MSG_DONTWAIT` (`read`/`write` on a socket are `recv`/`send` with no flags), so
//!   there is no shared state to race on. Only on `EAGAIN` does the hook need to know
//!   whether the caller made the descriptor non-blocking (then `EAGAIN` is the answer):
//!   `fcntl(F_GETFL)` says, or on Linux the hook's cache ([below](#what-the-socket-hooks-keep-linux)).
//!   A write on a stream socket continues after a partial send, as blocking `send` does,
//!   and returns the total (or the count so far if an error follows progress); `recv`
//!   with `MSG_WAITALL` likewise receives until full, end of stream or error, on a stream
//!   socket (the kernel returns one message on datagram and seqpacket sockets; with
//!   `MSG_PEEK` the first non-empty peek is returned). A call that already has
//!   `MSG_DONTWAIT`, and a receive with `MSG_ERRQUEUE` or `MSG_OOB` (they never wait),
//!   passes straight through.
//!   `SO_RCVTIMEO`/`SO_SNDTIMEO` are honoured: the wait ends with `EAGAIN` after them.
//! * **`connect`**: the socket is made non-blocking for the one `connect` call and made
//!   blocking again at once; then the green thread waits for writability and reports
//!   `SO_ERROR`. Another OS thread using the same socket during that one syscall would see
//!   it non-blocking. (On Linux the toggle goes past the `fcntl` hook: it does not void
//!   the settings the socket hooks cache for every descriptor.)
//! * **`readv`, `writev`, `recvmsg`, `sendmsg`** do the same: on a socket the call is a
//!   `recvmsg`/`sendmsg` with `MSG_DONTWAIT` (what `readv`/`writev` amount to there),
//!   `writev`/`sendmsg` continue after partial sends on a stream socket, `recvmsg` with
//!   `MSG_WAITALL` receives until full on a `SOCK_STREAM` socket (one message on others, as
//!   the kernel does; it returns early once ancillary data arrives). `readv`/`writev` on
//!   pipes and terminals wait like `read`/`write`. A zero-byte `readv` and invalid iovec
//!   counts pass through (`readv` of 0 bytes returns 0 at once on any socket).
//! * **`accept`/`accept4`, pipes, terminals, character devices** (`read`, `write`): wait
//!   until `poll` says ready, then make the blocking call. If another process or OS thread
//!   takes the data (or the connection) between the two, the call blocks the OS thread as
//!   it would without the patch; it never returns a wrong result. A pipe write larger than
//!   the free space blocks the OS thread once the first part fits.
//! * **Regular files, block devices, directories** are always "ready" for the kernel:
//!   their reads and writes pass straight through and block the hub for their duration.
//!
//! ## What the socket hooks keep (Linux)
//! On Linux a descriptor that a hooked call waited on keeps, until the `close`, `dup2` or
//! `dup3` hook ends it (`cache.rs`):
//! * **its registration with the hub**, in the same fd-indexed table as `verdant::net`'s
//!   sockets, with the number's *generation*: a process-wide count, per descriptor
//!   number, of the hooked calls that closed the number or made a new descriptor with it —
//!   `close`, `dup2`, `dup3` and `fclose` (whose `close` glibc makes internally) on any
//!   OS thread, counted before and after the call, and `socket`, `socketpair`, `accept`,
//!   `accept4`, `dup`, `fcntl(F_DUPFD)`, which are hooked for this alone (Linux). While the
//!   count is the one recorded, a socket wait uses the registration as it is: no system
//!   call. When it moved (the number was closed on another OS thread, whose hooks cannot
//!   reach this thread's table, or reused), the wait first proves the registration
//!   current with one `EPOLL_CTL_ADD`: an epoll registration belongs to the pair
//!   (descriptor number, open file), so the `ADD` fails with `EEXIST` while the number
//!   names the registered file (nothing changes, no event is queued), and succeeds once
//!   it names another file: the number is then registered afresh and everything below is
//!   forgotten. (`EPOLL_CTL_MOD` would prove the same, but re-arm the edge: a writable
//!   socket would queue a spurious event at every wait.) Waits on pipes, terminals,
//!   listeners, connecting sockets and poll sets prove it at every wait (`pipe` and
//!   `epoll_create1` are not counted).
//!
//!   **Not seen**: a socket closed past every hook (a raw `close` system call, `close`
//!   made inside another library, glibc's own closes other than `fclose`'s: `pclose`,
//!   `freopen`, `close_range`, `closefrom`) *and* its number reused past every counted
//!   call (a raw `socket` or `dup` system call, descriptors received with `SCM_RIGHTS`,
//!   `accept` made inside another library), then read or written through the hooks on the
//!   OS thread that kept the old registration. Its wait then trusts a registration of the
//!   closed file, which no longer reports anything (a read after a drained read waits on
//!   it without trying first). The safety net: while socket waits are parked, a green
//!   thread of the hub (`verdant-monkey-sweep`, started by the first such wait, ended
//!   once none is parked at its next round) proves up to 1,024 kept registrations current
//!   every second, going round the table, as a wait whose count moved does; a stale one is
//!   registered afresh under the same id, so its waiter sees the new file's events, and
//!   one whose number is closed ends, waking its waiters with `EBADF`. So such a wait ends
//!   late (about a second, more with over 1,024 kept descriptors on the thread), not
//!   never, and never with another file's readiness: it retries the call and waits again.
//!   The same net catches a number closed and reused *during* a wait, which no proof at
//!   the wait's start could see. Reused through any counted call, or closed through a
//!   hook, the number is proven afresh at its next wait. A `close` through the hook on
//!   another OS thread does not wake this thread's waiters (see below), and neither does
//!   a raw one: only the sweep ends their waits. A side effect of the sweep: a [`WouldBlockForever`](crate::WaitError)
//!   that follows the last parked socket wait of a thread is reported up to a second
//!   late (the sweep's pending sleep counts as something that could wake it).
//! * **whether the caller made it non-blocking, and its `SO_RCVTIMEO`/`SO_SNDTIMEO`**,
//!   read with `fcntl(F_GETFL)` and `getsockopt` at its first wait. They belong to the
//!   open file, and the calls that change them are hooked as well — `fcntl`/`fcntl64` with
//!   `F_SETFL`, `ioctl` with `FIONBIO` (what std's `set_nonblocking` uses) and
//!   `setsockopt` at `SOL_SOCKET` level — on every descriptor, from every OS thread: each
//!   such call bumps a process-wide epoch, and a cache of another epoch is read again. So
//!   a flag set through a `dup` of the descriptor, or from another thread, is seen at the
//!   next wait. **Not seen**: the same changes made with a raw system call, or by another
//!   process sharing the open file (after `fork`, or one it was passed to): the hooks keep
//!   the old answer until the next hooked `fcntl`/`ioctl`/`setsockopt` anywhere in the
//!   process. `socket`, `socketpair`, `accept4` and `open` with `SOCK_NONBLOCK`/`O_NONBLOCK`
//!   need no hook: they make a new open file, whose first wait reads afresh.
//!   `fcntl` and `ioctl` are variadic in C, and stable Rust cannot define a variadic
//!   function: their hooks take the optional argument as a fixed third one, which the
//!   x86_64 System V and aarch64 Linux calling conventions pass in the same register as a
//!   variadic one (not Apple's arm64, which passes variadic arguments on the stack), and
//!   pass it on through a variadic function pointer. macOS and FreeBSD therefore hook
//!   neither, keep nothing, and ask `fcntl(F_GETFL)`, `getsockopt` and a temporary
//!   registration at every wait; their `EVFILT` registrations could not prove themselves
//!   current anyway (kqueue's `EV_ADD` succeeds on a reused number).
//! * **whether it is a TCP socket** (`SO_PROTOCOL`, asked once), and whether the last
//!   plain read (`read`, `recv` with no flags) **drained** it: a TCP read that returned
//!   fewer bytes than asked for, but some, emptied the receive buffer, so the next read
//!   waits for the kernel's next edge at once instead of first failing with `EAGAIN` (the
//!   reactor's drained shortcut, as `verdant::net::TcpStream` reads do). Not for other
//!   sockets: a Unix stream read can stop short at a message carrying credentials or
//!   descriptors with more data behind it.
//!
//! A kept registration costs the hub a slot and an epoll entry, not a waiter: the hub's
//! "nothing can wake this" detection counts parked green threads, so it is unaffected
//! (but for the sweep's last second, above). A descriptor closed behind the hooks leaves
//! its slot until its number is waited on again or a sweep finds it closed.

//! ## Waits on several descriptors
//! `poll`, `ppoll`, `select`, `pselect`, `epoll_wait` and `epoll_pwait` first ask the
//! original with a zero timeout; if nothing is ready, the green thread waits on the hub
//! for a kernel set to become readable (epoll; kqueue on macOS and FreeBSD) — a temporary
//! one over the `pollfd` array or the
//! `fd_set`s, or for `epoll_wait` the caller's own epoll fd, which is itself pollable —
//! and then asks the original again with a zero timeout. So the answer (count, `revents`,
//! `fd_set` bits, epoll events, errno) is always the C library's own. `select` updates
//! its `timeval` to the time not slept, as Linux does; `ppoll` and `pselect` leave their
//! `timespec` alone, as glibc does. `select`/`pselect` with `nfds` above `FD_SETSIZE`
//! pass straight through. A zero timeout passes straight through.
//!
//! **Signal masks.** A signal mask belongs to the OS thread, shared by every green thread
//! of its hub, so it cannot be swapped in for one green thread's wait: `ppoll`, `pselect`
//! and `epoll_pwait` with a non-null `sigmask` pass straight through (the OS thread
//! blocks, with the mask applied atomically as asked); with a null mask they wait on the
//! hub like `poll`, `select` and `epoll_wait`.
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use std::time::Duration;
//!
//! verdant::monkey::patch_sockets();
//! let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
//! let fd = reader.as_raw_fd();
//! // A plain libc `select` with a 10 s timeout, as C code would call it ...
//! let waiter = verdant::spawn(move || {
//!     // SAFETY: an all-zero fd_set is the empty set.
//!     let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
//!     let mut timeout = libc::timeval { tv_sec: 10, tv_usec: 0 };
//!     // SAFETY: `fd < FD_SETSIZE`; the set and the timeout are live locals.
//!     unsafe {
//!         libc::FD_SET(fd, &mut set);
//!         let null = std::ptr::null_mut();
//!         (libc::select(fd + 1, &mut set, null, null, &mut timeout), libc::FD_ISSET(fd, &set))
//!     }
//! });
//! // ... lets this green thread run meanwhile and wake it.
//! verdant::sleep(Duration::from_millis(5)).unwrap();
//! std::io::Write::write_all(&mut writer, b"x").unwrap();
//! assert_eq!(waiter.join().unwrap(), (1, true));
//! ```
//!
//! ## Closing a descriptor others wait on
//! Once sockets are patched, `close(fd)` first deregisters `fd` from this OS thread's hub
//! if a green thread waits on it, then closes it. Every such waiter wakes: a hooked libc
//! call fails with `EBADF`, a `verdant::net` call or
//! [`wait_readable`](crate::net::wait_readable) with `NotConnected`. A later descriptor
//! that gets the same number starts with a fresh registration. `dup2`/`dup3` onto a
//! descriptor green threads wait on behave like `close` of it first (unless the call
//! would fail or do nothing); so does `fclose` of a stream over it on Linux (glibc's
//! `close` inside it is past the hook; elsewhere it is not hooked). `dup` needs no hook
//! for this (on Linux it is hooked only to count its new number). Green threads of *other* OS threads
//! waiting on the descriptor are not woken by the close (each hub knows only its own
//! waits; on Linux their hub's sweep, see [above](#what-the-socket-hooks-keep-linux), ends
//! such a wait with `EBADF` within about a second if the number is still closed then, or
//! lets it wait on the file that took the number), and a
//! `poll`/`select`/`epoll_wait` whose set contains the descriptor is not woken either —
//! as with the real calls on Linux, it waits for the other descriptors or its timeout.
//!
//! ```
//! use std::os::fd::IntoRawFd;
//! use std::time::Duration;
//!
//! verdant::monkey::patch_sockets();
//! let (reader, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
//! let fd = reader.into_raw_fd();
//! let blocked = verdant::spawn(move || {
//!     let mut buf = [0u8; 16];
//!     // SAFETY: a live buffer of the length passed.
//!     let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
//!     (n, std::io::Error::last_os_error().raw_os_error())
//! });
//! verdant::sleep(Duration::from_millis(5)).unwrap();
//! // SAFETY: this code owns `fd` (taken from the UnixStream above).
//! assert_eq!(unsafe { libc::close(fd) }, 0);
//! assert_eq!(blocked.join().unwrap(), (-1, Some(libc::EBADF)));
//! ```
//!
//! ## Name lookups
//! After [`patch_dns`], `getaddrinfo` and `getnameinfo` in a green thread run on
//! verdant's blocking thread pool ([`spawn_blocking`](crate::spawn_blocking)) while the
//! hub keeps running: glibc's resolver does its I/O internally, past the other hooks. The
//! arguments are copied, so the worker never touches the caller's memory; the return
//! value, errno, the `addrinfo` list (freed with the ordinary `freeaddrinfo`) and the
//! `host`/`serv` buffers are what the real call produced. An interrupted wait returns
//! `EAI_SYSTEM` with errno `ETIMEDOUT` (a [`Timeout`](crate::Timeout)) or `ECANCELED`
//! (a kill).
//!
//! ## Interruptions
//! A hook cannot unwind into its C or Rust caller. A [`Timeout`](crate::Timeout) that fires
//! during a hooked wait makes the call fail with `ETIMEDOUT` (sleeps return early, as if
//! complete); a kill makes it fail with `ECANCELED` (sleeps return at once), and the kill
//! unwinds at the green thread's next verdant blocking call. A `GreenletExit` thrown into a
//! green thread waiting in a hook (its last handle dropped) is treated like a kill.
//!
//! ## Cost when patched
//! A socket call that does not wait costs what it did: one `recv`/`send` with
//! `MSG_DONTWAIT` (a short TCP read adds a table lookup, and once per socket a
//! `getsockopt(SO_PROTOCOL)`). On Linux one that waits adds no system call while the
//! number's generation is unchanged (one `EPOLL_CTL_ADD`, proving the kept registration
//! current, once it moved) and, after a drained TCP read, saves the failing `recv`; the
//! first wait on a descriptor adds `EPOLL_CTL_ADD`, `fcntl(F_GETFL)` and `getsockopt`,
//! and its hooked `close` an `EPOLL_CTL_DEL`. So a keep-alive HTTP request served by
//! `std::net` after `patch_all` makes `recvfrom` and `sendto`, as on `verdant::net`, and
//! nothing more (before the generations, one `epoll_ctl` failing with `EEXIST` per
//! waiting read: 0.24 per request under `wrk -c10`, 0.7 to 1 under callgrind; before the
//! kept registrations, a wait added a failing `recvfrom`, `fcntl`, `getsockopt` and two
//! `epoll_ctl`). The hooked closes cost two atomic adds more, the counted creations one,
//! on numbers whose block of 4096 holds a kept registration. Elsewhere
//! a wait adds `fcntl(F_GETFL)`, `getsockopt` and a temporary registration (two kernel
//! calls). `read`/`write` (and `readv`/`writev`) on a descriptor that is not a socket first
//! learn so from `ENOTSOCK`, then `fstat`, `fcntl` and a zero-timeout `poll` before the
//! real call: a regular-file `read` in a green thread costs three system calls more than
//! unpatched. A `poll`/`ppoll`/`select` that finds something ready at once costs one
//! zero-timeout call of the original; one that waits adds a poll set (on Linux
//! `epoll_create1`, one `epoll_ctl` per descriptor, `close`) and its registration with the
//! hub. `close`, `dup2` and `dup3` cost one thread-local table lookup when nobody waits on
//! the descriptor (`dup2`/`dup3` add an `fcntl` when somebody does). The `fcntl`, `ioctl`
//! and `setsockopt` hooks cost a compare, and an atomic add for the calls they watch.
//!
//! `examples/monkey_pingpong.rs` measures the waiting path without a network client:
//! two green threads bounce a byte over a Unix socketpair (no drained shortcut: every read
//! first fails with `EAGAIN`), so every read waits, and callgrind's instruction count is
//! the same on every run. std after `patch_all` costs about 3,570 instructions per round
//! trip (two waits) against 2,010 for `verdant::net`, measured with rustc 1.95 (3,180
//! with an `EPOLL_CTL_ADD` proof at every wait and no sweep, in the same build; earlier
//! builds: 3,730 against 2,670, 4,460 with a temporary registration per wait, 5,800 while
//! the table was a `HashMap` with std's SipHash). About 360 of the difference is the
//! sweep's pending sleep: with a timer pending the hub reads the clock at every poll, and
//! this loop polls at every wait, where a loaded server polls once for many requests (its
//! real cost: the `EPOLL_CTL_ADD` the proof made in the kernel, 2 per round trip, which
//! callgrind does not count, is gone; `strace -c`: 4 `recvfrom`, 2 `sendto`, 2
//! `epoll_wait` and no `epoll_ctl` per round trip). The rest is the hooks' checks,
//! `suspended`, the cache, and the kernel's share of the extra system call per wait (the
//! failing `recv`).

//! ## Cost when not patched
//! One relaxed load of a process-global `AtomicBool` and a predictable branch per call,
//! then a call through a cached function pointer.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod cache;
mod dns;
mod fds;
mod hooks;
mod io;
pub mod original;
mod poll;

use crate::sys::{errno, set_errno};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A group of hooks that is patched as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `read`, `write`, `recv`, `send`, `recvfrom`, `sendto`, `connect`, `accept`,
    /// `accept4`, `poll`, `ppoll`, `select`, `pselect`, `epoll_wait`, `epoll_pwait`,
    /// `close`, `dup2`, `dup3`, `readv`, `writev`, `recvmsg`, `sendmsg` (on Linux
    /// `fcntl`, `fcntl64`, `ioctl`, `setsockopt`, `socket`, `socketpair`, `dup` and
    /// `fclose` watch, whether patched or not, for changes of what these cache; `fclose`
    /// wakes waiters as `close` does).
    Sockets,
    /// `nanosleep`, `clock_nanosleep`, `usleep`, `sleep`.
    Time,
    /// `getaddrinfo`/`getnameinfo`: run on the blocking thread pool while the green
    /// thread waits on the hub.
    Dns,
}

static SOCKETS: AtomicBool = AtomicBool::new(false);
static TIME: AtomicBool = AtomicBool::new(false);
static DNS: AtomicBool = AtomicBool::new(false);

fn flag(family: Family) -> &'static AtomicBool {
    match family {
        Family::Sockets => &SOCKETS,
        Family::Time => &TIME,
        Family::Dns => &DNS,
    }
}

/// Patches every family: from now on, blocking libc calls made in green threads wait on
/// the hub. Process-wide and permanent (as in gevent); idempotent. OS threads without a
/// hub are unaffected.
///
/// ```
/// verdant::monkey::patch_all();
/// assert!(verdant::monkey::is_patched(verdant::monkey::Family::Time));
/// ```
pub fn patch_all() {
    patch_sockets();
    patch_time();
    patch_dns();
}

/// Patches socket and pipe I/O (see [`Family::Sockets`]).
///
/// ```
/// verdant::monkey::patch_sockets();
/// assert!(verdant::monkey::is_patched(verdant::monkey::Family::Sockets));
/// ```
pub fn patch_sockets() {
    SOCKETS.store(true, Ordering::Relaxed);
}

/// Patches the sleeps (see [`Family::Time`]).
///
/// ```
/// verdant::monkey::patch_time();
/// assert!(verdant::monkey::is_patched(verdant::monkey::Family::Time));
/// ```
pub fn patch_time() {
    TIME.store(true, Ordering::Relaxed);
}

/// Patches the name lookups (see [`Family::Dns`]): `getaddrinfo`/`getnameinfo` in a
/// green thread run on the blocking thread pool.
///
/// ```
/// verdant::monkey::patch_dns();
/// assert!(verdant::monkey::is_patched(verdant::monkey::Family::Dns));
/// ```
pub fn patch_dns() {
    DNS.store(true, Ordering::Relaxed);
}

/// Whether `family` has been patched in this process.
///
/// ```
/// use verdant::monkey::{is_patched, patch_time, Family};
/// patch_time();
/// assert!(is_patched(Family::Time));
/// ```
pub fn is_patched(family: Family) -> bool {
    flag(family).load(Ordering::Relaxed)
}

thread_local! {
    /// How many hooks are running on this thread's current green thread. Zero at every
    /// switch: a hook that waits sets it to zero for the wait ([`suspended`]).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether a hook of `family` should do its cooperative version now: patched, not nested in
/// another hook, and running in a green thread of this thread's hub. errno is unchanged.
#[inline]
fn cooperative(family: &AtomicBool) -> bool {
    if !family.load(Ordering::Relaxed) {
        return false;
    }
    cooperative_slow()
}

#[cold]
fn cooperative_slow() -> bool {
    let errno = errno();
    let yes = DEPTH.with(Cell::get) == 0 && crate::hub::in_green_thread();
    set_errno(errno);
    yes
}

/// Marks the current green thread as inside a hook until dropped: calls the hook makes
/// (directly or through verdant's own code) pass straight through.
struct Nested;

impl Nested {
    fn enter() -> Nested {
        DEPTH.with(|d| d.set(d.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `wait` (which may switch to the hub) with the nesting depth at zero, so the other
/// green threads that run meanwhile see their own hooks, and restores it afterwards (also
/// when a kill unwinds).
fn suspended<R>(wait: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEPTH.with(|d| d.replace(0)));
    wait()
}
