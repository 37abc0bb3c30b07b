#!/usr/bin/env node
/**
 * Summarize a differential run as a Markdown table (one row per mnemonic, columns per size).
 *
 *   TSVISOR_DIFF_REPORT=/tmp/diff-report npx jest packages/core/test/diff
 *   node packages/core/test/diff/report.js /tmp/diff-report [--examples]
 */
const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: report.js <TSVISOR_DIFF_REPORT dir> [--examples]');
  process.exit(2);
}
const withExamples = process.argv.includes('--examples');
const rows = new Map();
let seed;
let count;
for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
  const j = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
  seed = j.seed;
  count = j.count;
  for (const r of j.results) {
    const mn = r.mnemonic;
    const key = `${r.family}\t${mn}`;
    if (!rows.has(key)) rows.set(key, { family: r.family, mn, sizes: {}, examples: [] });
    const row = rows.get(key);
    const s = (row.sizes[r.size] ??= { forms: 0, pass: 0, mismatch: 0, skipped: 0, badCases: 0, cases: 0 });
    s.forms++;
    s[r.status]++;
    s.badCases += r.mismatches;
    s.cases += r.cases;
    if (r.example) row.examples.push(r.example);
  }
}
const cell = (s) => {
  if (!s) return '';
  if (s.skipped === s.forms) return 'skipped';
  if (s.mismatch === 0) return `pass (${s.pass})`;
  return `**${s.mismatch}/${s.forms} forms differ** (${s.badCases} of ${s.cases} cases)`;
};
console.log(`Differential run: seed ${seed}, ${count} cases per form\n`);
console.log('| family | instruction | 8 | 16 | 32 | 64 |');
console.log('|---|---|---|---|---|---|');
for (const r of rows.values()) {
  console.log(`| ${r.family} | ${r.mn.toUpperCase()} | ${cell(r.sizes[8])} | ${cell(r.sizes[16])} | ${cell(r.sizes[32])} | ${cell(r.sizes[64])} |`);
}
if (withExamples) {
  for (const r of rows.values()) {
    if (!r.examples.length) continue;
    console.log(`\n### ${r.mn.toUpperCase()}\n\n\`\`\`\n${r.examples[0]}\n\`\`\``);
  }
}
