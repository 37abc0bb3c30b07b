/**
 * A persistent cache of what loading tsvisor's CommonJS modules costs Node 20 at every start:
 * V8's compiled code (what Node 22's `module.enableCompileCache()` keeps; Node 20 has no such
 * API) and the resolution of `require()`s (path probing, node_modules lookups, package.json
 * reads and realpath: several system calls each). Without it most of `tsvisor run`'s start-up is
 * Node parsing and compiling JavaScript that has not changed since the last run (iced-x86's
 * 900 KB wrapper, core, the backend) and resolving ~260 requires.
 *
 * The launcher (bin/tsvisor.js) installs it before loading anything else; library users of the
 * packages are not affected. Each module is compiled as Node does (the CommonJS wrapper, run in
 * this context), through `vm.Script` with the data from the last run. When V8 rejects the data
 * (another Node, other V8 flags) or the file changed (size or mtime), the module compiles from
 * source and its data is made again at exit — after the run, so it also holds the functions
 * compiled lazily while running. A request resolves from the cache while what its resolution
 * depended on is unchanged — the directories searched (adding, removing or renaming a file
 * changes a directory's mtime) and, for a package, its package.json; otherwise Node resolves it.
 *
 * One file per Node version and installation under $XDG_CACHE_HOME/tsvisor (default
 * ~/.cache/tsvisor), replaced atomically; failing to read or write it only means no cache.
 * TSVISOR_MODULE_CACHE=0 turns it off (so does --enable-source-maps); TSVISOR_MODULE_CACHE=DIR
 * puts it in DIR.
 */
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import Module = require('node:module');
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';

const MAGIC = 'tsvisor-module-cache-4';
const BUILTINS = new Set(Module.builtinModules);

/** Compiled code of one file, valid while the file has this size and mtime. */
interface CodeEntry {
  size: number;
  mtimeMs: number;
  data: Buffer;
}

/**
 * A request's resolution from one directory, valid while every checked path keeps its mtime
 * (-1: still absent). Adding, removing or renaming a file changes its directory's mtime.
 */
interface ResolveEntry {
  target: string;
  checks: [string, number][];
}

interface CacheHeader {
  magic: string;
  code: [string, number, number, number, number][];
  resolve: [string, string, [string, number][]][];
}

/** What Node's Module has that @types/node does not declare. */
interface ModuleInternals {
  prototype: { _compile(content: string, filename: string): unknown };
  wrap(script: string): string;
  wrapper?: string[];
  _resolveFilename(request: string, parent: ParentModule | null | undefined, isMain: boolean, options?: unknown): string;
  _resolveLookupPaths(request: string, parent: ParentModule): string[] | null;
  _extensions: unknown;
  _cache: unknown;
}

interface ParentModule {
  filename?: string | null;
}

interface NodeModule extends ParentModule {
  exports: unknown;
  require(id: string): unknown;
}

/** The cache file for the installation at `cliDir`, or null when turned off. */
export function moduleCacheFile(cliDir: string): string | null {
  const env = process.env.TSVISOR_MODULE_CACHE;
  if (env === '0' || env === 'off') return null;
  const dir = env || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tsvisor');
  // FNV-1a of the installation's path (node:crypto would cost more to load than it saves).
  let h = 0x811c9dc5;
  for (let i = 0; i < cliDir.length; i++) h = Math.imul(h ^ cliDir.charCodeAt(i), 0x01000193) >>> 0;
  return path.join(dir, `modules-${process.version}-${process.arch}-${h.toString(16).padStart(8, '0')}.bin`);
}

function load(file: string, code: Map<string, CodeEntry>, resolved: Map<string, ResolveEntry>): void {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch {
    return;
  }
  try {
    const headerLen = buf.readUInt32LE(0);
    const header = JSON.parse(buf.toString('utf8', 4, 4 + headerLen)) as CacheHeader;
    if (header.magic !== MAGIC) return;
    const base = 4 + headerLen;
    for (const [name, size, mtimeMs, off, len] of header.code) code.set(name, { size, mtimeMs, data: buf.subarray(base + off, base + off + len) });
    for (const [key, target, checks] of header.resolve) resolved.set(key, { target, checks });
  } catch {
    code.clear(); // a torn or foreign file: start again
    resolved.clear();
  }
}

function save(file: string, code: Map<string, CodeEntry>, resolved: Map<string, ResolveEntry>): void {
  const header: CacheHeader = { magic: MAGIC, code: [], resolve: [] };
  const blobs: Buffer[] = [];
  let off = 0;
  for (const [name, e] of code) {
    header.code.push([name, e.size, e.mtimeMs, off, e.data.length]);
    blobs.push(e.data);
    off += e.data.length;
  }
  for (const [key, r] of resolved) header.resolve.push([key, r.target, r.checks]);
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length, 0);
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, Buffer.concat([len, json, ...blobs]));
  renameSync(tmp, file); // atomic: a concurrent reader sees the old file or the new one
}

/** Install the cache for the rest of this process. Returns false when it is off or cannot work here. */
export function installModuleCache(cliDir: string): boolean {
  const file = moduleCacheFile(cliDir);
  // With --enable-source-maps Node maps stack traces through the modules' source maps, which it
  // registers as it compiles them itself: leave compiling to Node then.
  if (!file || (process as { sourceMapsEnabled?: boolean }).sourceMapsEnabled) return false;
  const M = Module as unknown as ModuleInternals;
  const originalCompile = M.prototype._compile;
  const originalResolve = M._resolveFilename;
  if (typeof originalCompile !== 'function' || typeof originalResolve !== 'function' || typeof M.wrap !== 'function') return false;
  const wrapperLength = Array.isArray(M.wrapper) ? M.wrapper[0].length : 0;
  const importLoader = (vm as unknown as { constants?: { USE_MAIN_CONTEXT_DEFAULT_LOADER?: symbol } }).constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  const code = new Map<string, CodeEntry>();
  const resolved = new Map<string, ResolveEntry>();
  load(file, code, resolved);
  /** Modules compiled without usable data: their scripts, to make data from at exit. */
  const fresh = new Map<string, { script: vm.Script; size: number; mtimeMs: number }>();
  let resolveDirty = false;
  /** mtimes (-1: absent) of the paths resolutions depend on, stat'ed once per process. */
  const mtimes = new Map<string, number>();
  const mtime = (p: string): number => {
    let t = mtimes.get(p);
    if (t === undefined) {
      t = statSync(p, { throwIfNoEntry: false })?.mtimeMs ?? -1;
      mtimes.set(p, t);
    }
    return t;
  };
  /** What a resolution of `request` from `parentDir` to `target` depends on, or null if unknown. */
  const dependencies = (request: string, parent: ParentModule, parentDir: string, target: string): [string, number][] | null => {
    const checks: [string, number][] = [];
    const add = (p: string): void => {
      checks.push([p, mtime(p)]);
    };
    if (request.startsWith('./') || request.startsWith('../')) {
      const base = path.resolve(parentDir, request);
      add(path.dirname(base)); // where foo, foo.js, foo/ … are looked for
      add(path.dirname(target));
      if (target !== base && !target.startsWith(`${base}.`)) add(path.join(base, 'package.json')); // a directory's main
      return checks;
    }
    // A package name: the node_modules directories Node searches, up to the one that has it.
    const parts = request.split('/');
    const name = request.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
    const scope = request.startsWith('@') ? parts[0] : null;
    for (const nm of M._resolveLookupPaths(request, parent) ?? []) {
      add(nm);
      if (mtime(nm) < 0) continue;
      if (scope) add(path.join(nm, scope));
      const pkgJson = path.join(nm, name, 'package.json');
      if (mtime(pkgJson) >= 0) {
        add(pkgJson); // main / exports
        add(path.dirname(target));
        return checks;
      }
    }
    return null; // not from node_modules (a self-reference, a file without package.json …): always ask Node
  };

  M._resolveFilename = function resolveCached(request: string, parent: ParentModule | null | undefined, isMain: boolean, options?: unknown): string {
    const from = parent?.filename;
    if (isMain || options !== undefined || !from || !parent || request.startsWith('node:') || path.isAbsolute(request) || BUILTINS.has(request)) {
      return originalResolve.call(this, request, parent, isMain, options);
    }
    const parentDir = path.dirname(from);
    const key = `${parentDir}\0${request}`;
    const hit = resolved.get(key);
    if (hit && hit.checks.every(([p, t]) => mtime(p) === t)) return hit.target;
    const target = originalResolve.call(this, request, parent, isMain, options);
    const checks = dependencies(request, parent, parentDir, target);
    if (checks) {
      resolved.set(key, { target, checks });
      resolveDirty = true;
    } else if (hit) {
      resolved.delete(key);
      resolveDirty = true;
    }
    return target;
  };

  M.prototype._compile = function compileCached(this: NodeModule, content: string, filename: string): unknown {
    // A module with dynamic import() needs Node's own loader callback, which older Node 20s cannot give vm.Script.
    if (!importLoader && content.includes('import(')) return originalCompile.call(this, content, filename);
    const st = statSync(filename, { throwIfNoEntry: false });
    if (!st) return originalCompile.call(this, content, filename);
    const old = code.get(filename);
    const usable = old && old.size === st.size && old.mtimeMs === st.mtimeMs ? old.data : undefined;
    // A leading "#!" line is only valid at the very start of a script: blank it (lines keep their numbers).
    const source = content.startsWith('#!') ? content.replace(/^#![^\n]*/, '') : content;
    const script = new vm.Script(M.wrap(source), {
      filename,
      columnOffset: -wrapperLength, // columns on line 1 as in the file, not after the wrapper's head
      cachedData: usable,
      ...(importLoader ? { importModuleDynamically: importLoader as never } : {}),
    });
    if (!usable || script.cachedDataRejected) fresh.set(filename, { script, size: st.size, mtimeMs: st.mtimeMs });
    const fn = script.runInThisContext({ displayErrors: true }) as (...a: unknown[]) => unknown;
    // The module's own require, as Node's makeRequireFunction builds it.
    const mod = this;
    const require = ((id: string) => mod.require(id)) as NodeJS.Require;
    require.resolve = Object.assign((request: string, options?: { paths?: string[] }) => M._resolveFilename(request, mod, false, options), {
      paths: (request: string) => M._resolveLookupPaths(request, mod),
    });
    require.main = process.mainModule;
    require.extensions = M._extensions as NodeJS.Require['extensions'];
    require.cache = M._cache as NodeJS.Require['cache'];
    return fn.call(mod.exports, mod.exports, require, mod, filename, path.dirname(filename));
  };

  process.once('exit', () => {
    if (!fresh.size && !resolveDirty) return;
    try {
      for (const [name, f] of fresh) code.set(name, { size: f.size, mtimeMs: f.mtimeMs, data: f.script.createCachedData() });
      save(file, code, resolved);
    } catch {
      // No cache this time (read-only home, full disk …): the next run starts without it.
    }
  });
  return true;
}
