export * from './registers';
export * from './operands';
export * from './assembler';
export * from './disasm';
