/**
 * @tsvisor/cli — the `tsvisor` command, usable as a library: `main(argv, io)` runs a
 * command in-process with injectable stdout/stderr and returns its exit status.
 */
export { main, formatBackends } from './main';
export { ExitStatus, CliError } from './status';
export type { CliIo } from './io';
export { parseCommandLine, parseAddress, parseSize, parseCount, parseMemory, parseTarget, START_MODES } from './args';
export type { Command, RunOptions, OutputTarget, StartMode } from './args';
export {
  BUILTIN_BACKENDS, AUTO_FALLBACK, BACKEND_KEYWORD, hostVendorId, autoBackend, resolveBackend,
  findBackendClass, declaresBackend, findInstalledBackendPackages, listBackends,
} from './backends';
export type { BuiltinBackend, ResolvedBackend, BackendListing } from './backends';
export { runCommand } from './run';
export { exitTable, exitStats, statsLines, describeEnd } from './report';
export type { ExitStats, ExitStat, RunJson, RunEnd } from './report';
