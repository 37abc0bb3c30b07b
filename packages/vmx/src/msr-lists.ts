/**
 * The VM-entry MSR-load list (SDM Vol. 3C 27.4) and the VM-exit MSR-store list (28.4): arrays
 * of 16-byte entries (index, reserved, data) in host memory. This processor can load and store
 * the MSRs it keeps in its register file; any other entry fails the entry with exit reason 34
 * (VM-entry failure due to MSR loading), qualification = the 1-based entry number.
 */
import { CpuState, HostMemory } from '@tsvisor/core';

type MsrAccessor = { get(s: CpuState): bigint; set(s: CpuState, v: bigint): boolean };
const canonical = (v: bigint) => { const t = BigInt.asIntN(64, v) >> 47n; return t === 0n || t === -1n; };
const field = (k: 'sysenterCs' | 'sysenterEsp' | 'sysenterEip' | 'star' | 'lstar' | 'cstar' | 'sfmask' | 'kernelGsBase' | 'tscAux' | 'pat' | 'debugctl', check: (v: bigint) => boolean = () => true): MsrAccessor => ({
  get: (s) => s[k],
  set: (s, v) => { if (!check(v)) return false; s[k] = v; return true; },
});

/** MSRs the processor's register file holds, by index. FS/GS base and x2APIC MSRs may not appear (27.4). */
const LOADABLE = new Map<number, MsrAccessor>([
  [0x174, field('sysenterCs', (v) => v >> 32n === 0n)],
  [0x175, field('sysenterEsp', canonical)],
  [0x176, field('sysenterEip', canonical)],
  [0x1d9, field('debugctl')],
  [0x277, field('pat')],
  [0xc0000081, field('star')],
  [0xc0000082, field('lstar', canonical)],
  [0xc0000083, field('cstar', canonical)],
  [0xc0000084, field('sfmask', (v) => v >> 32n === 0n)],
  [0xc0000102, field('kernelGsBase', canonical)],
  [0xc0000103, field('tscAux', (v) => v >> 32n === 0n)],
]);

/** Load `count` entries; returns 0 on success or the 1-based number of the entry that failed. */
export function loadMsrList(host: HostMemory, addr: number, count: number, s: CpuState): number {
  for (let i = 0; i < count; i++) {
    const e = addr + 16 * i;
    const index = host.read32(e);
    if (host.read32(e + 4) !== 0) return i + 1; // bits 63:32 reserved
    const acc = LOADABLE.get(index);
    if (!acc || !acc.set(s, host.read64(e + 8))) return i + 1;
  }
  return 0;
}

/** Store `count` entries (SDM 28.4); returns 0 or the 1-based number of the entry that cannot be stored. */
export function storeMsrList(host: HostMemory, addr: number, count: number, s: CpuState): number {
  for (let i = 0; i < count; i++) {
    const e = addr + 16 * i;
    const acc = LOADABLE.get(host.read32(e));
    if (!acc) return i + 1;
    host.write64(e + 8, acc.get(s));
  }
  return 0;
}
