/**
 * The CLI's prebuilt demo guest (src/demo-guest.ts) is exactly testkit's buildDemoGuest():
 * the testkit stays the demo's source. After changing the demo there, regenerate with
 * TSVISOR_UPDATE_DEMO_GUEST=1 npx jest packages/cli/test/demo-guest.test.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildDemoGuest } from '@tsvisor/testkit';
import { DEMO_GUEST, demoGuestImage } from '../src/demo-guest';

const FILE = path.join(__dirname, '..', 'src', 'demo-guest.ts');

/** The source of src/demo-guest.ts for `image` loaded at `loadAddress`, entered at `entry`. */
function render(image: Uint8Array, loadAddress: number, entry: number): string {
  const b64 = Buffer.from(image).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 96) lines.push(`    '${b64.slice(i, i + 96)}',`);
  return `/**
 * The built-in demo guest (\`tsvisor run\` with no GUEST): the bytes of testkit's buildDemoGuest()
 * (packages/testkit/src/guests/demo.ts; real → protected → long mode, the CPU vendor on COM1,
 * WRMSR FS_BASE, HLT), prebuilt so that a plain \`tsvisor run\` does not load the testkit and
 * initialise iced-x86's encoder to assemble the same ${image.length} bytes at every start (~40 ms).
 *
 * GENERATED — packages/cli/test/demo-guest.test.ts checks these bytes against buildDemoGuest()
 * and rewrites this file when run with TSVISOR_UPDATE_DEMO_GUEST=1.
 */
export const DEMO_GUEST = {
  loadAddress: 0x${loadAddress.toString(16)},
  entry: 0x${entry.toString(16)},
  base64: [
${lines.join('\n')}
  ].join(''),
} as const;

/** The demo guest's image: a flat real-mode binary for DEMO_GUEST.loadAddress. */
export function demoGuestImage(): Uint8Array {
  return new Uint8Array(Buffer.from(DEMO_GUEST.base64, 'base64'));
}
`;
}

describe('the prebuilt demo guest', () => {
  it('is byte for byte testkit\'s buildDemoGuest(), at the same load address and entry', () => {
    const demo = buildDemoGuest();
    const expected = render(demo.image, demo.loadAddress, demo.entry);
    if (process.env.TSVISOR_UPDATE_DEMO_GUEST === '1' && readFileSync(FILE, 'utf8') !== expected) writeFileSync(FILE, expected);
    expect(Buffer.from(demoGuestImage()).equals(Buffer.from(demo.image))).toBe(true);
    expect(DEMO_GUEST.loadAddress).toBe(demo.loadAddress);
    expect(DEMO_GUEST.entry).toBe(demo.entry);
    expect(readFileSync(FILE, 'utf8')).toBe(expected); // regenerate: TSVISOR_UPDATE_DEMO_GUEST=1
  });
});
