// verdant context switch: AArch64, AAPCS64 (ELF on Linux/FreeBSD, Mach-O on macOS).
//
// Assembled with `global_asm!` in src/context/aarch64.rs. The Rust side prepends a prelude
// that defines the `verdant_func` / `verdant_endfunc` macros for the object format (ELF:
// .hidden/.type/.size; Mach-O: leading underscore, .private_extern).
//
// Who saves what
// --------------
// AAPCS64 makes x19-x29, x30 (lr), sp and the low 64 bits of v8-v15 (d8-d15) callee-saved.
// This file saves only x19 and x29 (fp), the registers Rust inline asm may not name as
// clobbered, and x30, which holds the resume address because the call site reaches us with
// `bl`. The Rust call site (`context::aarch64::switch`) declares x20-x28, v8-v15 and every
// caller-saved register clobbered, so the compiler spills only the values live across that
// call site. x18 is the platform register (reserved on macOS) and is never touched.
//
// FPCR (rounding mode, flush-to-zero) is NOT saved: it belongs to the OS thread, exactly
// like MXCSR on x86_64. tests/context.rs checks this documented behaviour.
//
// Saved frame of a suspended context (stack grows down; `sp` is the value handed out as the
// context's StackPointer; sp stays 16-byte aligned at all times as AAPCS64 requires)
// ---------------------------------------------------------------------------------
//
//     sp + 24   padding (keeps the frame a multiple of 16)
//     sp + 16   saved x19
//     sp +  8   saved x30 = resume address
//     sp +  0   saved x29 (frame pointer)
//
// A freshly initialised context (src/context/aarch64.rs `init`) uses the same layout with
// x29 = 0 (end of the frame chain), x30 = verdant_trampoline and x19 = entry function:
//
//     top - 16  (16 bytes, zero)
//     top - 24  padding
//     top - 32  x19 = entry function
//     top - 40  x30 = verdant_trampoline
//     top - 48  x29 = 0                           <- initial sp
//
// After the restore in verdant_switch, sp = top - 16, 16-byte aligned.

    .text

// verdant_switch: save the current context, restore x1's.
//   entry (reached by `bl` from the call site):
//     x30 = resume address of the current context (the instruction after the `bl`)
//     x1  = StackPointer of the target context
//     x0  = data word passed to the target (left untouched)
//   exit (in the target context, at its resume address):
//     x1  = StackPointer of the context that switched away
//     x0  = the data word
//     x19, x29, x30 = the target's saved values
// `br x30` rather than `ret`: the return-address stack holds the `bl` of the context that
// switched away, so `ret` would mispredict on every switch; `br` uses the indirect predictor.
verdant_func verdant_switch
    stp x29, x30, [sp, #-32]!   // push fp and resume address, reserve the 32-byte frame
    str x19, [sp, #16]          // save x19 (LLVM-reserved, not declarable as clobbered)
    mov x2, sp                  // x2 = StackPointer of the current context
    mov sp, x1                  // switch stacks: now on the target's saved frame
    ldr x19, [sp, #16]          // restore target's x19
    ldp x29, x30, [sp], #32     // restore target's fp and resume address, pop the frame
    mov x1, x2                  // hand the old StackPointer to the target
    br x30                      // continue the target (indirect branch, not a return)
verdant_endfunc verdant_switch

// verdant_trampoline: first code run on a fresh stack.
//   entry: x19 = entry function, x29 = 0, sp 16-byte aligned,
//          x0 = data word, x1 = StackPointer of the context that started us
//   The entry function has type `extern "C" fn(data: usize, from: StackPointer) -> !`,
//   so x0/x1 are already its arguments.
// The CFI marks the return address (x30) as undefined so that debuggers, backtraces and
// profilers stop cleanly at the root of the coroutine's stack.
verdant_func verdant_trampoline
    .cfi_startproc
    .cfi_undefined x30          // no caller: this is the root of the coroutine's stack
    blr x19                     // entry(data, from); sets x30 for unwinders
    brk #0x1                    // the entry function never returns
    .cfi_endproc
verdant_endfunc verdant_trampoline
