import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { main, CliIo } from '@tsvisor/cli';

export const INTEL_CPUINFO = 'processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu vme vmx\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n';
export const AMD_CPUINFO = 'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu svm\n';

export interface Captured {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI in-process with captured output. */
export async function runCli(argv: string[], io: Partial<CliIo> = {}): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const decode = (c: string | Uint8Array) => (typeof c === 'string' ? c : Buffer.from(c).toString('latin1'));
  const status = await main(argv, {
    stdout: { write: (c) => (stdout += decode(c)) },
    stderr: { write: (c) => (stderr += decode(c)) },
    readCpuinfo: () => INTEL_CPUINFO,
    // In-process runs neither read the test runner's stdin nor install a SIGINT handler in it.
    readStdin: undefined,
    onInterrupt: undefined,
    ...io,
  });
  return { status, stdout, stderr };
}

export function tempDir(prefix = 'tsvisor-cli-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Write a flat binary guest to a temp file; returns its path. */
export function writeGuest(bytes: number[], name = 'guest.bin'): string {
  const dir = tempDir();
  const file = path.join(dir, name);
  writeFileSync(file, Uint8Array.from(bytes));
  return file;
}

/** A package in `root`/node_modules with the given package.json and index.js. */
export function installFakePackage(root: string, name: string, pkg: Record<string, unknown>, indexJs: string): string {
  const dir = path.join(root, 'node_modules', ...name.split('/'));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.2.3', main: 'index.js', ...pkg }));
  writeFileSync(path.join(dir, 'index.js'), indexJs);
  return dir;
}

export const FIXTURES = path.join(__dirname, 'fixtures');
