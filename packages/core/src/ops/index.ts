export * from './table';
export * from './types';
export * from './x86-ops';
export * from './backend';
export * from './bind';
