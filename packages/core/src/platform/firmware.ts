/**
 * The built-in firmware: what a PC BIOS leaves behind when it hands over to a kernel, set up
 * directly in guest RAM (no BIOS code runs).
 *
 * - 0x00000–0x003FF  real-mode IVT: vectors 08h–0Fh point at a handler that sends EOI to
 *   the master PIC and IRETs, 70h–77h at one that sends EOI to both PICs, the rest at an IRET
 *   (F000:FF53, where IBM's BIOS had its dummy IRET).
 * - 0x00400–0x004FF  BIOS data area: COM1 base 0x3F8 at 0x400, equipment word at 0x410
 *   (one serial port, 80x25 colour), base memory 639 KiB at 0x413, EBDA segment at 0x40E.
 * - 0x9FC00–0x9FFFF  extended BIOS data area (first word: its size in KiB).
 * - 0xE0000–0xEFFFF  ACPI tables; 0xF0000 the RSDP; 0xFE000 the interrupt handlers;
 *   0xFFFF0 the reset vector (CLI; HLT loop: there is no POST to run again).
 * The 8259s are initialised as a BIOS leaves them (vector bases 08h and 70h, every line
 * masked but the cascade) when the in-kernel PIC answers on the VM's port bus.
 */
import type { Kvm } from '../kvm/kvm';
import { AcpiConfig, buildAcpiTables } from './acpi';
import { EBDA_BASE, GuestRam } from './memory';
import { COM1_BASE } from './devices/uart16550';

export const ACPI_TABLES_BASE = 0xe0000;
export const ACPI_RSDP_ADDR = 0xf0000;
export const BIOS_HANDLERS = 0xfe000;
export const BIOS_DUMMY_IRET = 0xfff53;
export const RESET_VECTOR = 0xffff0;
export const BASE_MEMORY_KIB = EBDA_BASE / 1024;

/** push ax; mov al, 20h; out 20h, al; pop ax; iret */
const MASTER_EOI = [0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf];
/** push ax; mov al, 20h; out 0A0h, al; out 20h, al; pop ax; iret */
const SLAVE_EOI = [0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf];
/** cli; hlt; jmp short $-1 */
const HALT_LOOP = [0xfa, 0xf4, 0xeb, 0xfd];

export interface FirmwareInfo {
  rsdp: number;
  acpiTables: Record<string, number>;
}

export function installFirmware(ram: Uint8Array | GuestRam, acpi: AcpiConfig): FirmwareInfo {
  const mem = ram instanceof GuestRam ? ram : (() => { const g = new GuestRam(); g.add(0, ram); return g; })();
  const masterEoi = BIOS_HANDLERS;
  const slaveEoi = BIOS_HANDLERS + 0x10;
  mem.write(masterEoi, Uint8Array.from(MASTER_EOI));
  mem.write(slaveEoi, Uint8Array.from(SLAVE_EOI));
  mem.write(BIOS_DUMMY_IRET, Uint8Array.of(0xcf));
  mem.write(RESET_VECTOR, Uint8Array.from(HALT_LOOP));
  const farPtr = (linear: number) => ((0xf000 << 16) | (linear - 0xf0000)) >>> 0;
  for (let v = 0; v < 256; v++) {
    let target = BIOS_DUMMY_IRET;
    if (v >= 0x08 && v <= 0x0f) target = masterEoi;
    else if (v >= 0x70 && v <= 0x77) target = slaveEoi;
    mem.writeU32(v * 4, farPtr(target));
  }
  // BIOS data area.
  mem.fill(0x400, 0x100, 0);
  mem.writeU16(0x400, COM1_BASE);
  mem.writeU16(0x40e, EBDA_BASE >> 4);
  mem.writeU16(0x410, (1 << 9) | (2 << 4)); // one serial port; initial video mode 80x25 colour
  mem.writeU16(0x413, BASE_MEMORY_KIB);
  // EBDA.
  mem.fill(EBDA_BASE, 0xa0000 - EBDA_BASE, 0);
  mem.writeU16(EBDA_BASE, 1);
  // ACPI.
  const blob = buildAcpiTables(acpi, ACPI_TABLES_BASE, ACPI_RSDP_ADDR);
  for (const p of blob.pieces) mem.write(p.addr, p.bytes);
  return { rsdp: blob.rsdp, acpiTables: blob.tables };
}

/**
 * Program the in-kernel 8259 pair as a BIOS leaves it: ICW1..ICW4 with vector bases 08h and
 * 70h, cascade on IRQ 2, then every line masked but the cascade. A no-op without an in-kernel PIC.
 */
export function initPics(kvm: Kvm): boolean {
  const out = (port: number, v: number) => kvm.pioBus.write(port, 1, Uint8Array.of(v));
  if (!out(0x20, 0x11)) return false;
  out(0x21, 0x08);
  out(0x21, 0x04);
  out(0x21, 0x01);
  out(0xa0, 0x11);
  out(0xa1, 0x70);
  out(0xa1, 0x02);
  out(0xa1, 0x01);
  out(0x21, 0xfb);
  out(0xa1, 0xff);
  return true;
}
