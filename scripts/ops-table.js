#!/usr/bin/env node
/**
 * Regenerates docs/ops-table.md from core's table (packages/core/dist, so build first) and each
 * backend's own per-hook status: packages/<b>/ops-status.<b>.json when present, else the table
 * in packages/<b>/README.md (rows "| `hook` | kind | status — detail | test |"). The backends
 * own their columns; this file only joins them. Run: npm run build && node scripts/ops-table.js
 */
const fs = require('fs');
const path = require('path');
const { KVM_X86_OPS } = require('../packages/core/dist/ops/table.js');
const root = path.join(__dirname, '..');

function readBackend(name) {
  // A backend may keep its column as JSON ({ hook: { <name>: status, test } }) instead of a README table.
  const json = path.join(root, 'packages', name, `ops-status.${name}.json`);
  if (fs.existsSync(json)) {
    const data = JSON.parse(fs.readFileSync(json, 'utf8'));
    return new Map(Object.entries(data).map(([hook, v]) => [hook, { status: v[name], detail: '', test: (v.test || '').replace(/^packages\/[a-z]+\/test\//, '') }]));
  }
  const text = fs.readFileSync(path.join(root, 'packages', name, 'README.md'), 'utf8');
  const rows = new Map();
  for (const line of text.split('\n')) {
    const m = /^\| `([a-zA-Z0-9]+)` \|([^|]*)\|([^|]*)\|([^|]*)\|/.exec(line);
    if (!m) continue;
    const status = m[3].trim();
    const short = /^vendor-absent/i.test(status) ? 'vendor-absent' : /^not yet/i.test(status) ? 'not yet' : /^implemented/i.test(status) ? 'implemented' : status;
    rows.set(m[1], { status: short, detail: status.replace(/^[a-z -]+(—|-)\s*/i, ''), test: m[4].trim() });
  }
  return rows;
}

const vmx = readBackend('vmx');
const svm = readBackend('svm');
const head = fs.readFileSync(path.join(root, 'docs/ops-table.head.md'), 'utf8');
const cell = (s) => (s ? s.replace(/\|/g, '\\|') : '—');
const rows = KVM_X86_OPS.map((e) => {
  const v = vmx.get(e.name);
  const s = svm.get(e.name);
  const tests = [v && v.test && v.test !== '—' ? `vmx: ${v.test}` : '', s && s.test && s.test !== '—' ? `svm: ${s.test}` : ''].filter(Boolean).join('; ');
  return `| \`${e.name}\` | ${e.kind} | ${e.group} | ${cell(v && v.status)} | ${cell(s && s.status)} | ${cell(tests)} |`;
});
const out = `${head.trimEnd()}\n\n| hook | kind | group | VMX | SVM | covered by |\n|---|---|---|---|---|---|\n${rows.join('\n')}\n`;
fs.writeFileSync(path.join(root, 'docs/ops-table.md'), out);
console.log(`docs/ops-table.md: ${rows.length} rows (vmx ${vmx.size}, svm ${svm.size} described)`);
