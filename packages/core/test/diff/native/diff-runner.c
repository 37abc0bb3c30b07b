/*
 * tsvisor differential-testing runner: executes one x86-64 instruction at a time natively,
 * in 64-bit user mode, with every general-purpose register and the arithmetic flags set
 * from the input, and reports every register, RFLAGS and a memory window afterwards.
 *
 * Built by packages/core/test/diff/harness/native.ts with the system's C compiler at test
 * time (never committed as a binary). Protocol (all little-endian), on stdin:
 *
 *   case record:  u8 len (1..15) | u8 insn[15] | u64 gpr[16] (RAX..R15, KVM order)
 *                 | u64 rflags | u16 memOff | u16 memLen | u32 0 | u8 mem[memLen] | pad to 8
 *   flush record: u8 0xFF | 7 bytes (write out everything produced so far)
 *
 * on stdout, for every case record:
 *
 *   i32 vector (-1: completed; otherwise the exception vector from the kernel's trap number:
 *               0 #DE, 6 #UD, 13 #GP, 14 #PF, ...) | u32 signal | u64 gpr[16] | u64 rflags
 *   | u8 mem[memLen] | pad to 8
 *
 * Records are multiples of 8 bytes so the TypeScript side can view them as u64 arrays.
 *
 * The instruction is copied to CODE_ADDR followed by an absolute indirect jump back to
 * `stub_return`. Before it runs, the data page at DATA_ADDR is filled with 0xCC and the
 * window memOff..memOff+memLen is copied in; after it, that window is copied out. Code and
 * data live at fixed addresses below 2 GiB so instructions can address memory with an
 * absolute disp32 and leave every register free for operands.
 *
 * Faults: SIGFPE/SIGILL/SIGSEGV/SIGBUS/SIGTRAP are caught on an alternate stack (RSP holds
 * a test value when the instruction runs); the handler records the trap number and the
 * registers at the fault and siglongjmps back.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define CODE_ADDR 0x20000000UL
#define DATA_ADDR 0x30000000UL
#define PAGE 4096
#define IN_FIXED (16 + 16 * 8 + 8 + 8)
#define PAD8(n) (((n) + 7u) & ~7u)

/* Shared with the assembly stub below (RIP-relative). */
__attribute__((visibility("hidden"))) uint64_t in_regs[16];
__attribute__((visibility("hidden"))) uint64_t in_flags;
__attribute__((visibility("hidden"))) uint64_t out_regs[16];
__attribute__((visibility("hidden"))) uint64_t out_flags;
__attribute__((visibility("hidden"))) uint64_t host_rsp;
__attribute__((visibility("hidden"))) uint64_t code_ptr = CODE_ADDR;
__attribute__((visibility("hidden"), aligned(64))) uint8_t scratch_stack[1024];

void run_stub(void);
void stub_return(void);

/*
 * run_stub: save the C callee-saved registers, load RFLAGS and all 16 GPRs (RSP last) from
 * in_regs/in_flags, jump to the instruction. stub_return: store all 16 GPRs, then RFLAGS
 * (pushfq on a scratch stack), clear DF for the C ABI, and return to run_stub's caller.
 */
__asm__(
    ".text\n"
    ".globl run_stub\n"
    ".type run_stub,@function\n"
    "run_stub:\n"
    "  push %rbx\n  push %rbp\n  push %r12\n  push %r13\n  push %r14\n  push %r15\n"
    "  mov %rsp, host_rsp(%rip)\n"
    "  lea scratch_stack+1024(%rip), %rsp\n"
    "  pushq in_flags(%rip)\n"
    "  popfq\n"
    "  mov in_regs+0(%rip), %rax\n"
    "  mov in_regs+8(%rip), %rcx\n"
    "  mov in_regs+16(%rip), %rdx\n"
    "  mov in_regs+24(%rip), %rbx\n"
    "  mov in_regs+40(%rip), %rbp\n"
    "  mov in_regs+48(%rip), %rsi\n"
    "  mov in_regs+56(%rip), %rdi\n"
    "  mov in_regs+64(%rip), %r8\n"
    "  mov in_regs+72(%rip), %r9\n"
    "  mov in_regs+80(%rip), %r10\n"
    "  mov in_regs+88(%rip), %r11\n"
    "  mov in_regs+96(%rip), %r12\n"
    "  mov in_regs+104(%rip), %r13\n"
    "  mov in_regs+112(%rip), %r14\n"
    "  mov in_regs+120(%rip), %r15\n"
    "  mov in_regs+32(%rip), %rsp\n"
    "  jmp *code_ptr(%rip)\n"
    ".globl stub_return\n"
    ".type stub_return,@function\n"
    "stub_return:\n"
    "  mov %rax, out_regs+0(%rip)\n"
    "  mov %rcx, out_regs+8(%rip)\n"
    "  mov %rdx, out_regs+16(%rip)\n"
    "  mov %rbx, out_regs+24(%rip)\n"
    "  mov %rsp, out_regs+32(%rip)\n"
    "  mov %rbp, out_regs+40(%rip)\n"
    "  mov %rsi, out_regs+48(%rip)\n"
    "  mov %rdi, out_regs+56(%rip)\n"
    "  mov %r8, out_regs+64(%rip)\n"
    "  mov %r9, out_regs+72(%rip)\n"
    "  mov %r10, out_regs+80(%rip)\n"
    "  mov %r11, out_regs+88(%rip)\n"
    "  mov %r12, out_regs+96(%rip)\n"
    "  mov %r13, out_regs+104(%rip)\n"
    "  mov %r14, out_regs+112(%rip)\n"
    "  mov %r15, out_regs+120(%rip)\n"
    "  lea scratch_stack+1024(%rip), %rsp\n"
    "  pushfq\n"
    "  popq out_flags(%rip)\n"
    "  cld\n"
    "  mov host_rsp(%rip), %rsp\n"
    "  pop %r15\n  pop %r14\n  pop %r13\n  pop %r12\n  pop %rbp\n  pop %rbx\n"
    "  ret\n");

static sigjmp_buf fault_jmp;
static volatile int fault_vector;
static volatile int fault_signal;
static uint64_t fault_regs[16];
static uint64_t fault_flags;

/* KVM register order -> glibc gregs index. */
static const int greg_index[16] = {
    REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
    REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

static void on_fault(int sig, siginfo_t *si, void *ctx) {
  (void)si;
  ucontext_t *uc = (ucontext_t *)ctx;
  for (int i = 0; i < 16; i++) fault_regs[i] = (uint64_t)uc->uc_mcontext.gregs[greg_index[i]];
  fault_flags = (uint64_t)uc->uc_mcontext.gregs[REG_EFL];
  fault_vector = (int)uc->uc_mcontext.gregs[REG_TRAPNO];
  fault_signal = sig;
  siglongjmp(fault_jmp, 1);
}

static int read_full(void *buf, size_t n) {
  return fread(buf, 1, n, stdin) == n;
}

int main(void) {
  uint8_t *code = mmap((void *)CODE_ADDR, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  uint8_t *data = mmap((void *)DATA_ADDR, PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (code != (uint8_t *)CODE_ADDR || data != (uint8_t *)DATA_ADDR) {
    fprintf(stderr, "diff-runner: cannot map the code/data pages at fixed addresses\n");
    return 2;
  }

  static uint8_t altstack[64 * 1024];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) { perror("sigaltstack"); return 2; }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  /* SA_NODEFER: we leave the handler by siglongjmp without restoring the mask. */
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  int sigs[] = {SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGTRAP};
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);

  static uint8_t inbuf[IN_FIXED];
  static uint8_t mem[PAGE + 8];
  static uint8_t outbuf[8 + 17 * 8];
  for (;;) {
    uint8_t len;
    if (!read_full(&len, 1)) break;
    if (len == 0xFF) {
      uint8_t pad[7];
      if (!read_full(pad, 7)) break;
      fflush(stdout);
      continue;
    }
    inbuf[0] = len;
    if (!read_full(inbuf + 1, IN_FIXED - 1)) { fprintf(stderr, "diff-runner: short record\n"); return 2; }
    if (len == 0 || len > 15) { fprintf(stderr, "diff-runner: bad instruction length %u\n", len); return 2; }
    uint16_t mem_off, mem_len;
    memcpy(in_regs, inbuf + 16, 16 * 8);
    memcpy(&in_flags, inbuf + 16 + 128, 8);
    memcpy(&mem_off, inbuf + 16 + 136, 2);
    memcpy(&mem_len, inbuf + 16 + 138, 2);
    if ((unsigned)mem_off + mem_len > PAGE) { fprintf(stderr, "diff-runner: bad memory window\n"); return 2; }
    if (mem_len && !read_full(mem, PAD8(mem_len))) { fprintf(stderr, "diff-runner: short memory\n"); return 2; }

    /* Only the arithmetic flags and DF come from the input (no TF/AC), bit 1 always set. */
    in_flags = (in_flags & 0xCD5) | 0x2;
    memcpy(code, inbuf + 1, len);
    uint8_t *p = code + len;
    /* jmp qword [rip+0]; dq stub_return */
    p[0] = 0xFF; p[1] = 0x25; p[2] = p[3] = p[4] = p[5] = 0;
    uint64_t back = (uint64_t)(uintptr_t)&stub_return;
    memcpy(p + 6, &back, 8);
    memset(data, 0xCC, PAGE);
    memcpy(data + mem_off, mem, mem_len);

    if (sigsetjmp(fault_jmp, 0) == 0) {
      run_stub();
      int32_t vector = -1;
      uint32_t signo = 0;
      memcpy(outbuf, &vector, 4);
      memcpy(outbuf + 4, &signo, 4);
      memcpy(outbuf + 8, out_regs, 128);
      memcpy(outbuf + 136, &out_flags, 8);
    } else {
      int32_t vector = fault_vector;
      uint32_t signo = (uint32_t)fault_signal;
      memcpy(outbuf, &vector, 4);
      memcpy(outbuf + 4, &signo, 4);
      memcpy(outbuf + 8, fault_regs, 128);
      memcpy(outbuf + 136, &fault_flags, 8);
    }
    fwrite(outbuf, 1, sizeof outbuf, stdout);
    if (mem_len) {
      static const uint8_t zeros[8];
      fwrite(data + mem_off, 1, mem_len, stdout);
      fwrite(zeros, 1, PAD8(mem_len) - mem_len, stdout);
    }
  }
  fflush(stdout);
  return 0;
}
