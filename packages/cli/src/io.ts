import { readFileSync } from 'node:fs';

/** Where the CLI writes and what it reads from the host; tests inject their own. */
export interface CliIo {
  stdout: { write(chunk: string | Uint8Array): unknown };
  stderr: { write(chunk: string | Uint8Array): unknown };
  /** Directory that backend package names and relative paths resolve from. */
  cwd: string;
  /** The host's /proc/cpuinfo, or null where there is none (for `--backend auto`). */
  readCpuinfo(): string | null;
}

export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    cwd: process.cwd(),
    readCpuinfo: () => {
      try {
        return readFileSync('/proc/cpuinfo', 'utf8');
      } catch {
        return null;
      }
    },
  };
}
