#!/usr/bin/env node
/** The `tsvisor` executable: main() on the real process. */
import type * as Main from './main';

function fail(e: unknown): void {
  process.stderr.write(`tsvisor: internal error (a bug in tsvisor): ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
}

try {
  // Loaded here rather than imported so that a broken installation is reported, not thrown.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { main } = require('./main') as typeof Main;
  main(process.argv.slice(2)).then((status) => {
    process.exitCode = status;
  }, fail);
} catch (e) {
  fail(e);
}
