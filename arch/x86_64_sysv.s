# verdant context switch: x86_64, System V AMD64 ABI (ELF on Linux/FreeBSD, Mach-O on macOS).
#
# Assembled with `global_asm!` in src/context/x86_64.rs, Intel syntax. The Rust side
# prepends a prelude that defines the `verdant_func` / `verdant_endfunc` macros for the
# object format (ELF: .hidden/.type/.size; Mach-O: leading underscore, .private_extern).
#
# This file holds the entry trampoline. The switch itself is seven instructions that are
# inlined at every call site (`context::x86_64::switch`), listed and explained below: an
# out-of-line switch costs a `call`+`ret` or `jmp`+`jmp` more per switch, and a `ret` that
# returns into another stack mispredicts on every switch.
#
# Who saves what
# --------------
# The System V ABI makes rbx, rbp, r12-r15 and rsp callee-saved (plus the control bits of
# MXCSR and the x87 control word). A switch must preserve all of them for the context that
# switches away. The switch saves only rbx and rbp, the two registers Rust inline asm may not
# name as clobbered (LLVM reserves rbx; rbp is the frame pointer). The call site declares
# r12-r15 and every caller-saved register clobbered, so the compiler spills only the values
# that are actually live across that particular call site -- usually none or one. That is
# what makes the switch cost a handful of cycles.
#
# MXCSR and the x87 control word are NOT saved: like the rounding mode of an OS thread, they
# belong to the OS thread, and a green thread that changes them changes them for every green
# thread on that OS thread. tests/context.rs checks this documented behaviour.
#
# Saved frame of a suspended context (stack grows down; `sp` is the value handed out as the
# context's StackPointer)
# --------------------------------------------------------------------------------------
#
#     sp + 16   saved rbp
#     sp +  8   saved rbx
#     sp +  0   resume address (pushed by the switch's `call`)
#
# The switch, inlined at each call site
# -------------------------------------
#   in:  rsi = StackPointer of the target context, rdi = data word for the target
#   out: rax = StackPointer of the context that switched back to us, rdi = its data word
#
#     push rbp                  # save rbp on our stack
#     push rbx                  # save rbx on our stack
#     call [rsi]                # push our resume address (completing our saved frame, so
#                               # rsp is now our StackPointer) and jump to the target's
#                               # resume address, read from the top of its saved frame
#   -- resume address: reached by some context's `call [rsi]` with rsi = our StackPointer,
#   -- while rsp still points at that context's freshly pushed frame
#     mov rax, rsp              # rax = StackPointer of the context that switched to us
#     lea rsp, [rsi + 8]        # back on our own stack, past our consumed resume address
#     pop rbx                   # restore our rbx
#     pop rbp                   # restore our rbp; rsp is back where the call site left it
#
# No `ret` is used: the `call` pushes a return-stack-predictor entry that is never popped
# (the circular predictor just overwrites old entries), and the indirect `call` is predicted
# per call site by the branch target predictor, which learns the target of a ping-pong
# perfectly. A `ret` into another stack would mispredict on every switch instead.
#
# A freshly initialised context (src/context/x86_64.rs `init`) has a resume address too, at
# the same place, pointing at verdant_trampoline, with the entry function's address above it:
#
#     top - 16  (16 bytes, not written, never read: padding that keeps rsp 16-byte aligned
#                at the call below)
#     top - 24  (not written: the trampoline's `call` pushes its return address here)
#     top - 32  entry function
#     top - 40  resume address = verdant_trampoline      <- initial sp
#
# The trampoline moves rsp to top - 16, which is 16-byte aligned, so its `call` gives the
# entry function the stack alignment the ABI demands.
#
# A context made for an entry known by its type (`init_for`: the hub's re-armed green
# threads) has the same frame without the entry function at top - 32: its resume address is
# `trampoline_for::<E>` (a naked function in src/context/x86_64.rs), these same four
# instructions with a direct `call` of the entry. One store fewer per context made, one
# load fewer per start (spawn + run + join: 294.6 -> 292.6 instructions).

    .text

# verdant_trampoline: first code run on a fresh stack, reached by the switch's `call [rsi]`
# like any resume address (four instructions, where a resume has five after the `call`).
#   entry: rsp = the switching context's StackPointer, rsi = our initial sp,
#          rdi = data word
#   The entry function has type `extern "C" fn(data: usize, from: StackPointer) -> !`:
#   rdi is already its first argument, and the exchange leaves `from` in rsi.
# The CFI marks the return address as undefined: debuggers, backtraces and profilers stop
# cleanly here instead of walking into the garbage above the stack's top.
verdant_func verdant_trampoline
    .cfi_startproc
    .cfi_undefined rip          # no caller: this is the root of the coroutine's stack
    xchg rsi, rsp               # onto our fresh stack; rsi = StackPointer of the context
                                # that started us: the second argument, `from`
    lea rsp, [rsp + 24]         # past the resume address, the entry function and the
                                # unwritten word: rsp = top - 16, 16-byte aligned
    xor ebp, ebp                # rbp = 0: the end of the frame-pointer chain
    call [rsp - 16]             # entry(data, from), its address at top - 32; pushes a
                                # return address for unwinders (at top - 24)
    ud2                         # the entry function never returns
    .cfi_endproc
verdant_endfunc verdant_trampoline
