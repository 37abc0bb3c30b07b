/**
 * Recording VM-exit information (SDM Vol. 3C 28.2): GuestExit records from the processor are
 * encoded into the basic exit reason, qualification, interruption info and instruction info.
 */
import { ACCESS_FETCH, ACCESS_PAGE_WALK, ACCESS_READ, ACCESS_WRITE, CrAccessType, EventType, GuestExit, GuestExitKind, InterceptInsn } from '@tsvisor/core';
import {
  emptyExitRecord, encodeExit, ExitReason, idtVectoringInfo, recordExit, recordPlainInstructionExit, Vmcs, vmxInstructionExitReason,
} from '@tsvisor/vmx';

function enc(fill: (e: GuestExit) => void, ack = true) {
  const e = new GuestExit();
  fill(e);
  return encodeExit(e, ack, emptyExitRecord());
}

describe('exit qualification formats (SDM 28.2.1)', () => {
  it('I/O: size-1, direction, string, REP, operand encoding, port (Table 28-5)', () => {
    const out = enc((e) => { e.kind = GuestExitKind.IO; e.port = 0x3f8; e.size = 1; e.isIn = false; e.insnLength = 1; });
    expect(out.reason).toBe(ExitReason.IO_INSTRUCTION);
    expect(out.qualification).toBe(0x03f8_0000n);
    expect(out.instructionLength).toBe(1);
    const inImm = enc((e) => { e.kind = GuestExitKind.IO; e.port = 0x71; e.size = 4; e.isIn = true; e.immediate = true; e.insnLength = 2; });
    expect(inImm.qualification).toBe(0x0071_0000n | 3n | 8n | 0x40n);
    const repIns = enc((e) => {
      e.kind = GuestExitKind.IO; e.port = 0x1f0; e.size = 2; e.isIn = true; e.isString = true; e.isRep = true;
      e.addrSize = 4; e.segment = 0; e.gla = 0x5000n; e.insnLength = 3;
    });
    expect(repIns.qualification).toBe(0x01f0_0000n | 1n | 8n | 0x10n | 0x20n);
    // Table 28-8: address size 9:7 (1 = 32-bit), segment 17:15 (ES = 0).
    expect(repIns.instructionInfo).toBe(1 << 7);
    expect(repIns.guestLinearAddress).toBe(0x5000n);
    const outsFs = enc((e) => { e.kind = GuestExitKind.IO; e.port = 0x80; e.size = 1; e.isString = true; e.addrSize = 8; e.segment = 4; });
    expect(outsFs.instructionInfo).toBe((2 << 7) | (4 << 15));
  });

  it('control-register access (Table 28-3)', () => {
    const mov = enc((e) => { e.kind = GuestExitKind.CR_ACCESS; e.crNumber = 4; e.crAccessType = CrAccessType.MOV_TO_CR; e.gpr = 3; e.insnLength = 3; });
    expect(mov.reason).toBe(ExitReason.CR_ACCESS);
    expect(mov.qualification).toBe(BigInt(4 | (0 << 4) | (3 << 8)));
    const from = enc((e) => { e.kind = GuestExitKind.CR_ACCESS; e.crNumber = 8; e.crAccessType = CrAccessType.MOV_FROM_CR; e.gpr = 10; });
    expect(from.qualification).toBe(BigInt(8 | (1 << 4) | (10 << 8)));
    const clts = enc((e) => { e.kind = GuestExitKind.CR_ACCESS; e.crNumber = 0; e.crAccessType = CrAccessType.CLTS; e.gpr = 0; });
    expect(clts.qualification).toBe(BigInt(2 << 4));
    const lmsw = enc((e) => { e.kind = GuestExitKind.CR_ACCESS; e.crNumber = 0; e.crAccessType = CrAccessType.LMSW; e.gpr = 0; e.value = 0x1234_000fn; });
    expect(lmsw.qualification).toBe(BigInt((3 << 4) | (0x000f << 16)));
  });

  it('debug-register access (Table 28-4)', () => {
    expect(enc((e) => { e.kind = GuestExitKind.DR_ACCESS; e.drNumber = 7; e.isWrite = true; e.gpr = 1; }).qualification).toBe(BigInt(7 | (1 << 8)));
    expect(enc((e) => { e.kind = GuestExitKind.DR_ACCESS; e.drNumber = 6; e.isWrite = false; e.gpr = 2; }).qualification).toBe(BigInt(6 | (1 << 4) | (2 << 8)));
  });

  it('EPT violation (Table 28-7): access, permissions, GLA valid, final translation', () => {
    const w = enc((e) => {
      e.kind = GuestExitKind.TDP_FAULT; e.gpa = 0x1234_5000n; e.access = ACCESS_WRITE; e.tdpPermissions = ACCESS_READ | ACCESS_FETCH;
      e.glaValid = true; e.gla = 0xffff_8000_0000_0000n; e.finalTranslation = true;
    });
    expect(w.reason).toBe(ExitReason.EPT_VIOLATION);
    expect(w.qualification).toBe(BigInt(2 | 8 | 32 | 0x80 | 0x100));
    expect(w.guestPhysicalAddress).toBe(0x1234_5000n);
    expect(w.guestLinearAddress).toBe(0xffff_8000_0000_0000n);
    const walk = enc((e) => {
      e.kind = GuestExitKind.TDP_FAULT; e.gpa = 0x70000n; e.access = ACCESS_READ | ACCESS_PAGE_WALK; e.tdpPermissions = 0; e.glaValid = true; e.finalTranslation = false;
    });
    expect(walk.qualification).toBe(BigInt(1 | 0x80));
    const fetch = enc((e) => { e.kind = GuestExitKind.TDP_FAULT; e.access = ACCESS_FETCH; e.tdpPermissions = 0; e.glaValid = false; });
    expect(fetch.qualification).toBe(4n);
    const mis = enc((e) => { e.kind = GuestExitKind.TDP_MISCONFIG; e.gpa = 0xfee00000n; });
    expect(mis.reason).toBe(ExitReason.EPT_MISCONFIG);
    expect(mis.guestPhysicalAddress).toBe(0xfee00000n);
    expect(mis.qualification).toBe(0n);
  });

  it('task switch (Table 28-2) and INVLPG / SIPI', () => {
    expect(enc((e) => { e.kind = GuestExitKind.TASK_SWITCH; e.taskSelector = 0x28; e.taskSource = 3; }).qualification).toBe(BigInt((0x28 | (3 << 30)) >>> 0));
    const inv = enc((e) => { e.kind = GuestExitKind.INSTRUCTION; e.insn = InterceptInsn.INVLPG; e.faultAddress = 0xdead000n; e.insnLength = 3; });
    expect(inv.reason).toBe(ExitReason.INVLPG);
    expect(inv.qualification).toBe(0xdead000n);
    expect(enc((e) => { e.kind = GuestExitKind.SIPI; e.vector = 0x9a; }).qualification).toBe(0x9an);
  });
});

describe('exceptions, NMIs and external interrupts (SDM 28.2.2)', () => {
  it('#PF: vector, type 3, error code, qualification = linear address', () => {
    const pf = enc((e) => { e.kind = GuestExitKind.EXCEPTION; e.vector = 14; e.errorCode = 6; e.hasErrorCode = true; e.faultAddress = 0x4000_1234n; });
    expect(pf.reason).toBe(ExitReason.EXCEPTION_NMI);
    expect(pf.intrInfo >>> 0).toBe((0x80000000 | 0x800 | (3 << 8) | 14) >>> 0);
    expect(pf.intrErrorCode).toBe(6);
    expect(pf.qualification).toBe(0x4000_1234n);
  });
  it('#BP from INT3 is a software exception with its instruction length', () => {
    const bp = enc((e) => { e.kind = GuestExitKind.EXCEPTION; e.vector = 3; e.hasErrorCode = false; e.insnLength = 1; });
    expect(bp.intrInfo >>> 0).toBe((0x80000000 | (6 << 8) | 3) >>> 0);
    expect(bp.instructionLength).toBe(1);
  });
  it('#DB: qualification holds the DR6-format bits', () => {
    expect(enc((e) => { e.kind = GuestExitKind.EXCEPTION; e.vector = 1; e.pendingDr6 = 0xffff4ff1n; }).qualification).toBe(0x4001n);
  });
  it('NMI is type 2 vector 2; a budget stop is an external interrupt acknowledged on exit', () => {
    expect(enc((e) => { e.kind = GuestExitKind.NMI; }).intrInfo >>> 0).toBe((0x80000000 | (2 << 8) | 2) >>> 0);
    const ext = enc((e) => { e.kind = GuestExitKind.BUDGET; });
    expect(ext.reason).toBe(ExitReason.EXTERNAL_INTERRUPT);
    expect(ext.intrInfo >>> 0).toBe((0x80000000 | 0xec) >>> 0);
    expect(enc((e) => { e.kind = GuestExitKind.EXTERNAL_INTERRUPT; }, false).intrInfo).toBe(0);
  });
  it('IDT-vectoring information (28.2.4)', () => {
    const e = new GuestExit();
    e.vectoring.valid = true;
    e.vectoring.type = EventType.HARDWARE_EXCEPTION;
    e.vectoring.vector = 13;
    e.vectoring.hasErrorCode = true;
    e.vectoring.errorCode = 0x18;
    expect(idtVectoringInfo(e)).toEqual({ info: (0x80000000 | 0x800 | 0x300 | 13) >>> 0, errorCode: 0x18 });
    e.vectoring.valid = false;
    expect(idtVectoringInfo(e).info).toBe(0);
  });
  it('an exit while delivering INT n reports the INT instruction length for re-injection (28.2.4)', () => {
    const out = enc((e) => {
      e.kind = GuestExitKind.TDP_FAULT; e.access = ACCESS_READ; e.gpa = 0x80n;
      e.vectoring.valid = true; e.vectoring.type = EventType.SOFTWARE_INTERRUPT; e.vectoring.vector = 0x21; e.vectoring.insnLength = 2;
    });
    expect(out.instructionLength).toBe(2);
  });
});

describe('instruction exits', () => {
  it.each([
    [InterceptInsn.CPUID, ExitReason.CPUID], [InterceptInsn.HLT, ExitReason.HLT], [InterceptInsn.VMCALL, ExitReason.VMCALL],
    [InterceptInsn.RDTSC, ExitReason.RDTSC], [InterceptInsn.RDTSCP, ExitReason.RDTSCP], [InterceptInsn.XSETBV, ExitReason.XSETBV],
    [InterceptInsn.WBINVD, ExitReason.WBINVD], [InterceptInsn.MWAIT, ExitReason.MWAIT_INSTRUCTION],
    [InterceptInsn.MONITOR, ExitReason.MONITOR_INSTRUCTION], [InterceptInsn.PAUSE, ExitReason.PAUSE_INSTRUCTION],
    [InterceptInsn.RDRAND, ExitReason.RDRAND], [InterceptInsn.RDSEED, ExitReason.RDSEED], [InterceptInsn.INVD, ExitReason.INVD],
    [InterceptInsn.RDPMC, ExitReason.RDPMC], [InterceptInsn.LGDT, ExitReason.GDTR_IDTR], [InterceptInsn.STR, ExitReason.LDTR_TR],
  ])('%s → basic exit reason %s', (insn, reason) => {
    const out = enc((e) => { e.kind = GuestExitKind.INSTRUCTION; e.insn = insn; e.insnLength = 2; });
    expect(out.reason).toBe(reason);
    expect(out.instructionLength).toBe(2);
  });
  it('VMX instructions are told apart by opcode', () => {
    const r = (b: number[]) => vmxInstructionExitReason(Uint8Array.from(b), b.length);
    expect(r([0x0f, 0x01, 0xc2])).toBe(ExitReason.VMLAUNCH);
    expect(r([0x0f, 0x01, 0xc3])).toBe(ExitReason.VMRESUME);
    expect(r([0x0f, 0x01, 0xc4])).toBe(ExitReason.VMOFF);
    expect(r([0x0f, 0x78, 0xc0])).toBe(ExitReason.VMREAD);
    expect(r([0x0f, 0x79, 0xc0])).toBe(ExitReason.VMWRITE);
    expect(r([0x66, 0x0f, 0xc7, 0x30])).toBe(ExitReason.VMCLEAR);
    expect(r([0xf3, 0x0f, 0xc7, 0x30])).toBe(ExitReason.VMON);
    expect(r([0x0f, 0xc7, 0x30])).toBe(ExitReason.VMPTRLD);
    expect(r([0x0f, 0xc7, 0x38])).toBe(ExitReason.VMPTRST);
    expect(r([0x66, 0x0f, 0x38, 0x80, 0x00])).toBe(ExitReason.INVEPT);
    expect(r([0x66, 0x0f, 0x38, 0x81, 0x00])).toBe(ExitReason.INVVPID);
  });
  it('other exits', () => {
    expect(enc((e) => { e.kind = GuestExitKind.PML_FULL; }).reason).toBe(ExitReason.PML_FULL);
    expect(enc((e) => { e.kind = GuestExitKind.PREEMPTION_TIMER; }).reason).toBe(ExitReason.PREEMPTION_TIMER);
    expect(enc((e) => { e.kind = GuestExitKind.MONITOR_TRAP_FLAG; }).reason).toBe(ExitReason.MONITOR_TRAP_FLAG);
    expect(enc((e) => { e.kind = GuestExitKind.INTERRUPT_WINDOW; }).reason).toBe(ExitReason.INTERRUPT_WINDOW);
    expect(enc((e) => { e.kind = GuestExitKind.NMI_WINDOW; }).reason).toBe(ExitReason.NMI_WINDOW);
    expect(enc((e) => { e.kind = GuestExitKind.TRIPLE_FAULT; }).reason).toBe(ExitReason.TRIPLE_FAULT);
    expect(enc((e) => { e.kind = GuestExitKind.MSR_READ; }).reason).toBe(ExitReason.MSR_READ);
    expect(enc((e) => { e.kind = GuestExitKind.MSR_WRITE; }).reason).toBe(ExitReason.MSR_WRITE);
    const apic = enc((e) => { e.kind = GuestExitKind.APIC_ACCESS; e.gpa = 0xfee000b0n; e.access = ACCESS_WRITE; });
    expect(apic.reason).toBe(ExitReason.APIC_ACCESS);
    expect(apic.qualification).toBe(BigInt(0xb0 | (1 << 12)));
    expect(enc((e) => { e.kind = GuestExitKind.VIRTUALIZED_EOI; e.vector = 0x31; }).qualification).toBe(0x31n);
    expect(enc((e) => { e.kind = GuestExitKind.APIC_WRITE; e.gpa = 0xfee00380n; }).qualification).toBe(0x380n);
  });
});

describe('the direct record of a plain instruction exit (recordPlainInstructionExit)', () => {
  it('writes exactly what encodeExit + recordExit write, for every instruction it takes', () => {
    let taken = 0;
    for (let insn = 0; insn < InterceptInsn.COUNT; insn++) {
      for (const vectoring of [false, true]) {
        const e = new GuestExit();
        e.kind = GuestExitKind.INSTRUCTION;
        e.insn = insn as InterceptInsn;
        e.insnLength = 3;
        e.vectoring.valid = vectoring;
        e.vectoring.vector = 14; e.vectoring.type = EventType.HARDWARE_EXCEPTION; e.vectoring.hasErrorCode = true; e.vectoring.errorCode = 2;
        // Both VMCSs start with the same stale exit information.
        const direct = new Vmcs(1), general = new Vmcs(1);
        direct.lo.fill(0xdead); direct.hi.fill(0xbeef); general.lo.fill(0xdead); general.hi.fill(0xbeef);
        const reason = recordPlainInstructionExit(direct, e);
        if (reason < 0) {
          // Not taken: nothing written.
          expect(Array.from(direct.lo)).toEqual(Array.from(general.lo));
          continue;
        }
        expect(vectoring).toBe(false);
        const rec = encodeExit(e, false, emptyExitRecord());
        recordExit(general, rec, e);
        expect(reason).toBe(rec.reason);
        expect(Array.from(direct.lo)).toEqual(Array.from(general.lo));
        expect(Array.from(direct.hi)).toEqual(Array.from(general.hi));
        taken++;
      }
    }
    // CPUID, RDTSC, HLT, VMCALL, … take it; exits during event delivery never do.
    expect(taken).toBeGreaterThan(10);
  });
});
