export * from './irq-source';
export * from './apic-regs';
export * from './lapic';
export * from './ioapic';
export * from './pic';
export * from './irq-routing';
export * from './irqchip';
export * from './apic-msr';
