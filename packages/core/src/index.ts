/**
 * @tsvisor/core — the kvm_x86_ops contract, the generic x86 hypervisor, the emulated
 * x86-64 processor and the platform. Public API: everything exported here; nothing else.
 */
import 'reflect-metadata';
export * from './ops';
export * from './kvm';
export * from './mmu/host-memory';
export * from './mmu/memslot';
export * from './mmu/tdp';
export * from './cpu/state';
export * from './cpu/guest-mode';
export * from './cpu/x86-cpu';
export { MAXPHYADDR } from './cpu/consts';
export * from './irqchip';
export * from './kvm/clock';
export * from './platform';
/** tsyringe's root container and type, re-exported so users register backends without importing tsyringe first. */
export { container } from 'tsyringe';
export type { DependencyContainer } from 'tsyringe';
