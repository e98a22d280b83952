# verdant context switch: x86_64, System V AMD64 ABI (ELF on Linux/FreeBSD, Mach-O on macOS).
#
# Assembled with `global_asm!` in src/context/x86_64.rs, Intel syntax. The Rust side
# prepends a prelude that defines the `verdant_func` / `verdant_endfunc` macros for the
# object format (ELF: .hidden/.type/.size; Mach-O: leading underscore, .private_extern).
#
# Who saves what
# --------------
# The System V ABI makes rbx, rbp, r12-r15 and rsp callee-saved (plus the control bits of
# MXCSR and the x87 control word). A switch must preserve all of them for the context that
# switches away. This file saves only rbx and rbp, the two registers Rust inline asm may not
# name as clobbered (LLVM reserves rbx; rbp is the frame pointer). The Rust call site
# (`context::x86_64::switch`) declares r12-r15 and every caller-saved register clobbered, so
# the compiler spills only the values that are actually live across that particular call
# site -- usually none or one. That is what makes the switch cost a handful of cycles.
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
#     sp +  0   resume address (where `jmp` continues this context)
#
# A freshly initialised context (src/context/x86_64.rs `init`) uses the same layout, with
# the resume address pointing at verdant_trampoline, rbx holding the entry function and rbp
# holding 0 (the end of the frame-pointer chain):
#
#     top - 16  (16 bytes, zero: padding that keeps rsp 16-byte aligned at the call below)
#     top - 24  rbp = 0
#     top - 32  rbx = entry function
#     top - 40  resume address = verdant_trampoline      <- initial sp
#
# After the three pops in verdant_switch, rsp = top - 16, which is 16-byte aligned, so the
# trampoline's `call` gives the entry function the stack alignment the ABI demands.

    .text

# verdant_switch: save the current context, restore `rsi`'s.
#   entry (reached by `jmp`, not `call`):
#     rax = resume address of the current context (a label right after the call site's jmp)
#     rsi = StackPointer of the target context
#     rdi = data word passed to the target (left untouched)
#   exit (in the target context, at its resume address):
#     rsi = StackPointer of the context that switched away
#     rdi = the data word
#     rbx, rbp = the target's saved values; everything else is dead per the call-site clobbers
# No `call`/`ret` is used: a `ret` here would pop the return-stack predictor entry of a
# different context and mispredict on every switch. Two indirect `jmp`s use the branch
# target predictor instead.
verdant_func verdant_switch
    push rbp                    # save frame pointer of the current context
    push rbx                    # save rbx (LLVM-reserved, not declarable as clobbered)
    push rax                    # save resume address: the frame is now [ret][rbx][rbp]
    mov rax, rsp                # rax = StackPointer of the current context
    mov rsp, rsi                # switch stacks: now on the target's saved frame
    mov rsi, rax                # hand the old StackPointer to the target
    pop rax                     # rax = target's resume address
    pop rbx                     # restore target's rbx
    pop rbp                     # restore target's rbp; rsp is back where the target left it
    jmp rax                     # continue the target (indirect branch, BTB-predicted)
verdant_endfunc verdant_switch

# verdant_trampoline: first code run on a fresh stack.
#   entry: rbx = entry function, rbp = 0, rsp 16-byte aligned,
#          rdi = data word, rsi = StackPointer of the context that started us
#   The entry function has type `extern "C" fn(data: usize, from: StackPointer) -> !`,
#   so rdi/rsi are already its arguments.
# The CFI marks the return address as undefined: debuggers, backtraces and profilers stop
# cleanly here instead of walking into the garbage above the stack's top.
verdant_func verdant_trampoline
    .cfi_startproc
    .cfi_undefined rip          # no caller: this is the root of the coroutine's stack
    call rbx                    # entry(data, from); pushes a return address for unwinders
    ud2                         # the entry function never returns
    .cfi_endproc
verdant_endfunc verdant_trampoline
