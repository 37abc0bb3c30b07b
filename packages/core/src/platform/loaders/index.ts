export { GuestLoadError } from './errors';
export * from './boot-state';
export * from './flat';
export * from './elf';
export * from './multiboot';
