import { VMCS_FIELDS, VmcsFieldType } from './fields';
import { Vmcs } from './vmcs';

const SECTIONS: [VmcsFieldType, string][] = [
  [VmcsFieldType.GUEST, 'Guest state'],
  [VmcsFieldType.HOST, 'Host state'],
  [VmcsFieldType.CONTROL, 'Control fields'],
  [VmcsFieldType.EXIT_INFO, 'VM-exit information (read-only)'],
];

/** dump_vmcs: every implemented component by name, grouped by type (HIGH halves omitted). */
export function dumpVmcs(vmcs: Vmcs): string {
  const lines: string[] = [`*** VMCS (revision 0x${vmcs.revisionId.toString(16)}, ${vmcs.launched ? 'launched' : 'clear'}) ***`];
  for (const [type, title] of SECTIONS) {
    lines.push(`*** ${title} ***`);
    for (const info of VMCS_FIELDS.values()) {
      if (info.type !== type || info.high) continue;
      const value = vmcs.vmread(info.encoding);
      const digits = info.width === '16' ? 4 : info.width === '32' ? 8 : 16;
      lines.push(`${info.name.padEnd(32)} [${info.encoding.toString(16).padStart(4, '0')}] = 0x${value.toString(16).padStart(digits, '0')}`);
    }
  }
  return lines.join('\n');
}
