import { readFileSync } from 'node:fs';

/** Where the CLI writes and what it reads from the host; tests inject their own. */
export interface CliIo {
  stdout: { write(chunk: string | Uint8Array): unknown };
  /** `isTTY`: an interactive terminal gets the status line during long runs. */
  stderr: { write(chunk: string | Uint8Array): unknown; isTTY?: boolean };
  /** Directory that backend package names and relative paths resolve from. */
  cwd: string;
  /** The host's /proc/cpuinfo, or null where there is none (for `--backend auto`). */
  readCpuinfo(): string | null;
  /**
   * Call `handler` on Ctrl-C (SIGINT) until the returned function is called. The process's
   * version: a second Ctrl-C while the first is being handled ends the process at once (130).
   */
  onInterrupt?(handler: () => void): () => void;
  /** Bytes typed or piped to the guest's COM1 (with --serial stdio); returns a function that stops reading. */
  readStdin?(onData: (bytes: Uint8Array) => void): () => void;
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
    onInterrupt: (handler) => {
      let count = 0;
      const onSigint = () => {
        if (++count > 1) process.exit(130);
        handler();
      };
      process.on('SIGINT', onSigint);
      return () => void process.off('SIGINT', onSigint);
    },
    readStdin: (onData) => {
      const stdin = process.stdin;
      const listener = (chunk: Buffer | string) => onData(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
      stdin.on('data', listener);
      stdin.on('error', () => undefined);
      return () => {
        stdin.off('data', listener);
        // A paused stdin no longer keeps the process alive.
        stdin.pause();
      };
    },
  };
}
