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
require(built);
