/**
 * KVM's in-kernel I/O buses (kvm_io_bus): devices that core handles without leaving to
 * userspace (PIC, PIT, PM timer, LAPIC, IOAPIC…). An access no device claims goes to userspace
 * as KVM_EXIT_IO / KVM_EXIT_MMIO.
 */
export interface KvmIoDevice {
  readonly name: string;
  /** Read `len` bytes at `addr` into `data`; false: not handled here after all. */
  read(addr: number, len: number, data: Uint8Array): boolean;
  write(addr: number, len: number, data: Uint8Array): boolean;
}

interface Range {
  start: number;
  len: number;
  dev: KvmIoDevice;
}

export class KvmIoBus {
  private ranges: Range[] = [];

  register(start: number, len: number, dev: KvmIoDevice): void {
    for (const r of this.ranges) {
      if (start < r.start + r.len && start + len > r.start) {
        throw new Error(`io bus: ${dev.name} [0x${start.toString(16)}, +${len}) overlaps ${r.dev.name}`);
      }
    }
    this.ranges.push({ start, len, dev });
  }

  unregister(dev: KvmIoDevice): void {
    this.ranges = this.ranges.filter((r) => r.dev !== dev);
  }

  private find(addr: number, len: number): Range | undefined {
    for (const r of this.ranges) if (addr >= r.start && addr + len <= r.start + r.len) return r;
    return undefined;
  }

  read(addr: number, len: number, data: Uint8Array): boolean {
    const r = this.find(addr, len);
    return !!r && r.dev.read(addr, len, data);
  }

  write(addr: number, len: number, data: Uint8Array): boolean {
    const r = this.find(addr, len);
    return !!r && r.dev.write(addr, len, data);
  }
}
