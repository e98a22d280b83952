// verdant context switch: AArch64, AAPCS64 (ELF on Linux/FreeBSD, Mach-O on macOS).
//
// Assembled with `global_asm!` in src/context/aarch64.rs. The Rust side prepends a prelude
// that defines the `verdant_func` / `verdant_endfunc` macros for the object format (ELF:
// .hidden/.type/.size; Mach-O: leading underscore, .private_extern).
//
// This file holds the entry trampoline. The switch itself is seven instructions that are
// inlined at every call site (`context::aarch64::switch`), listed and explained below: an
// out-of-line switch costs a `bl` and a `br` more per switch.
//
// Who saves what
// --------------
// AAPCS64 makes x19-x29, x30 (lr), sp and the low 64 bits of v8-v15 (d8-d15) callee-saved.
// The switch saves only x19 and x29 (fp), the registers Rust inline asm may not name as
// clobbered, and the resume address. The call site declares x20-x28, v8-v15 and every
// caller-saved register (x30 included) clobbered, so the compiler spills only the values
// live across that call site. x18 is the platform register (reserved on macOS) and is never
// touched.
//
// FPCR (rounding mode, flush-to-zero) is NOT saved: it belongs to the OS thread, exactly
// like MXCSR on x86_64. tests/context.rs checks this documented behaviour.
//
// Saved frame of a suspended context (stack grows down; `sp` is the value handed out as the
// context's StackPointer; sp stays 16-byte aligned at all times as AAPCS64 requires)
// ---------------------------------------------------------------------------------
//
//     sp + 24   padding (keeps the frame a multiple of 16)
//     sp + 16   resume address
//     sp +  8   saved x29 (fp)
//     sp +  0   saved x19
//
// sp + 8 and sp + 16 together form a valid frame record (fp, lr), so frame-pointer walkers
// can cross a suspended stack.
//
// The switch, inlined at each call site
// -------------------------------------
//   in:  x1 = StackPointer of the target context, x0 = data word for the target
//   out: x2 = StackPointer of the context that switched back to us, x0 = its data word
//
//     stp x19, x29, [sp, #-32]!  // save x19 and fp, reserve the 32-byte frame
//     ldr x2, [x1, #16]          // x2 = the target's resume address
//     blr x2                     // x30 = our resume address; jump to the target
//   -- resume address: reached by some context's `blr` with x1 = our StackPointer, while
//   -- sp still points at that context's frame and x30 holds its resume address
//     str x30, [sp, #16]         // complete the switching context's frame
//     mov x2, sp                 // x2 = StackPointer of the context that switched to us
//     mov sp, x1                 // back on our own stack
//     ldp x19, x29, [sp], #32    // restore x19 and fp, pop the frame
//
// No `ret` is used: the `blr` pushes a return-stack entry that is never popped, and the
// indirect `blr` is predicted per call site by the branch target predictor. A `ret` into
// another stack would mispredict on every switch instead.
//
// A freshly initialised context (src/context/aarch64.rs `init`) uses the same layout with
// x29 = 0 (end of the frame chain), resume address = verdant_trampoline and x19 = entry
// function:
//
//     top - 16  (16 bytes, zero)
//     top - 24  padding
//     top - 32  resume address = verdant_trampoline
//     top - 40  x29 = 0
//     top - 48  x19 = entry function                 <- initial sp
//
// After the restore in verdant_trampoline, sp = top - 16, 16-byte aligned.
//
// A context made for an entry known by its type (`init_for`: the hub's re-armed green
// threads) leaves the x19 and x29 slots unwritten: its resume address is
// `trampoline_for::<E>` (a naked function in src/context/aarch64.rs), which zeroes x29
// itself, moves sp past the frame (`add sp, x1, #32`) and calls the entry directly (`bl`).

    .text

// verdant_trampoline: first code run on a fresh stack, reached by the switch's `blr` like
// any resume address, so it starts with the same four instructions.
//   entry: sp = the switching context's frame, x30 = its resume address,
//          x1 = our initial sp, x0 = data word
//   The entry function has type `extern "C" fn(data: usize, from: StackPointer) -> !`:
//   x0 is already its first argument, `from` is moved into x1.
// The CFI marks the return address (x30) as undefined so that debuggers, backtraces and
// profilers stop cleanly at the root of the coroutine's stack.
verdant_func verdant_trampoline
    .cfi_startproc
    .cfi_undefined x30          // no caller: this is the root of the coroutine's stack
    str x30, [sp, #16]          // complete the switching context's frame
    mov x2, sp                  // x2 = StackPointer of the context that started us
    mov sp, x1                  // onto our fresh stack
    ldp x19, x29, [sp], #32     // x19 = entry function, x29 = 0; sp = top - 16
    mov x1, x2                  // second argument: `from`
    blr x19                     // entry(data, from); sets x30 for unwinders
    brk #0x1                    // the entry function never returns
    .cfi_endproc
verdant_endfunc verdant_trampoline
