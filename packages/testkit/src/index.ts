/**
 * @tsvisor/testkit: guests written in TypeScript on iced-x86's encoder, boot stubs
 * (real → protected → long mode), and the built-in demo guest.
 */
export * from './asm';
export * from './guests';
/** iced-x86's instruction codes and objects, for `Assembler.op()` and `Assembler.emit()`. */
export { Code, Instruction, Register as IcedRegister } from 'iced-x86';
export * from './run';
export * from './conformance';
export * from './fuzz/guest-fuzz';
