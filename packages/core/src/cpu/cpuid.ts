/**
 * CPUID of the emulated processor (SDM Vol. 2A CPUID; APM Vol. 3 App. E): it reports
 * exactly what this processor implements, no more. Core's KVM_GET_SUPPORTED_CPUID and the
 * guest-visible CPUID are built on top of this by core (CPUID always exits in guest mode
 * under KVM); this is what the bare processor answers when it is not intercepted.
 */
import type { X86Cpu } from './x86-cpu';
import { MAXPHYADDR } from './consts';

/** Implemented features (bits of the CPUID words they appear in). */
export const CPUID_1_EDX =
  (1 << 2) /* DE */ | (1 << 3) /* PSE */ | (1 << 4) /* TSC */ | (1 << 5) /* MSR */ | (1 << 6) /* PAE */ |
  (1 << 8) /* CX8 */ | (1 << 11) /* SEP */ | (1 << 13) /* PGE */ | (1 << 15) /* CMOV */ | (1 << 16) /* PAT */ |
  (1 << 17) /* PSE36 */ | (1 << 19) /* CLFSH */;
export let CPUID_1_ECX =
  (1 << 13) /* CX16 */ | (1 << 17) /* PCID */ | (1 << 30) /* RDRAND */;
export let CPUID_7_EBX =
  (1 << 0) /* FSGSBASE */ | (1 << 7) /* SMEP */ | (1 << 10) /* INVPCID */ | (1 << 18) /* RDSEED */ | (1 << 20) /* SMAP */;
export let CPUID_7_ECX = (1 << 2) /* UMIP */ | (1 << 16) /* LA57 */ | (1 << 22) /* RDPID */;
export const CPUID_81_EDX =
  (1 << 11) /* SYSCALL */ | (1 << 20) /* NX */ | (1 << 26) /* 1GB pages */ | (1 << 27) /* RDTSCP */ | (1 << 29) /* LM */;
export let CPUID_81_ECX = (1 << 0) /* LAHF/SAHF in 64-bit mode */;

/** Let ext.ts add the bits of the extensions it implements. */
export function addFeatures(w: { ecx1?: number; ebx7?: number; ecx7?: number; ecx81?: number }): void {
  CPUID_1_ECX |= w.ecx1 ?? 0;
  CPUID_7_EBX |= w.ebx7 ?? 0;
  CPUID_7_ECX |= w.ecx7 ?? 0;
  CPUID_81_ECX |= w.ecx81 ?? 0;
}

function str4(s: string, i: number): number {
  return (s.charCodeAt(i) | (s.charCodeAt(i + 1) << 8) | (s.charCodeAt(i + 2) << 16) | (s.charCodeAt(i + 3) << 24)) | 0;
}
const BRAND = 'tsvisor emulated x86-64 processor'.padEnd(48, '\0');

/** out = [EAX, EBX, ECX, EDX]. */
export function cpuidLeaf(c: X86Cpu, leaf: number, sub: number, out: Int32Array): void {
  out[0] = 0; out[1] = 0; out[2] = 0; out[3] = 0;
  const amd = c.options.vendor === 'amd';
  const vendor = amd ? 'AuthenticAMD' : 'GenuineIntel';
  if (leaf >= 0x80000000) {
    switch (leaf) {
      case 0x80000000:
        out[0] = 0x80000008 | 0;
        if (amd) { out[1] = str4(vendor, 0); out[3] = str4(vendor, 4); out[2] = str4(vendor, 8); }
        return;
      case 0x80000001:
        out[0] = amd ? 0x00800f12 : 0;
        out[2] = CPUID_81_ECX;
        out[3] = CPUID_81_EDX | (amd ? CPUID_1_EDX & 0x0183f3ff : 0);
        return;
      case 0x80000002: case 0x80000003: case 0x80000004: {
        const base = (leaf - 0x80000002) * 16;
        for (let i = 0; i < 4; i++) out[i] = str4(BRAND, base + i * 4);
        return;
      }
      case 0x80000008:
        out[0] = MAXPHYADDR | ((c.la57 || (CPUID_7_ECX & (1 << 16)) ? 57 : 48) << 8);
        return;
      default:
        return;
    }
  }
  switch (leaf) {
    case 0:
      out[0] = 7;
      out[1] = str4(vendor, 0); out[3] = str4(vendor, 4); out[2] = str4(vendor, 8);
      return;
    case 1:
      out[0] = amd ? 0x00800f12 : 0x000306a9;
      out[1] = (8 << 8) | (1 << 16); // CLFLUSH line 64 bytes, 1 logical processor, APIC ID 0
      out[2] = CPUID_1_ECX | (Number(c.state.cr4 & 0x40000n) ? 1 << 27 : 0);
      out[3] = CPUID_1_EDX;
      return;
    case 7:
      if (sub === 0) { out[0] = 0; out[1] = CPUID_7_EBX; out[2] = CPUID_7_ECX; }
      return;
    default:
      return;
  }
}
