/**
 * ACPI tables built in TypeScript (ACPI 6.x, chapter 5): RSDP (revision 2, with RSDT and
 * XSDT), FADT (revision 3, 244 bytes, pointing at the q35 PM block: PM1a event 0x600,
 * control 0x604, PM timer 0x608, GPE0 0x620, reset register 0xCF9 ← 0x06), an empty DSDT
 * (no AML: there is no ACPI namespace to describe), FACS, MADT (one Processor Local APIC
 * per vCPU, the IOAPIC at 0xFEC00000 with GSI base 0, overrides IRQ 0 → GSI 2 and IRQ 9
 * level/active-high, LAPIC NMI on LINT1) and HPET.
 *
 * `buildAcpiTables` lays them out at `tablesAt` (tables) and `rsdpAt` (the RSDP, which a
 * guest finds by scanning 0xE0000–0xFFFFF on 16-byte boundaries) and returns the bytes to
 * copy into guest memory.
 */
import { GPE0_BLK, GPE0_BLK_LEN, PM1A_CNT_BLK, PM1A_EVT_BLK, PM_TMR_BLK, SCI_IRQ } from './devices/acpi-pm';
import { HPET_BASE } from './devices/hpet';

export const IOAPIC_BASE = 0xfec00000;
export const LAPIC_BASE = 0xfee00000;
export const ACPI_OEM_ID = 'TSVISR';
export const ACPI_OEM_TABLE_ID = 'TSVISOR ';

export interface AcpiConfig {
  /** APIC ids of the vCPUs, in order. */
  apicIds: readonly number[];
  ioapicId?: number;
  /** The event timer block id the HPET table repeats (its GCAP_ID low 32 bits). */
  hpetBlockId: number;
  /** Include the HPET table (default true). */
  hpet?: boolean;
}

export interface AcpiBlob {
  /** Guest-physical address and bytes of each piece to copy. */
  pieces: { addr: number; bytes: Uint8Array; name: string }[];
  rsdp: number;
  tables: Record<string, number>;
}

export function checksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let s = 0;
  for (let i = start; i < end; i++) s = (s + bytes[i]) & 0xff;
  return s;
}

function ascii(b: Uint8Array, at: number, s: string): void {
  for (let i = 0; i < s.length; i++) b[at + i] = s.charCodeAt(i);
}

/** A table with the 36-byte System Description Table header; the checksum is set by `seal`. */
class Table {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  constructor(sig: string, length: number, revision: number) {
    this.bytes = new Uint8Array(length);
    this.dv = new DataView(this.bytes.buffer);
    ascii(this.bytes, 0, sig);
    this.dv.setUint32(4, length, true);
    this.bytes[8] = revision;
    ascii(this.bytes, 10, ACPI_OEM_ID);
    ascii(this.bytes, 16, ACPI_OEM_TABLE_ID);
    this.dv.setUint32(24, 1, true); // OEM revision
    ascii(this.bytes, 28, 'TSVR'); // creator id
    this.dv.setUint32(32, 1, true); // creator revision
  }
  seal(): Uint8Array {
    this.bytes[9] = 0;
    this.bytes[9] = (256 - checksum(this.bytes)) & 0xff;
    return this.bytes;
  }
}

/** Generic Address Structure (12 bytes). space 0 = memory, 1 = I/O. */
function gas(dv: DataView, at: number, space: number, bitWidth: number, accessSize: number, addr: number): void {
  dv.setUint8(at, space);
  dv.setUint8(at + 1, bitWidth);
  dv.setUint8(at + 2, 0);
  dv.setUint8(at + 3, accessSize);
  dv.setBigUint64(at + 4, BigInt(addr), true);
}

export function buildAcpiTables(cfg: AcpiConfig, tablesAt: number, rsdpAt: number): AcpiBlob {
  const pieces: AcpiBlob['pieces'] = [];
  const tables: Record<string, number> = {};
  let cursor = tablesAt;
  const place = (name: string, bytes: Uint8Array, align = 16) => {
    cursor = Math.ceil(cursor / align) * align;
    const addr = cursor;
    pieces.push({ addr, bytes, name });
    tables[name] = addr;
    cursor += bytes.length;
    return addr;
  };

  // FACS: 64 bytes, 64-byte aligned, no checksum.
  const facs = new Uint8Array(64);
  ascii(facs, 0, 'FACS');
  new DataView(facs.buffer).setUint32(4, 64, true);
  facs[32] = 1; // version
  const facsAddr = place('FACS', facs, 64);

  const dsdt = new Table('DSDT', 36, 2).seal();
  const dsdtAddr = place('DSDT', dsdt);

  // FADT revision 3 (ACPI 2.0 layout; what QEMU's q35 emits), 244 bytes.
  const fadt = new Table('FACP', 244, 3);
  const f = fadt.dv;
  f.setUint32(36, facsAddr, true);
  f.setUint32(40, dsdtAddr, true);
  f.setUint8(45, 0); // preferred PM profile: unspecified
  f.setUint16(46, SCI_IRQ, true);
  f.setUint32(48, 0, true); // SMI_CMD: no SMM, already in ACPI mode
  f.setUint32(56, PM1A_EVT_BLK, true);
  f.setUint32(64, PM1A_CNT_BLK, true);
  f.setUint32(76, PM_TMR_BLK, true);
  f.setUint32(80, GPE0_BLK, true);
  f.setUint8(88, 4); // PM1_EVT_LEN
  f.setUint8(89, 2); // PM1_CNT_LEN
  f.setUint8(91, 4); // PM_TMR_LEN
  f.setUint8(92, GPE0_BLK_LEN);
  f.setUint16(96, 0xfff, true); // P_LVL2_LAT > 100: C2 unsupported
  f.setUint16(98, 0xfff, true); // P_LVL3_LAT > 1000: C3 unsupported
  f.setUint8(108, 0x32); // CENTURY: CMOS index of the century byte
  f.setUint16(109, 0x0003, true); // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042
  // Flags: WBINVD | PROC_C1 | SLP_BUTTON | RTC_S4 | RESET_REG_SUP; TMR_VAL_EXT clear: the PM timer is 24 bits.
  f.setUint32(112, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 7) | (1 << 10), true);
  gas(f, 116, 1, 8, 1, 0xcf9); // RESET_REG
  f.setUint8(128, 0x06); // RESET_VALUE: RST_CPU | SYS_RST
  f.setBigUint64(132, BigInt(facsAddr), true); // X_FIRMWARE_CTRL
  f.setBigUint64(140, BigInt(dsdtAddr), true); // X_DSDT
  gas(f, 148, 1, 32, 2, PM1A_EVT_BLK);
  gas(f, 172, 1, 16, 2, PM1A_CNT_BLK);
  gas(f, 208, 1, 32, 3, PM_TMR_BLK);
  gas(f, 220, 1, GPE0_BLK_LEN * 8, 1, GPE0_BLK);
  const fadtAddr = place('FACP', fadt.seal());

  // MADT.
  const n = cfg.apicIds.length;
  const madtLen = 44 + 8 * n + 12 + 10 * 2 + 6;
  const madt = new Table('APIC', madtLen, 3);
  const m = madt.dv;
  m.setUint32(36, LAPIC_BASE, true);
  m.setUint32(40, 1, true); // PCAT_COMPAT: there are 8259s to mask
  let at = 44;
  cfg.apicIds.forEach((id, i) => {
    m.setUint8(at, 0); // Processor Local APIC
    m.setUint8(at + 1, 8);
    m.setUint8(at + 2, i); // ACPI processor UID
    m.setUint8(at + 3, id);
    m.setUint32(at + 4, 1, true); // enabled
    at += 8;
  });
  m.setUint8(at, 1); // I/O APIC
  m.setUint8(at + 1, 12);
  m.setUint8(at + 2, cfg.ioapicId ?? 0);
  m.setUint32(at + 4, IOAPIC_BASE, true);
  m.setUint32(at + 8, 0, true); // GSI base
  at += 12;
  const iso = (irq: number, gsi: number, flags: number) => {
    m.setUint8(at, 2); // Interrupt Source Override
    m.setUint8(at + 1, 10);
    m.setUint8(at + 2, 0); // ISA
    m.setUint8(at + 3, irq);
    m.setUint32(at + 4, gsi, true);
    m.setUint16(at + 8, flags, true);
    at += 10;
  };
  iso(0, 2, 0); // the PIT's IRQ 0 arrives on IOAPIC pin 2
  iso(SCI_IRQ, SCI_IRQ, 0x000d); // SCI: active high (01), level triggered (11 << 2)
  m.setUint8(at, 4); // Local APIC NMI
  m.setUint8(at + 1, 6);
  m.setUint8(at + 2, 0xff); // all processors
  m.setUint16(at + 3, 0, true);
  m.setUint8(at + 5, 1); // LINT1
  at += 6;
  const madtAddr = place('APIC', madt.seal());

  const tableAddrs = [fadtAddr, madtAddr];
  if (cfg.hpet !== false) {
    const hpet = new Table('HPET', 56, 1);
    hpet.dv.setUint32(36, cfg.hpetBlockId >>> 0, true);
    gas(hpet.dv, 40, 0, 64, 0, HPET_BASE);
    hpet.dv.setUint8(52, 0); // HPET number
    hpet.dv.setUint16(53, 0x80, true); // minimum clock tick in periodic mode
    hpet.dv.setUint8(55, 0); // no page protection
    tableAddrs.push(place('HPET', hpet.seal()));
  }

  const rsdt = new Table('RSDT', 36 + 4 * tableAddrs.length, 1);
  tableAddrs.forEach((a, i) => rsdt.dv.setUint32(36 + 4 * i, a, true));
  const rsdtAddr = place('RSDT', rsdt.seal());
  const xsdt = new Table('XSDT', 36 + 8 * tableAddrs.length, 1);
  tableAddrs.forEach((a, i) => xsdt.dv.setBigUint64(36 + 8 * i, BigInt(a), true));
  const xsdtAddr = place('XSDT', xsdt.seal());

  if (rsdpAt % 16) throw new Error('the RSDP must be 16-byte aligned');
  const rsdp = new Uint8Array(36);
  const r = new DataView(rsdp.buffer);
  ascii(rsdp, 0, 'RSD PTR ');
  ascii(rsdp, 9, ACPI_OEM_ID);
  rsdp[15] = 2; // revision: ACPI 2.0+
  r.setUint32(16, rsdtAddr, true);
  r.setUint32(20, 36, true);
  r.setBigUint64(24, BigInt(xsdtAddr), true);
  rsdp[8] = (256 - checksum(rsdp, 0, 20)) & 0xff;
  rsdp[32] = (256 - checksum(rsdp, 0, 36)) & 0xff;
  pieces.push({ addr: rsdpAt, bytes: rsdp, name: 'RSDP' });
  tables.RSDP = rsdpAt;
  return { pieces, rsdp: rsdpAt, tables };
}

/** What a guest does to find the RSDP: scan `mem` (guest physical 0-based) on 16-byte boundaries in [from, to). */
export function findRsdp(mem: Uint8Array, from = 0xe0000, to = 0x100000): number {
  for (let a = from; a + 20 <= to && a + 20 <= mem.length; a += 16) {
    if (mem[a] !== 0x52 || mem[a + 1] !== 0x53 || mem[a + 2] !== 0x44 || mem[a + 3] !== 0x20) continue;
    if (String.fromCharCode(...mem.subarray(a, a + 8)) !== 'RSD PTR ') continue;
    if (checksum(mem, a, a + 20) === 0) return a;
  }
  return -1;
}
