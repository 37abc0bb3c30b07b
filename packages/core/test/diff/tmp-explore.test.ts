import { enumerateForms } from './harness/forms';
test('x', () => { const f = enumerateForms(); const by: Record<string, number> = {}; for (const x of f) by[x.family] = (by[x.family] ?? 0) + 1; console.log(f.length, JSON.stringify(by), f.filter(x=>x.family==='move-extend').map(x=>x.id+':'+x.size).join(' ')); });
