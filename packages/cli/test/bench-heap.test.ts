// The benchmark's full collection after warm-up (src/bench/heap.ts): it runs in a plain Node
// process (no --expose-gc) and empties the young generation, where a loop that allocates
// almost nothing would otherwise keep its warm-up objects.
import { getHeapSpaceStatistics } from 'node:v8';
import { settleHeap } from '../src/bench/heap';

const youngUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_used_size;

describe('bench heap settling', () => {
  test('settleHeap collects fully without --expose-gc and leaves the young generation empty', () => {
    const keep: object[] = [];
    for (let i = 0; i < 20_000; i++) keep.push({ i, s: `o${i}` });
    const before = youngUsed();
    expect(before).toBeGreaterThan(512 * 1024);
    expect(settleHeap()).toBe(true);
    // The survivors were promoted: little is left in new space (what the test itself allocates since).
    expect(youngUsed()).toBeLessThan(before / 4);
    expect(keep.length).toBe(20_000);
  });
});
