export * from './serial';
export * from './boot';
export * from './demo';
export * from './multiboot';
export * from './bench';
export * from './idt';
