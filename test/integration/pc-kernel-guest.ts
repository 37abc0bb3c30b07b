/**
 * One comprehensive Multiboot kernel for the PC platform (issue 6, "Done when"), built with the
 * testkit. Entered by the Multiboot loader in 32-bit protected mode, it:
 *
 *  1. checks the Multiboot magic, loads its own GDT, builds its own page tables (identity map
 *     of the first 4 GiB with 2 MiB pages, so the APIC windows are reachable), sets CR4.PAE,
 *     CR3, EFER.LME, CR0.PG and far-jumps to 64-bit code;
 *  2. finds the ACPI RSDP by scanning 0xE0000–0xFFFFF for "RSD PTR " on 16-byte boundaries,
 *     checks its checksum, looks the MADT ("APIC") and the FADT ("FACP") up through the XSDT
 *     and through the RSDT (and checks that both give the same tables), checks their
 *     checksums, counts the MADT's Processor Local APIC, I/O APIC and interrupt source
 *     override entries and takes the LAPIC and IOAPIC addresses from it;
 *  3. reads the PM timer (port from FADT PM_TMR_BLK, offset 76) and the TSC twice around a
 *     delay loop and says whether each advanced;
 *  4. programs the xAPIC (MMIO at the MADT's address) timer in periodic mode on vector 0x40
 *     and takes three interrupts, EOI-ing each;
 *  5. routes the RTC periodic interrupt (ISA IRQ 8) through IOAPIC pin 8, edge-triggered, to
 *     vector 0x50 and takes three interrupts (the handler reads register C);
 *  6. routes pc-testdev's ISA IRQ line 10 (port 0x200A) through IOAPIC pin 10, level-
 *     triggered, to vector 0x51: the handler leaves the line up after the first interrupt
 *     (so the EOI must deliver it again) and lowers it on the second; the handler checks that
 *     remote IRR is set while it runs and the main line that it is clear after the EOI;
 *  7. with `smp` ≥ 2, starts vCPU 1 with INIT/SIPI/SIPI; the AP enters protected mode from a
 *     real-mode trampoline, enables its xAPIC, installs a 32-bit IDT and waits with STI; HLT.
 *     The BSP sends it a fixed IPI (vector 0x60, physical destination 1); the AP's handler
 *     answers with a fixed IPI to APIC 0 (vector 0x61), which the BSP counts;
 *  8. prints a summary line and writes `exitValue` to isa-debug-exit (port 0xF4).
 */
import {
  Assembler,
  Label,
  MultibootKernel,
  buildMultibootKernel,
  serialPrint,
  serialPrintString,
  emitIdtGate,
  al, ax, bl, dl, dx, eax, ebx, ecx, edx, edi, esi, esp, rax, rbx, rcx, rdx, rsi, rdi, rsp,
  r8, r9, r10, r8d, r9d, r10d,
  cr0, cr3, cr4, ds, es, fs, gs, ss,
  byte, word, dword, qword, mem,
} from '@tsvisor/testkit';

export const PM_TMR_PORT = 0x608;
export const LAPIC_TIMER_VECTOR = 0x40;
export const RTC_VECTOR = 0x50;
export const LEVEL_VECTOR = 0x51;
export const AP_IPI_VECTOR = 0x60;
export const BSP_IPI_VECTOR = 0x61;
/** pc-testdev ISA IRQ line used for the level-triggered test */
export const LEVEL_IRQ = 10;

const PML4 = 0x70000;
const STACK_TOP = 0x80000;
const AP_STACK_TOP = 0x6f000;
const TRAMPOLINE = 0x8000;
const MAILBOX = 0x7f00;

export interface PcKernelOptions {
  smp: number;
  exitValue: number;
}

/** The serial output the kernel prints on the PC platform with `smp` vCPUs. */
export function expectedSerial(o: PcKernelOptions): string {
  const ipi = o.smp >= 2 ? 'IPI: AP 1 took 1, BSP took 1 back\n' : '';
  return [
    'multiboot: protected mode, magic ok\n',
    'long mode: ok\n',
    'ACPI: RSDP at 0xF0000 rev 2 OEM TSVISR checksum ok\n',
    'ACPI: XSDT and RSDT agree on APIC and FACP, checksums ok\n',
    `MADT: ${o.smp} local APICs, 1 IOAPIC at 0xFEC00000, 2 overrides, LAPIC at 0xFEE00000\n`,
    `FADT: PM timer at 0x${PM_TMR_PORT.toString(16).toUpperCase()}\n`,
    'PM timer: advanced\n',
    'TSC: advanced\n',
    'BSP: APIC id 0\n',
    'LAPIC timer: 3 interrupts\n',
    'IOAPIC: RTC periodic IRQ 8: 3 interrupts\n',
    'IOAPIC: level IRQ 10: 2 interrupts, remote IRR set 2, clear after EOI\n',
    ipi,
    `summary: ${o.smp} cpus, timer 3, rtc 3, level 2, ipi ${o.smp >= 2 ? 1 : 0}, exit ${o.exitValue}\n`,
  ].join('');
}

export function pcKernel(o: PcKernelOptions): MultibootKernel {
  return buildMultibootKernel((a, b) => {
    const l64 = b.image.section(64, { align: 16, name: 'long64' });
    const k = new Kernel(a, l64, o);
    k.emit();
  });
}

class Kernel {
  // data (in the 64-bit section, written by the guest)
  private readonly v = {
    lapic: new Label('lapic_base'),
    ioapic: new Label('ioapic_base'),
    timerCount: new Label('timer_count'),
    rtcCount: new Label('rtc_count'),
    lvlCount: new Label('lvl_count'),
    lvlIrrSeen: new Label('lvl_irr_seen'),
    apIpi: new Label('ap_ipi_count'),
    bspIpi: new Label('bsp_ipi_count'),
    apUp: new Label('ap_up'),
    numBuf: new Label('num_buf'),
    numEnd: new Label('num_end'),
    oem: new Label('oem'),
    idt: new Label('idt64'),
    idtr: new Label('idtr64'),
    idt32: new Label('idt32'),
    idtr32: new Label('idtr32'),
    gdt: new Label('gdt'),
    gdtr: new Label('gdtr'),
    xsdtApic: new Label('xsdt_apic'),
    xsdtFacp: new Label('xsdt_facp'),
  };
  private readonly r = {
    printDec: new Label('print_dec'),
    printHex: new Label('print_hex'),
    findTable: new Label('find_table'),
    checksum: new Label('checksum'),
    eoi: new Label('lapic_eoi'),
    ioapicRead: new Label('ioapic_read'),
    ioapicWrite: new Label('ioapic_write'),
    fail: new Label('fail'),
  };

  constructor(private readonly a: Assembler, private readonly l: Assembler, private readonly o: PcKernelOptions) {}

  emit(): void {
    this.prot32();
    this.long64();
    this.routines();
    this.handlers();
    this.ap32();
    this.data();
  }

  // ------------------------------------------------------------------ 32-bit entry → long mode
  private prot32(): void {
    const a = this.a;
    const badMagic = a.label('bad_magic');
    const reload = a.label('reload_cs');
    const long = new Label('long_entry');
    a.cli();
    a.cmp(eax, 0x2badb002);
    a.jne(badMagic);
    a.mov(esp, STACK_TOP);
    a.lgdt(mem(this.v.gdtr));
    a.jmpFar(0x08, reload);
    a.bind(reload);
    a.mov(eax, 0x10);
    for (const s of [ds, es, fs, gs, ss]) a.mov(s, eax);
    serialPrintString(a, 'multiboot: protected mode, magic ok\n');
    // Page tables: PML4, PDPT, 4 PDs (0–4 GiB in 2 MiB pages).
    a.cld();
    a.mov(edi, PML4);
    a.xor(eax, eax);
    a.mov(ecx, 6 * 1024);
    a.repStosd();
    a.mov(dword(PML4), (PML4 + 0x1000) | 3);
    for (let i = 0; i < 4; i++) a.mov(dword(PML4 + 0x1000 + 8 * i), (PML4 + 0x2000 + 0x1000 * i) | 3);
    a.mov(edi, PML4 + 0x2000);
    a.mov(eax, 0x83); // P, RW, PS
    a.mov(ecx, 2048);
    const fill = a.here('fill_pd');
    a.mov(dword(edi), eax);
    a.add(eax, 0x200000);
    a.add(edi, 8);
    a.loop(fill);
    a.mov(eax, cr4);
    a.or(eax, 1 << 5); // PAE
    a.mov(cr4, eax);
    a.mov(eax, PML4);
    a.mov(cr3, eax);
    a.mov(ecx, 0xc0000080);
    a.rdmsr();
    a.or(eax, 1 << 8); // EFER.LME
    a.wrmsr();
    a.mov(eax, cr0);
    a.or(eax, 0x80000000);
    a.mov(cr0, eax);
    a.jmpFar(0x18, long);
    a.bind(badMagic);
    serialPrintString(a, 'multiboot: bad magic\n');
    a.mov(dx, 0xf4);
    a.mov(eax, 1);
    a.out(dx, eax);
    a.hlt();
    this.l.bind(long);
  }

  /** print a literal */
  private say(text: string): void {
    serialPrintString(this.l, text);
  }

  /** print RAX in decimal */
  private dec(): void {
    this.l.call(this.r.printDec);
  }

  /** print RAX in hex (upper case, no leading zeros), after "0x" */
  private hex(): void {
    this.l.push(rax);
    this.say('0x'); // serialPrint clobbers AL
    this.l.pop(rax);
    this.l.call(this.r.printHex);
  }

  /** check: jump to fail (prints `what`, exits 1) unless condition */
  private failUnless(cc: 'e' | 'ne' | 'a' | 'ae' | 'b' | 'be' | 'z' | 'nz', what: string): void {
    const l = this.l;
    const ok = l.label('ok');
    const inv: Record<string, 'e' | 'ne' | 'a' | 'ae' | 'b' | 'be'> = { e: 'e', z: 'e', ne: 'ne', nz: 'ne', a: 'a', ae: 'ae', b: 'b', be: 'be' };
    l.jcc(inv[cc], ok);
    const msg = l.literal(`FAIL: ${what}\n`);
    l.lea(rsi, mem(msg));
    l.jmp(this.r.fail);
    l.bind(ok);
  }

  // ------------------------------------------------------------------ 64-bit main line
  private long64(): void {
    const l = this.l;
    const v = this.v;
    const r = this.r;
    l.mov(eax, 0x20);
    for (const s of [ds, es, fs, gs, ss]) l.mov(s, eax);
    l.mov(rsp, STACK_TOP);
    this.say('long mode: ok\n');

    // IDT: gates for every vector this kernel takes.
    emitIdtGate(l, LAPIC_TIMER_VECTOR, this.hTimer, v.idt);
    emitIdtGate(l, RTC_VECTOR, this.hRtc, v.idt);
    emitIdtGate(l, LEVEL_VECTOR, this.hLevel, v.idt);
    emitIdtGate(l, BSP_IPI_VECTOR, this.hBspIpi, v.idt);
    l.lidt(mem(v.idtr));

    // ---- ACPI: scan for the RSDP
    l.mov(esi, 0xe0000);
    l.mov(rax, 0x2052545020445352n); // "RSD PTR "
    const scan = l.here('rsdp_scan');
    const found = l.label('rsdp_found');
    l.cmp(qword(rsi), rax);
    l.je(found);
    l.add(esi, 16);
    l.cmp(esi, 0x100000);
    l.jb(scan);
    this.failUnless('ne', 'no RSDP in 0xE0000-0xFFFFF'); // ZF=0 here: falls to fail
    l.bind(found);
    l.mov(r10, rsi); // r10 = RSDP
    l.mov(ecx, 20);
    l.call(r.checksum);
    l.test(al, al);
    this.failUnless('z', 'RSDP checksum');
    // OEM id: 6 bytes at offset 9
    l.mov(eax, dword(r10, 9));
    l.mov(dword(v.oem), eax);
    l.mov(ax, word(r10, 13));
    l.mov(word(v.oem.plus(4)), ax);
    this.say('ACPI: RSDP at ');
    l.mov(rax, r10);
    this.hex();
    this.say(' rev ');
    l.movzx(eax, byte(r10, 15));
    this.dec();
    this.say(' OEM ');
    l.lea(rsi, mem(v.oem));
    serialPrint(l, rsi);
    this.say(' checksum ok\n');
    l.cmp(byte(r10, 15), 2);
    this.failUnless('ae', 'RSDP revision < 2');

    // XSDT (8-byte entries) then RSDT (4-byte entries)
    const lookUp = (sdt: () => void, entry: number, sig: string, store?: Label, compare?: Label) => {
      sdt(); // rdi = SDT
      l.mov(r9d, entry);
      l.mov(eax, Buffer.from(sig).readUInt32LE(0));
      l.call(r.findTable); // rbx = table or 0
      l.test(rbx, rbx);
      this.failUnless('nz', `${sig} not found (${entry === 8 ? 'XSDT' : 'RSDT'})`);
      if (store) l.mov(qword(store), rbx);
      if (compare) {
        l.cmp(rbx, qword(compare));
        this.failUnless('e', `XSDT and RSDT disagree on ${sig}`);
      }
      l.mov(rsi, rbx);
      l.mov(ecx, dword(rbx, 4));
      l.call(r.checksum);
      l.test(al, al);
      this.failUnless('z', `${sig} checksum`);
    };
    const xsdt = () => {
      l.mov(rdi, qword(r10, 24));
      l.mov(rsi, rdi);
      l.mov(ecx, dword(rdi, 4));
      l.call(r.checksum);
      l.test(al, al);
      this.failUnless('z', 'XSDT checksum');
      l.cmp(dword(rdi), Buffer.from('XSDT').readUInt32LE(0));
      this.failUnless('e', 'XSDT signature');
    };
    const rsdt = () => {
      l.mov(edi, dword(r10, 16));
      l.mov(rsi, rdi);
      l.mov(ecx, dword(rdi, 4));
      l.call(r.checksum);
      l.test(al, al);
      this.failUnless('z', 'RSDT checksum');
      l.cmp(dword(rdi), Buffer.from('RSDT').readUInt32LE(0));
      this.failUnless('e', 'RSDT signature');
    };
    lookUp(xsdt, 8, 'APIC', v.xsdtApic);
    lookUp(xsdt, 8, 'FACP', v.xsdtFacp);
    lookUp(rsdt, 4, 'APIC', undefined, v.xsdtApic);
    lookUp(rsdt, 4, 'FACP', undefined, v.xsdtFacp);
    this.say('ACPI: XSDT and RSDT agree on APIC and FACP, checksums ok\n');

    // ---- MADT: count entries
    l.mov(rbx, qword(v.xsdtApic));
    l.mov(eax, dword(rbx, 36));
    l.mov(qword(v.lapic), rax);
    l.mov(ecx, dword(rbx, 4));
    l.add(rcx, rbx); // end
    l.lea(rsi, mem(rbx, 44));
    l.xor(r8d, r8d); // local APICs (enabled)
    l.xor(r9d, r9d); // IOAPICs
    l.xor(edx, edx); // overrides
    const walk = l.here('madt_walk');
    const done = l.label('madt_done');
    const next = l.label('madt_next');
    const notLapic = l.label('madt_not_lapic');
    const notIoapic = l.label('madt_not_ioapic');
    l.cmp(rsi, rcx);
    l.jae(done);
    l.mov(al, byte(rsi));
    l.cmp(al, 0);
    l.jne(notLapic);
    l.test(byte(rsi, 4), 1); // flags: enabled
    l.jz(next);
    l.inc(r8d);
    l.jmp(next);
    l.bind(notLapic);
    l.cmp(al, 1);
    l.jne(notIoapic);
    l.inc(r9d);
    l.mov(edi, dword(rsi, 4));
    l.mov(qword(v.ioapic), rdi);
    l.jmp(next);
    l.bind(notIoapic);
    l.cmp(al, 2);
    l.jne(next);
    l.inc(edx);
    l.bind(next);
    l.movzx(eax, byte(rsi, 1));
    l.test(eax, eax);
    this.failUnless('nz', 'MADT entry of length 0');
    l.add(rsi, rax);
    l.jmp(walk);
    l.bind(done);
    l.push(rdx);
    l.push(r9);
    this.say('MADT: ');
    l.mov(rax, r8);
    this.dec();
    this.say(' local APICs, ');
    l.pop(rax);
    this.dec();
    this.say(' IOAPIC at ');
    l.mov(rax, qword(v.ioapic));
    this.hex();
    this.say(', ');
    l.pop(rax);
    this.dec();
    this.say(' overrides, LAPIC at ');
    l.mov(rax, qword(v.lapic));
    this.hex();
    this.say('\n');

    // ---- FADT: PM timer
    l.mov(rbx, qword(v.xsdtFacp));
    l.mov(r10d, dword(rbx, 76));
    this.say('FADT: PM timer at ');
    l.mov(rax, r10);
    this.hex();
    this.say('\n');
    l.mov(edx, dword(rbx, 76));
    l.in(eax, dx);
    l.mov(r8d, eax);
    this.delay(20000);
    l.mov(edx, dword(rbx, 76));
    l.in(eax, dx);
    l.sub(eax, r8d);
    l.and(eax, 0xffffff);
    this.yesNo('PM timer: ', 'advanced', 'stuck');

    // ---- TSC
    l.rdtsc();
    l.shl(rdx, 32);
    l.or(rax, rdx);
    l.mov(r8, rax);
    this.delay(20000);
    l.rdtsc();
    l.shl(rdx, 32);
    l.or(rax, rdx);
    l.cmp(rax, r8);
    l.setcc('a', al);
    l.movzx(eax, al);
    this.yesNo('TSC: ', 'advanced', 'stuck');

    // ---- LAPIC (xAPIC MMIO)
    l.mov(rdi, qword(v.lapic));
    l.mov(dword(rdi, 0xf0), 0x1ff); // SVR: enable, spurious vector 0xFF
    this.say('BSP: APIC id ');
    l.mov(eax, dword(rdi, 0x20));
    l.shr(eax, 24);
    this.dec();
    this.say('\n');
    l.mov(dword(rdi, 0x3e0), 0xb); // divide by 1
    l.mov(dword(rdi, 0x320), LAPIC_TIMER_VECTOR | (1 << 17)); // periodic
    l.mov(dword(rdi, 0x380), 50000); // initial count
    this.waitFor(v.timerCount, 3);
    l.mov(rdi, qword(v.lapic));
    l.mov(dword(rdi, 0x320), 1 << 16); // mask
    l.mov(dword(rdi, 0x380), 0);
    this.say('LAPIC timer: ');
    l.mov(eax, dword(v.timerCount));
    this.dec();
    this.say(' interrupts\n');

    // ---- RTC periodic interrupt, IOAPIC pin 8, edge
    l.mov(ecx, 0x10 + 2 * 8 + 1);
    l.xor(eax, eax); // destination APIC 0
    l.call(r.ioapicWrite);
    l.mov(ecx, 0x10 + 2 * 8);
    l.mov(eax, RTC_VECTOR); // fixed, physical, edge, active high, unmasked
    l.call(r.ioapicWrite);
    this.cmosWrite(0x0a, 0x23); // rate 3: 8192 Hz
    this.cmosRead(0x0c); // clear flags
    this.cmosRead(0x0b);
    l.or(al, 0x40); // PIE
    l.mov(bl, al);
    this.cmosWriteBl(0x0b);
    this.waitFor(v.rtcCount, 3);
    this.cmosRead(0x0b);
    l.and(al, ~0x40 & 0xff);
    l.mov(bl, al);
    this.cmosWriteBl(0x0b);
    this.cmosRead(0x0c);
    l.mov(ecx, 0x10 + 2 * 8);
    l.mov(eax, 1 << 16); // mask
    l.call(r.ioapicWrite);
    this.say('IOAPIC: RTC periodic IRQ 8: ');
    l.mov(eax, dword(v.rtcCount));
    this.dec();
    this.say(' interrupts\n');

    // ---- pc-testdev IRQ line 10, IOAPIC pin 10, level-triggered
    l.mov(ecx, 0x10 + 2 * LEVEL_IRQ + 1);
    l.xor(eax, eax);
    l.call(r.ioapicWrite);
    l.mov(ecx, 0x10 + 2 * LEVEL_IRQ);
    l.mov(eax, LEVEL_VECTOR | (1 << 15)); // level, active high
    l.call(r.ioapicWrite);
    l.sti();
    l.mov(dx, 0x2000 + LEVEL_IRQ);
    l.mov(al, 1);
    l.out(dx, al); // the interrupt is taken right after this instruction
    l.nop();
    l.cli();
    l.cmp(dword(v.lvlCount), 2);
    this.failUnless('e', 'level interrupt not delivered twice');
    // remote IRR must be clear after the second EOI (line low now)
    l.mov(ecx, 0x10 + 2 * LEVEL_IRQ);
    l.call(r.ioapicRead);
    l.test(eax, 1 << 14);
    this.failUnless('z', 'remote IRR still set after EOI');
    l.mov(ecx, 0x10 + 2 * LEVEL_IRQ);
    l.mov(eax, 1 << 16);
    l.call(r.ioapicWrite);
    this.say('IOAPIC: level IRQ 10: ');
    l.mov(eax, dword(v.lvlCount));
    this.dec();
    this.say(' interrupts, remote IRR set ');
    l.mov(eax, dword(v.lvlIrrSeen));
    this.dec();
    this.say(', clear after EOI\n');

    // ---- SMP: INIT/SIPI vCPU 1, IPI ping-pong
    if (this.o.smp >= 2) this.smp();

    // ---- summary and exit
    this.say(`summary: ${this.o.smp} cpus, timer `);
    l.mov(eax, dword(v.timerCount));
    this.dec();
    this.say(', rtc ');
    l.mov(eax, dword(v.rtcCount));
    this.dec();
    this.say(', level ');
    l.mov(eax, dword(v.lvlCount));
    this.dec();
    this.say(', ipi ');
    l.mov(eax, dword(v.bspIpi));
    this.dec();
    this.say(`, exit ${this.o.exitValue}\n`);
    l.mov(dx, 0xf4);
    l.mov(eax, this.o.exitValue);
    l.out(dx, eax);
    l.cli();
    l.hlt();
  }

  private smp(): void {
    const l = this.l;
    const v = this.v;
    // copy the trampoline below 1 MiB
    const tramp = this.trampoline();
    const code = new Label('trampoline_code');
    l.lea(rsi, mem(code));
    l.mov(edi, TRAMPOLINE);
    l.mov(ecx, tramp.length);
    l.cld();
    l.repMovsb();
    l.mov(word(MAILBOX), 5 * 8 - 1);
    l.lea(rax, mem(v.gdt));
    l.mov(dword(MAILBOX + 2), eax);
    l.mov(eax, this.apProt);
    l.mov(dword(MAILBOX + 8), eax);
    l.mov(word(MAILBOX + 12), 0x08);
    l.mov(rdi, qword(v.lapic));
    l.mov(dword(rdi, 0x310), 1 << 24); // destination APIC 1
    l.mov(dword(rdi, 0x300), 0x4500); // INIT, assert
    l.mov(dword(rdi, 0x310), 1 << 24);
    l.mov(dword(rdi, 0x300), 0x4600 | (TRAMPOLINE >> 12)); // SIPI
    l.mov(dword(rdi, 0x310), 1 << 24);
    l.mov(dword(rdi, 0x300), 0x4600 | (TRAMPOLINE >> 12)); // SIPI
    const wait = l.here('wait_ap');
    l.pause();
    l.cmp(dword(v.apUp), 1);
    l.jne(wait);
    // fixed IPI to APIC 1; its handler answers with BSP_IPI_VECTOR
    l.mov(rdi, qword(v.lapic));
    l.mov(dword(rdi, 0x310), 1 << 24);
    l.mov(dword(rdi, 0x300), 0x4000 | AP_IPI_VECTOR);
    this.waitFor(v.bspIpi, 1);
    this.say('IPI: AP 1 took ');
    l.mov(eax, dword(v.apIpi));
    this.dec();
    this.say(', BSP took ');
    l.mov(eax, dword(v.bspIpi));
    this.dec();
    this.say(' back\n');
    // Place the trampoline bytes here (jumped over).
    const after = l.label('after_trampoline');
    l.jmp(after);
    l.align(16, 0);
    l.bind(code);
    l.db(tramp);
    l.bind(after);
  }

  /** STI; HLT until dword [counter] ≥ n; CLI. */
  private waitFor(counter: Label, n: number): void {
    const l = this.l;
    const loop = l.here('wait');
    const done = l.label('wait_done');
    l.cli();
    l.cmp(dword(counter), n);
    l.jae(done);
    l.sti();
    l.hlt();
    l.jmp(loop);
    l.bind(done);
  }

  private delay(n: number): void {
    const l = this.l;
    l.mov(ecx, n);
    const d = l.here('delay');
    l.loop(d);
  }

  /** print `prefix`, then `yes` if EAX ≠ 0 else `no`, then a newline */
  private yesNo(prefix: string, yes: string, no: string): void {
    const l = this.l;
    l.push(rax);
    this.say(prefix); // serialPrint clobbers AL
    l.pop(rax);
    const z = l.label('no');
    const end = l.label('yn_end');
    l.test(eax, eax);
    l.jz(z);
    this.say(`${yes}\n`);
    l.jmp(end);
    l.bind(z);
    this.say(`${no}\n`);
    l.bind(end);
  }

  private cmosRead(reg: number): void {
    this.l.mov(al, reg).out(0x70, al).in(al, 0x71);
  }

  private cmosWrite(reg: number, val: number): void {
    this.l.mov(al, reg).out(0x70, al).mov(al, val).out(0x71, al);
  }

  private cmosWriteBl(reg: number): void {
    this.l.mov(al, reg).out(0x70, al).mov(al, bl).out(0x71, al);
  }

  // ------------------------------------------------------------------ subroutines (64-bit)
  private routines(): void {
    const l = this.l;
    const r = this.r;
    const v = this.v;

    // print_dec: RAX → decimal
    l.bind(r.printDec);
    l.push(rbx).push(rcx).push(rdx).push(rsi);
    l.lea(rcx, mem(v.numEnd));
    l.mov(ebx, 10);
    const dloop = l.here('dec_loop');
    l.xor(edx, edx);
    l.div(rbx);
    l.add(dl, 0x30);
    l.dec(rcx);
    l.mov(byte(rcx), dl);
    l.test(rax, rax);
    l.jnz(dloop);
    l.mov(rsi, rcx);
    serialPrint(l, rsi);
    l.pop(rsi).pop(rdx).pop(rcx).pop(rbx);
    l.ret();

    // print_hex: RAX → hex digits
    l.bind(r.printHex);
    l.push(rbx).push(rcx).push(rdx).push(rsi);
    l.lea(rcx, mem(v.numEnd));
    const hloop = l.here('hex_loop');
    const digit = l.label('hex_digit');
    l.mov(edx, eax);
    l.and(edx, 0xf);
    l.add(dl, 0x30);
    l.cmp(dl, 0x39);
    l.jbe(digit);
    l.add(dl, 7);
    l.bind(digit);
    l.dec(rcx);
    l.mov(byte(rcx), dl);
    l.shr(rax, 4);
    l.jnz(hloop);
    l.mov(rsi, rcx);
    serialPrint(l, rsi);
    l.pop(rsi).pop(rdx).pop(rcx).pop(rbx);
    l.ret();

    // checksum: sum of ECX bytes at RSI → AL. Clobbers RSI, RCX, EDX.
    l.bind(r.checksum);
    l.xor(eax, eax);
    const cl0 = l.here('csum_loop');
    l.add(al, byte(rsi));
    l.inc(rsi);
    l.dec(ecx);
    l.jnz(cl0);
    l.ret();

    // find_table: SDT at RDI, entry size R9D (4 or 8), signature EAX → RBX (0 if absent).
    l.bind(r.findTable);
    l.push(rcx).push(rdx).push(rsi);
    l.mov(ecx, dword(rdi, 4));
    l.add(rcx, rdi); // end
    l.lea(rsi, mem(rdi, 36));
    const floop = l.here('find_loop');
    const fnone = l.label('find_none');
    const fdone = l.label('find_done');
    const f4 = l.label('find_4');
    const fcmp = l.label('find_cmp');
    l.cmp(rsi, rcx);
    l.jae(fnone);
    l.cmp(r9d, 4);
    l.je(f4);
    l.mov(rbx, qword(rsi));
    l.jmp(fcmp);
    l.bind(f4);
    l.mov(ebx, dword(rsi));
    l.bind(fcmp);
    l.add(rsi, r9);
    l.cmp(dword(rbx), eax);
    l.jne(floop);
    l.jmp(fdone);
    l.bind(fnone);
    l.xor(ebx, ebx);
    l.bind(fdone);
    l.pop(rsi).pop(rdx).pop(rcx);
    l.ret();

    // ioapic_read: index ECX → EAX; ioapic_write: index ECX, value EAX
    l.bind(r.ioapicRead);
    l.push(rdi);
    l.mov(rdi, qword(v.ioapic));
    l.mov(dword(rdi), ecx);
    l.mov(eax, dword(rdi, 0x10));
    l.pop(rdi);
    l.ret();
    l.bind(r.ioapicWrite);
    l.push(rdi);
    l.mov(rdi, qword(v.ioapic));
    l.mov(dword(rdi), ecx);
    l.mov(dword(rdi, 0x10), eax);
    l.pop(rdi);
    l.ret();

    // lapic_eoi (xAPIC)
    l.bind(r.eoi);
    l.push(rax);
    l.mov(rax, qword(v.lapic));
    l.mov(dword(rax, 0xb0), 0);
    l.pop(rax);
    l.ret();

    // fail: message at RSI, exit 1
    l.bind(r.fail);
    serialPrint(l, rsi);
    l.mov(dx, 0xf4);
    l.mov(eax, 1);
    l.out(dx, eax);
    l.cli();
    l.hlt();
  }

  // ------------------------------------------------------------------ interrupt handlers (64-bit)
  private readonly hTimer = new Label('h_timer');
  private readonly hRtc = new Label('h_rtc');
  private readonly hLevel = new Label('h_level');
  private readonly hBspIpi = new Label('h_bsp_ipi');

  private handlers(): void {
    const l = this.l;
    const v = this.v;
    l.bind(this.hTimer);
    l.inc(dword(v.timerCount));
    l.call(this.r.eoi);
    l.iretq();

    l.bind(this.hRtc);
    l.push(rax);
    l.mov(al, 0x0c);
    l.out(0x70, al);
    l.in(al, 0x71); // read register C: clears PF and lowers IRQ 8
    l.pop(rax);
    l.inc(dword(v.rtcCount));
    l.call(this.r.eoi);
    l.iretq();

    l.bind(this.hLevel);
    l.push(rax).push(rcx).push(rdx);
    l.inc(dword(v.lvlCount));
    l.mov(ecx, 0x10 + 2 * LEVEL_IRQ);
    l.call(this.r.ioapicRead);
    const noIrr = l.label('no_irr');
    l.test(eax, 1 << 14);
    l.jz(noIrr);
    l.inc(dword(v.lvlIrrSeen));
    l.bind(noIrr);
    const keep = l.label('keep_line');
    l.cmp(dword(v.lvlCount), 2);
    l.jb(keep); // first time: leave the line up, the EOI must deliver it again
    l.mov(dx, 0x2000 + LEVEL_IRQ);
    l.xor(eax, eax);
    l.out(dx, al);
    l.bind(keep);
    l.call(this.r.eoi);
    l.pop(rdx).pop(rcx).pop(rax);
    l.iretq();

    l.bind(this.hBspIpi);
    l.inc(dword(v.bspIpi));
    l.call(this.r.eoi);
    l.iretq();
  }

  // ------------------------------------------------------------------ the AP (real mode → 32-bit)
  private readonly apProt = new Label('ap_prot');
  private readonly apHandler = new Label('ap_ipi_handler');

  /**
   * 16-bit trampoline at TRAMPOLINE (SIPI vector 0x08: CS = 0x0800, IP = 0). The BSP leaves a
   * GDTR at MAILBOX and a far pointer (m16:32) to ap32 at MAILBOX + 8, since both lie above 1 MiB.
   */
  private trampoline(): Uint8Array {
    const t = new Assembler(16, TRAMPOLINE);
    t.cli();
    t.xor(ax, ax);
    t.mov(ds, ax);
    t.lgdt(mem(MAILBOX));
    t.mov(eax, cr0);
    t.or(eax, 1);
    t.mov(cr0, eax);
    t.jmpFarIndirect(mem(MAILBOX + 8), 32);
    return t.assemble();
  }

  /** 32-bit AP code, in the kernel's 32-bit section: an IDT gate, the xAPIC, then STI; HLT forever. */
  private ap32(): void {
    const a = this.a;
    const v = this.v;
    a.bind(this.apProt);
    a.mov(eax, 0x10);
    for (const s of [ds, es, fs, gs, ss]) a.mov(s, eax);
    a.mov(esp, AP_STACK_TOP);
    // 32-bit interrupt gate (SDM 6.11): selector 0x08, type 0xE, present
    a.mov(eax, this.apHandler);
    a.and(eax, 0xffff);
    a.or(eax, 0x08 << 16);
    a.mov(dword(v.idt32.plus(AP_IPI_VECTOR * 8)), eax);
    a.mov(eax, this.apHandler);
    a.and(eax, 0xffff0000);
    a.or(eax, 0x8e00);
    a.mov(dword(v.idt32.plus(AP_IPI_VECTOR * 8 + 4)), eax);
    a.lidt(mem(v.idtr32));
    a.mov(eax, dword(v.lapic));
    a.mov(dword(eax, 0xf0), 0x1ff); // SVR: enable
    a.mov(dword(v.apUp), 1);
    const idle = a.here('ap_idle');
    a.sti();
    a.hlt();
    a.jmp(idle);

    a.bind(this.apHandler);
    a.push(eax);
    a.inc(dword(v.apIpi));
    a.mov(eax, dword(v.lapic));
    a.mov(dword(eax, 0x310), 0); // destination APIC 0
    a.mov(dword(eax, 0x300), 0x4000 | BSP_IPI_VECTOR); // fixed, physical, assert
    a.mov(dword(eax, 0xb0), 0); // EOI
    a.pop(eax);
    a.iretd();
  }

  private data(): void {
    const l = this.l;
    const v = this.v;
    l.align(8, 0);
    for (const x of [v.lapic, v.ioapic, v.xsdtApic, v.xsdtFacp]) {
      l.bind(x);
      l.dq(0);
    }
    for (const x of [v.timerCount, v.rtcCount, v.lvlCount, v.lvlIrrSeen, v.apIpi, v.bspIpi, v.apUp]) {
      l.bind(x);
      l.dd(0);
    }
    l.bind(v.oem);
    l.space(8);
    l.bind(v.numBuf);
    l.space(32);
    l.bind(v.numEnd);
    l.db(0);
    l.align(8, 0);
    l.bind(v.gdt);
    l.dq(0n, 0x00cf9a000000ffffn, 0x00cf92000000ffffn, 0x00af9a000000ffffn, 0x00cf92000000ffffn);
    l.bind(v.gdtr);
    l.dw(5 * 8 - 1);
    l.dq(v.gdt);
    l.align(16, 0);
    l.bind(v.idt);
    l.space(256 * 16);
    l.bind(v.idtr);
    l.dw(256 * 16 - 1);
    l.dq(v.idt);
    l.align(8, 0);
    l.bind(v.idt32);
    l.space(256 * 8);
    l.bind(v.idtr32);
    l.dw(256 * 8 - 1);
    l.dd(v.idt32);
  }
}
