/** dump_vmcb: the VMCB by field name (for INTERNAL_ERROR, FAIL_ENTRY and --dump-control-block). */
import type { KvmVcpu } from '@tsvisor/core';
import { VMCB_CONTROL, VMCB_SAVE } from './vmcb/layout';
import { Vmcb } from './vmcb/vmcb';
import { svmOf } from './vcpu-svm';
import { svmExitName } from './vmcb/exit-codes';

const SEGS = new Set<string>(['ES', 'CS', 'SS', 'DS', 'FS', 'GS', 'GDTR', 'LDTR', 'IDTR', 'TR']);

function hex(v: bigint, width: number): string {
  return `0x${v.toString(16).padStart(width * 2, '0')}`;
}

export function dumpVmcb(v: Vmcb): string {
  const lines: string[] = [`VMCB at host-physical 0x${v.pa.toString(16)}`, 'Control area:'];
  for (const fld of Object.values(VMCB_CONTROL)) {
    if (fld.name === 'GUEST_INSN_BYTES') {
      const n = v.read8(VMCB_CONTROL.GUEST_INSN_LEN);
      const bytes = Array.from(v.bytes.subarray(fld.offset, fld.offset + 15)).map((b) => b.toString(16).padStart(2, '0')).join(' ');
      lines.push(`  ${fld.name.padEnd(26)} [0x${fld.offset.toString(16).padStart(3, '0')}] ${bytes}${n ? '' : ' (none)'}`);
      continue;
    }
    let extra = '';
    if (fld.name === 'EXITCODE') extra = ` (${svmExitName(v.read64(VMCB_CONTROL.EXITCODE))})`;
    lines.push(`  ${fld.name.padEnd(26)} [0x${fld.offset.toString(16).padStart(3, '0')}] ${hex(v.readAny(fld), fld.width)}${extra}`);
  }
  lines.push('State save area:');
  for (const fld of Object.values(VMCB_SAVE)) {
    const off = `[0x${fld.offset.toString(16).padStart(3, '0')}]`;
    if (SEGS.has(fld.name)) {
      const seg = fld as (typeof VMCB_SAVE)['ES'];
      lines.push(`  ${fld.name.padEnd(26)} ${off} selector=0x${v.segSelector(seg).toString(16).padStart(4, '0')} attrib=0x${v.segAttrib(seg).toString(16).padStart(3, '0')} limit=0x${v.segLimit(seg).toString(16).padStart(8, '0')} base=${hex(v.segBase(seg), 8)}`);
    } else {
      lines.push(`  ${fld.name.padEnd(26)} ${off} ${hex(v.readAny(fld), fld.width)}`);
    }
  }
  return lines.join('\n');
}

/** The VMCB of `vcpu`, printed by field name (the CLI's --dump-control-block). */
export function dumpControlBlock(vcpu: KvmVcpu): string {
  return dumpVmcb(svmOf(vcpu).vmcb);
}
