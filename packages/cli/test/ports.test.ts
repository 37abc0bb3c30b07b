import { KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmRun } from '@tsvisor/core';
import { PortIo, SerialConsole } from '@tsvisor/cli';

function io(run: KvmRun, direction: number, port: number, size: number, bytes: number[] | number): Uint8Array {
  const count = typeof bytes === 'number' ? bytes : bytes.length / size;
  Object.assign(run.io, { direction, port, size, count });
  if (typeof bytes !== 'number') run.ioData.set(bytes);
  return run.ioData;
}

describe('the CLI port I/O (KVM_EXIT_IO)', () => {
  function setup() {
    const out: number[] = [];
    const ports = new PortIo(new SerialConsole((b) => out.push(b)));
    return { out, ports, run: new KvmRun() };
  }

  it('OUT to COM1 THR (0x3F8) writes to the console, one byte per element (OUTSB with a count)', () => {
    const { out, ports, run } = setup();
    io(run, KVM_EXIT_IO_OUT, 0x3f8, 1, [...Buffer.from('hi\n')]);
    ports.handle(run);
    expect(Buffer.from(out).toString()).toBe('hi\n');
  });

  it('IN from COM1 LSR (0x3FD) reads 0x60: THR empty, transmitter empty', () => {
    const { ports, run } = setup();
    const data = io(run, KVM_EXIT_IO_IN, 0x3fd, 1, 1);
    data.fill(0);
    ports.handle(run);
    expect(data[0]).toBe(0x60);
  });

  it('unclaimed ports read all-ones and ignore writes, for every access width', () => {
    const { out, ports, run } = setup();
    const data = io(run, KVM_EXIT_IO_IN, 0x1234, 4, 2);
    data.fill(0);
    ports.handle(run);
    expect([...data]).toEqual(new Array(8).fill(0xff));
    io(run, KVM_EXIT_IO_OUT, 0x1234, 2, [1, 2]);
    ports.handle(run);
    expect(out).toEqual([]);
  });

  it('with LCR.DLAB set, 0x3F8 is the divisor latch, not the transmitter', () => {
    const { out, ports, run } = setup();
    io(run, KVM_EXIT_IO_OUT, 0x3fb, 1, [0x80]);
    ports.handle(run);
    io(run, KVM_EXIT_IO_OUT, 0x3f8, 1, [0x03]);
    ports.handle(run);
    expect(out).toEqual([]);
    const dll = io(run, KVM_EXIT_IO_IN, 0x3f8, 1, 1);
    ports.handle(run);
    expect(dll[0]).toBe(0x03);
    io(run, KVM_EXIT_IO_OUT, 0x3fb, 1, [0x03]);
    ports.handle(run);
    io(run, KVM_EXIT_IO_OUT, 0x3f8, 1, [0x41]);
    ports.handle(run);
    expect(out).toEqual([0x41]);
  });

  it('the scratch register keeps what the guest wrote (UART detection)', () => {
    const { ports, run } = setup();
    io(run, KVM_EXIT_IO_OUT, 0x3ff, 1, [0x5a]);
    ports.handle(run);
    const d = io(run, KVM_EXIT_IO_IN, 0x3ff, 1, 1);
    ports.handle(run);
    expect(d[0]).toBe(0x5a);
  });

  it('records the POST code written to port 0x80', () => {
    const { ports, run } = setup();
    io(run, KVM_EXIT_IO_OUT, 0x80, 1, [0x64]);
    ports.handle(run);
    expect(ports.postCode).toBe(0x64);
  });
});
