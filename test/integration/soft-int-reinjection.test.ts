/**
 * An exit while the processor delivers INT n, INT3 or INTO (Intel SDM Vol. 3C 28.2.4 IDT-vectoring
 * information with the VM-exit instruction length; AMD APM Vol. 2 15.7.2 EXITINTINFO): the
 * guest RIP saved at the exit is the instruction's, and the hypervisor re-injects the event —
 * VMX with VM_ENTRY_INSTRUCTION_LEN (KVM's event_exit_inst_len), SVM with EVENTINJ type 4 for
 * INT n / type 3 for #BP and #OF and NRIP as the return address (svm_inject_irq,
 * svm_update_soft_interrupt_rip, svm_complete_soft_interrupt) — so RIP advances exactly once.
 *
 * The guest's gates live on IDT pages it never touched, so each event's gate read is the page's
 * first access: an EPT violation / NPF during delivery, handled in the kernel (the TDP MMU maps
 * the page), then re-injection. A second variant reads the IDTs first and gives each event a
 * stack page never touched before, so the delivery's push makes the exit. Each handler counts
 * its runs and records the return EIP it was given: one run per event, returning right after
 * the instruction, and the code after it runs once.
 */
import { BackendClass, KvmExitReason } from '@tsvisor/core';
import { Assembler, al, buildProtectedModeGuest, bootGuest, dword, eax, esp, mem, runUntilStop } from '@tsvisor/testkit';
import { SvmBackend } from '@tsvisor/svm';
import { VmxBackend } from '@tsvisor/vmx';

const CODE_SEL = 0x08;
/** One IDT per event, each on its own page the guest never touches before the event. */
const IDT = [0x40000, 0x41000, 0x42000];
/** Per event k: handler runs at CNT + 4k, return EIP at RET + 4k, code after the event ran at AFTER + 4k. */
const CNT = 0x30000, RET = 0x30010, AFTER = 0x30020;
/** The stack-variant's stack page for event k: STACK + 0x1000 * k, untouched until the event's push. */
const STACK = 0x60000;
const EVENTS = [['INT 0x40', 0x40], ['INT3', 3], ['INTO', 4]] as const;

function intGate(target: number): bigint {
  return (BigInt(((target & 0xffff0000) | 0xee00) >>> 0) << 32n) | BigInt(((CODE_SEL << 16) | (target & 0xffff)) >>> 0);
}

function guestCode(a: Assembler, stackVariant: boolean): void {
  const idtr = IDT.map((_, k) => a.label(`idtr${k}`));
  // Stack variant: the IDT pages are mapped first; each event's push is its stack page's first access.
  if (stackVariant) for (const base of IDT) a.mov(eax, dword(base));
  a.mov(dword(CNT + 0x100), 0); // the results page is mapped before the events
  a.out(0xe9, al); // the events start: userspace notes the TDP exits so far
  for (let k = 0; k < 3; k++) {
    a.lidt(mem(idtr[k]));
    if (stackVariant) a.mov(esp, STACK + 0x1000 * k + 0x800);
    if (k === 2) a.mov(al, 0x7f).add(al, 1); // OF = 1 for INTO
    if (k === 0) a.int(0x40);
    else if (k === 1) a.int3();
    else a.db(0xce); // INTO
    a.here(`after${k}`);
    a.inc(dword(AFTER + 4 * k));
  }
  a.hlt();
  for (let k = 0; k < 3; k++) {
    a.here(`handler${k}`);
    a.inc(dword(CNT + 4 * k));
    a.mov(eax, dword({ base: esp, disp: 0 })).mov(dword(RET + 4 * k), eax);
    a.iretd();
  }
  a.align(8, 0);
  for (let k = 0; k < 3; k++) {
    a.bind(idtr[k]);
    a.dw(0x7ff);
    a.dd(IDT[k]);
  }
}

const backends: [string, BackendClass, string][] = [['vmx', VmxBackend, 'EPT_VIOLATION'], ['svm', SvmBackend, 'npf']];

describe.each(backends)('re-injection of a software event interrupted by a TDP exit (%s)', (_name, backend, tdpExit) => {
  function run(stackVariant: boolean) {
    const guest = buildProtectedModeGuest((a) => guestCode(a, stackVariant));
    const { kvm, vcpu } = bootGuest(backend, guest);
    const ram = kvm.slot(0)!.userspace;
    const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    for (const [k, [, vec]] of EVENTS.entries()) dv.setBigUint64(IDT[k] + vec * 8, intGate(guest.symbols[`handler${k}`]), true);
    let tdpAtEvents = 0;
    const out = runUntilStop(vcpu, {
      ports: {
        0xe9: {
          out: () => { tdpAtEvents = -(vcpu.exitCounts.get(tdpExit) ?? 0); },
        },
      },
    });
    expect(KvmExitReason[out.exitReason]).toBe('KVM_EXIT_HLT');
    tdpAtEvents += vcpu.exitCounts.get(tdpExit) ?? 0;
    return { guest, dv, tdpAtEvents };
  }

  for (const stackVariant of [false, true]) {
    it(`${stackVariant ? 'handler stack pages not yet mapped' : 'IDT pages not yet mapped'}: INT n, INT3 and INTO run their handler once and return after the instruction`, () => {
      const { guest, dv, tdpAtEvents } = run(stackVariant);
      for (let k = 0; k < 3; k++) {
        const what = EVENTS[k][0];
        expect([what, dv.getUint32(CNT + 4 * k, true)]).toEqual([what, 1]);
        expect([what, dv.getUint32(RET + 4 * k, true)]).toEqual([what, guest.symbols[`after${k}`]]);
        expect([what, dv.getUint32(AFTER + 4 * k, true)]).toEqual([what, 1]);
      }
      // A TDP exit during each event's delivery (the results page was mapped before).
      expect(tdpAtEvents).toBeGreaterThanOrEqual(3);
    });
  }
});
