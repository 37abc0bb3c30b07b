/**
 * The processor's tagged TLB (VPID / ASID: SDM 29.1, APM 15.16): translations cached under one
 * tag are used only under that tag and are dropped by a
 * flush of their tag (flushTlbTag: INVVPID single-context, INVPCID all-context, an ASID
 * flush) or of everything (flushTlbAll), not by a flush of another tag. The flushes retire context ids
 * instead of walking the TLB; these tests pin the semantics down, including after the ids
 * wrap around.
 */
import { describe, it, expect } from '@jest/globals';
import { GuestExitKind } from '../../src/cpu/guest-mode';
import { hex, load, machine, Machine, protMode, reg, w32, w64 } from './harness';

const OLD = 0x11111111n;
const NEW = 0x22222222n;
/** PD 0x12000 entry 0: the 2 MiB page that linear 0x40000000 maps to (PDPTE1 → PD 0x12000). */
const PDE = 0x12000;

/** 32-bit PAE paging: linear 0 → physical 0 (code), linear 1 GiB → physical 0 (OLD at 0x300). */
function setup(): Machine {
  const m = machine('intel');
  protMode(m, 0x1000);
  w64(m, 0x10000, 0x11001n);
  w64(m, 0x10008, 0x12001n);
  w64(m, 0x11000, 0x000083n);
  w64(m, PDE, 0x000083n);
  w32(m, 0x300, Number(OLD));
  w32(m, 0x200300, Number(NEW));
  const s = m.cpu.state;
  s.cr4 = 0x20n;
  s.cr3 = 0x10000n;
  s.cr0 = 0x80000011n | 0x60000000n;
  // mov eax,[0x40000300]; hlt
  load(m, 0x1000, hex('a1 00 03 00 40 f4'));
  return m;
}

/** Run the read under `tag`; the value it saw. */
function readUnder(m: Machine, tag: number): bigint {
  m.rules.tlbTag = tag;
  m.cpu.state.rip = 0x1000n;
  m.cpu.state.activity = 0;
  expect(m.cpu.runGuest(m.rules, 100)).toBe(GuestExitKind.HALTED);
  expect(m.cpu.hostError).toBeNull();
  return reg(m, 0);
}

/** Point linear 1 GiB at physical 2 MiB (NEW) in memory; cached translations go on seeing OLD. */
function remap(m: Machine, to: bigint): void {
  w64(m, PDE, to);
}

describe('tagged TLB (VPID / ASID)', () => {
  it('uses a translation only under the tag it was cached under; flushing another tag leaves it', () => {
    const m = setup();
    expect(readUnder(m, 1)).toBe(OLD);
    remap(m, 0x200083n);
    // Tag 1 keeps using its cached translation; tag 2 has none and walks the tables.
    expect(readUnder(m, 1)).toBe(OLD);
    m.cpu.flushTlbTag(2);
    m.cpu.flushTlbTag(3);
    expect(readUnder(m, 1)).toBe(OLD);
    expect(readUnder(m, 2)).toBe(NEW);
    // (The TLB is direct-mapped: tag 2's entry took the slot.) Back under tag 1, cached again.
    remap(m, 0x000083n);
    expect(readUnder(m, 1)).toBe(OLD);
    remap(m, 0x200083n);
    expect(readUnder(m, 1)).toBe(OLD);
    // Flushing the tag (not the current one at the time: tag 1 is current) takes effect.
    m.cpu.flushTlbTag(1);
    expect(readUnder(m, 1)).toBe(NEW);
  });

  it('flushTlbAll drops the translations of the current tag and of the others', () => {
    const m = setup();
    expect(readUnder(m, 1)).toBe(OLD);
    remap(m, 0x200083n);
    expect(readUnder(m, 1)).toBe(OLD);
    m.cpu.flushTlbAll();
    expect(readUnder(m, 1)).toBe(NEW);
    remap(m, 0x000083n);
    expect(readUnder(m, 1)).toBe(NEW);
    // Flushed while another tag is current.
    m.rules.tlbTag = 9;
    m.cpu.flushTlbAll();
    expect(readUnder(m, 1)).toBe(OLD);
  });

  it('a flush of the tag in use between two entries with no mode change is not missed', () => {
    const m = setup();
    expect(readUnder(m, 5)).toBe(OLD);
    remap(m, 0x200083n);
    expect(readUnder(m, 5)).toBe(OLD);
    // Same tag, same CRs and segments at the next entry: only the flush differs.
    m.cpu.flushTlbTag(5);
    expect(readUnder(m, 5)).toBe(NEW);
    remap(m, 0x000083n);
    expect(readUnder(m, 5)).toBe(NEW);
    m.cpu.flushTlbAll();
    expect(readUnder(m, 5)).toBe(OLD);
  });

  it('stays exact after many flushes (context ids wrap around)', () => {
    const m = setup();
    expect(readUnder(m, 1)).toBe(OLD);
    // Each flush of the current tag retires its id; thousands of them wrap the numbering.
    for (let i = 0; i < 10_000; i++) {
      m.cpu.flushTlbTag(1);
      if (i % 997 === 0) expect(readUnder(m, 1)).toBe(OLD);
    }
    expect(readUnder(m, 1)).toBe(OLD);
    remap(m, 0x200083n);
    expect(readUnder(m, 1)).toBe(OLD);
    // Flushes of tags with nothing cached retire no ids.
    for (let i = 0; i < 5_000; i++) m.cpu.flushTlbTag(7);
    expect(readUnder(m, 1)).toBe(OLD);
    m.cpu.flushTlbTag(1);
    expect(readUnder(m, 1)).toBe(NEW);
    // Wrap again while the translation is cached: the entry may be dropped, never left stale.
    remap(m, 0x000083n);
    for (let i = 0; i < 5_000; i++) m.cpu.flushTlbTag(1);
    expect(readUnder(m, 1)).toBe(OLD);
    // INVVPID individual-address / INVLPGA still finds the entry under the renumbered context.
    remap(m, 0x200083n);
    expect(readUnder(m, 1)).toBe(OLD);
    m.cpu.flushTlbGva(1, 0x40000300n);
    expect(readUnder(m, 1)).toBe(NEW);
  });
});
