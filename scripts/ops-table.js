#!/usr/bin/env node
/**
 * Regenerates docs/ops-table.md from core's table (packages/core/dist) and the per-backend
 * status in docs/ops-status.json: { "<hook>": { "vmx": "...", "svm": "...", "test": "..." } }.
 * Run after `npm run build`: node scripts/ops-table.js
 */
const fs = require('fs');
const path = require('path');
const { KVM_X86_OPS } = require('../packages/core/dist/ops/table.js');
const root = path.join(__dirname, '..');
const status = JSON.parse(fs.readFileSync(path.join(root, 'docs/ops-status.json'), 'utf8'));
const head = fs.readFileSync(path.join(root, 'docs/ops-table.head.md'), 'utf8');
const rows = KVM_X86_OPS.map((e) => {
  const s = status[e.name] || {};
  return `| \`${e.name}\` | ${e.kind} | ${e.group} | ${s.vmx || 'not yet'} | ${s.svm || 'not yet'} | ${s.test || '—'} |`;
});
const out = `${head.trimEnd()}\n\n| hook | kind | group | VMX | SVM | covered by |\n|---|---|---|---|---|---|\n${rows.join('\n')}\n`;
fs.writeFileSync(path.join(root, 'docs/ops-table.md'), out);
console.log(`docs/ops-table.md: ${rows.length} rows`);
