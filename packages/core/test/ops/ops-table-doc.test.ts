import { readFileSync } from 'fs';
import { join } from 'path';
import { KVM_X86_OPS } from '../../src';

/** docs/ops-table.md must keep a row for every member of the contract, in the table's order. */
describe('docs/ops-table.md', () => {
  const doc = readFileSync(join(__dirname, '../../../../docs/ops-table.md'), 'utf8');
  const rows = doc.split('\n').filter((l) => /^\| `[a-zA-Z0-9]+` \|/.test(l));

  it('has one row per kvm_x86_ops member, in order', () => {
    expect(rows.map((r) => /^\| `([a-zA-Z0-9]+)`/.exec(r)![1])).toEqual(KVM_X86_OPS.map((e) => e.name));
  });

  it('states each row\'s kind and group as the table does', () => {
    for (const [i, e] of KVM_X86_OPS.entries()) {
      const cells = rows[i].split('|').map((c) => c.trim());
      expect(cells[2]).toBe(e.kind);
      expect(cells[3]).toBe(e.group);
    }
  });
});
