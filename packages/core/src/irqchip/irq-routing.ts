/**
 * GSI routing (virt/kvm/irqchip.c, arch/x86/kvm/irq_comm.c): which irqchip pins — or which MSI
 * message — a global system interrupt drives. KVM_IRQ_LINE and KVM_SET_GSI_ROUTING act on it.
 */
import { KvmError } from '../kvm/errors';
import { IOAPIC_NUM_PINS } from './ioapic';

/** KVM_IRQCHIP_* (struct kvm_irq_routing_irqchip.irqchip). */
export enum KvmIrqchipId {
  PIC_MASTER = 0,
  PIC_SLAVE = 1,
  IOAPIC = 2,
}

/** KVM_MAX_IRQ_ROUTES. */
export const KVM_MAX_IRQ_ROUTES = 4096;

/** struct kvm_irq_routing_entry, KVM_IRQ_ROUTING_IRQCHIP or KVM_IRQ_ROUTING_MSI. */
export type KvmIrqRoutingEntry =
  | { gsi: number; type: 'irqchip'; irqchip: KvmIrqchipId; pin: number }
  | { gsi: number; type: 'msi'; addressLo: number; addressHi: number; data: number };

/**
 * The PC's routing as QEMU installs it with an in-kernel irqchip (kvm_pc_setup_irq_routing):
 * GSI 0–15 drive the 8259 pins (except the cascade, 2) and the IOAPIC pin of the same number,
 * except ISA IRQ0 (the PIT), which drives IOAPIC pin 2 — the interrupt source override the
 * MADT reports; GSI 16–23 drive IOAPIC pins only.
 */
export function defaultIrqRouting(): KvmIrqRoutingEntry[] {
  const r: KvmIrqRoutingEntry[] = [];
  for (let gsi = 0; gsi < 16; gsi++) {
    if (gsi === 2) continue;
    r.push({ gsi, type: 'irqchip', irqchip: gsi < 8 ? KvmIrqchipId.PIC_MASTER : KvmIrqchipId.PIC_SLAVE, pin: gsi & 7 });
  }
  for (let gsi = 0; gsi < IOAPIC_NUM_PINS; gsi++) {
    if (gsi === 2) continue;
    r.push({ gsi, type: 'irqchip', irqchip: KvmIrqchipId.IOAPIC, pin: gsi === 0 ? 2 : gsi });
  }
  return r;
}

/** The installed table: GSI → its entries (struct kvm_irq_routing_table). */
export class KvmIrqRoutingTable {
  readonly byGsi = new Map<number, KvmIrqRoutingEntry[]>();
  /** nr_rt_entries: GSIs 0..nrRtEntries-1 exist (some, like the PC's GSI 2, with no route). */
  readonly nrRtEntries: number;

  constructor(entries: readonly KvmIrqRoutingEntry[]) {
    if (!Array.isArray(entries)) throw new KvmError('EINVAL', 'KVM_SET_GSI_ROUTING: entries must be an array');
    if (entries.length > KVM_MAX_IRQ_ROUTES) {
      throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: ${entries.length} entries exceed KVM_MAX_IRQ_ROUTES (${KVM_MAX_IRQ_ROUTES})`);
    }
    for (const [i, e] of entries.entries()) {
      if (!Number.isInteger(e.gsi) || e.gsi < 0 || e.gsi >= KVM_MAX_IRQ_ROUTES) {
        throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: entry ${i}: gsi ${String(e.gsi)} is not 0..${KVM_MAX_IRQ_ROUTES - 1}`);
      }
      const list = this.byGsi.get(e.gsi) ?? [];
      if (e.type === 'irqchip') {
        const max = e.irqchip === KvmIrqchipId.IOAPIC ? IOAPIC_NUM_PINS : 8;
        if (!(e.irqchip in KvmIrqchipId)) throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: entry ${i} (gsi ${e.gsi}): unknown irqchip ${String(e.irqchip)}`);
        if (!Number.isInteger(e.pin) || e.pin < 0 || e.pin >= max) {
          throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: entry ${i} (gsi ${e.gsi}): pin ${String(e.pin)} is not 0..${max - 1} on ${KvmIrqchipId[e.irqchip]}`);
        }
        // setup_routing_entry: a GSI may not drive two pins of the same irqchip.
        if (list.some((o) => o.type === 'irqchip' && o.irqchip === e.irqchip)) {
          throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: gsi ${e.gsi} is routed twice to ${KvmIrqchipId[e.irqchip]}`);
        }
      } else if (e.type === 'msi') {
        for (const k of ['addressLo', 'addressHi', 'data'] as const) {
          if (!Number.isInteger(e[k]) || e[k] < 0 || e[k] > 0xffffffff) {
            throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: entry ${i} (gsi ${e.gsi}): ${k} must be a 32-bit unsigned integer`);
          }
        }
        if (list.length) throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: gsi ${e.gsi}: an MSI route must be the GSI's only entry`);
      } else {
        throw new KvmError('EINVAL', `KVM_SET_GSI_ROUTING: entry ${i}: type must be 'irqchip' or 'msi'`);
      }
      list.push({ ...e });
      this.byGsi.set(e.gsi, list);
    }
    this.nrRtEntries = entries.reduce((m, e) => Math.max(m, e.gsi + 1), 0);
  }

  /** The entries of `gsi`: undefined when the GSI is outside the table. */
  lookup(gsi: number): readonly KvmIrqRoutingEntry[] | undefined {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi >= this.nrRtEntries) return undefined;
    return this.byGsi.get(gsi) ?? [];
  }

  entries(): KvmIrqRoutingEntry[] {
    return [...this.byGsi.values()].flat().map((e) => ({ ...e }));
  }
}
