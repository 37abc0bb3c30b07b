/**
 * QEMU's `pci-testdev` (1B36:0005, docs/specs/pci-testdev.rst), which kvm-unit-tests' pci
 * test drives: BAR0 is 4 KiB of MMIO, BAR1 256 bytes of I/O. Each BAR starts with a test
 * header {u8 test, u8 width, u8 pad[2], u32 offset, u8 data, u8 pad[3], u32 count, name}.
 * Writing a test number to offset 0 selects that test of the BAR's type (0 no-eventfd,
 * 1 wildcard-eventfd, 2 datamatch-eventfd; tests are numbered across both BARs, MMIO
 * first); reads then return the selected header byte by byte; a write to the header's
 * `offset` counts in `count` when it matches (wildcard: any value of any width;
 * otherwise a 1-byte write of `data`). Without eventfds, the eventfd tests behave like the
 * no-eventfd one, which is what a guest can observe.
 */
import { PciBar, PciDevice } from './pci';

const TESTS = ['no-eventfd', 'wildcard-eventfd', 'datamatch-eventfd'];
const TYPES = ['mmio', 'portio'];
const IOTEST_IOSIZE = 128;
const IOTEST_MEMSIZE = 2048;
const DATAMATCH = 0xfa;
const NOMATCH = 0xce;

interface IoTest {
  hdr: Uint8Array;
  matchData: boolean;
}

export class PciTestdev extends PciDevice {
  private readonly tests: IoTest[] = [];
  private current = -1;

  constructor() {
    // The BAR handlers reach the device through `self`, filled in once `this` exists.
    const self: { dev?: PciTestdev } = {};
    const handlers = (type: number) => ({
      read: (off: number, size: number) => self.dev!.readHdr(off, size),
      write: (off: number, size: number, v: number) => self.dev!.writeTest(type, off, size, v),
    });
    const bars: PciBar[] = [
      { kind: 'mem', size: IOTEST_MEMSIZE * 2, handlers: handlers(0) },
      { kind: 'io', size: IOTEST_IOSIZE * 2, handlers: handlers(1) },
    ];
    super('pci-testdev', { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000 }, bars);
    self.dev = this;
    for (let i = 0; i < TESTS.length * TYPES.length; i++) {
      const test = TESTS[i % TESTS.length];
      const type = TYPES[Math.floor(i / TESTS.length)];
      const name = `${type}-${test}`;
      const hdr = new Uint8Array(16 + name.length + 1);
      const dv = new DataView(hdr.buffer);
      const matchData = test !== 'wildcard-eventfd';
      hdr[0] = i;
      hdr[1] = 1; // access width
      dv.setUint32(4, (type === 'mmio' ? IOTEST_MEMSIZE : IOTEST_IOSIZE) + i, true);
      hdr[8] = matchData ? DATAMATCH : NOMATCH;
      hdr.set(new TextEncoder().encode(name), 16);
      this.tests.push({ hdr, matchData });
    }
  }

  private readHdr(off: number, size: number): number {
    if (this.current < 0) return 0;
    const hdr = this.tests[this.current].hdr;
    let v = 0;
    // QEMU implements 1-byte accesses only; wider reads are assembled from bytes.
    for (let i = 0; i < size; i++) v |= (off + i < hdr.length ? hdr[off + i] : 0) << (8 * i);
    return v >>> 0;
  }

  private writeTest(type: number, off: number, size: number, v: number): void {
    if (off === 0) {
      this.current = -1;
      const t = v & 0xff;
      if (t >= TESTS.length) return;
      this.current = type * TESTS.length + t;
      new DataView(this.tests[this.current].hdr.buffer).setUint32(12, 0, true);
      return;
    }
    if (this.current < 0) return;
    const test = this.tests[this.current];
    const dv = new DataView(test.hdr.buffer);
    if (off !== dv.getUint32(4, true)) return;
    if (test.matchData && (size !== 1 || (v & 0xff) !== test.hdr[8])) return;
    dv.setUint32(12, dv.getUint32(12, true) + 1, true);
  }

  /** The selected test's write count (for tests). */
  get count(): number {
    return this.current < 0 ? 0 : new DataView(this.tests[this.current].hdr.buffer).getUint32(12, true);
  }
}
