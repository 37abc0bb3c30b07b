#!/usr/bin/env node
// The `tsvisor` command's launcher. It is committed (not built) so that npm links it into
// node_modules/.bin at install time, before the root postinstall's `tsc -b` creates dist/:
// npm skips a bin whose target does not exist yet, and a built file has no executable bit.
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const built = path.join(__dirname, '..', 'dist', 'bin.js');
if (!fs.existsSync(built)) {
  process.stderr.write(`tsvisor: ${built} is missing; build the project first (npm run build, or npm ci, which builds)\n`);
  process.exit(1);
}
// Node 20 has no module.enableCompileCache(): dist/module-cache.js keeps V8's compiled code and
// the relative requires' resolutions from one run to the next (see there; TSVISOR_MODULE_CACHE=0
// turns it off).
try {
  require(path.join(__dirname, '..', 'dist', 'module-cache.js')).installModuleCache(path.join(__dirname, '..'));
} catch {
  // Start without it.
}
require(built);
