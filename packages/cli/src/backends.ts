/**
 * Which backend answers X86_OPS: the built-in registry (vmx, svm), `auto` by the host CPU's
 * vendor, or a third-party module named by package or path. Core never imports a backend;
 * this is the one place in tsvisor that does, and it does it lazily, by module name, so a
 * broken or absent backend only matters when it is asked for.
 *
 * Discovery convention (README.md, "Backend discovery"): an installed package is listed by
 * `tsvisor backends` when its package.json has `"tsvisor": { "backend": true }` or the
 * keyword `tsvisor-backend`; it is usable with `--backend <package name>` when its main
 * module exports a class decorated with `@backend({ name, vendor })` from @tsvisor/core.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { BackendClass, BackendInfo, getBackendInfo } from '@tsvisor/core';
import { CliError, ExitStatus } from './status';

export interface BuiltinBackend {
  /** the `--backend` value */
  readonly name: 'vmx' | 'svm';
  readonly packageName: string;
  /** the export that holds the backend class */
  readonly exportName: string;
  /** /proc/cpuinfo `vendor_id` of hosts that `auto` maps to this backend */
  readonly hostVendorId: string;
}

export const BUILTIN_BACKENDS: readonly BuiltinBackend[] = [
  { name: 'vmx', packageName: '@tsvisor/vmx', exportName: 'VmxBackend', hostVendorId: 'GenuineIntel' },
  { name: 'svm', packageName: '@tsvisor/svm', exportName: 'SvmBackend', hostVendorId: 'AuthenticAMD' },
];

/** The backend `auto` falls back to when the host vendor is neither Intel nor AMD (or unknown). */
export const AUTO_FALLBACK: BuiltinBackend['name'] = 'vmx';

/** package.json fields that declare a package a tsvisor backend. */
export const BACKEND_KEYWORD = 'tsvisor-backend';

/** The first `vendor_id` in a /proc/cpuinfo text, or null. */
export function hostVendorId(cpuinfo: string | null): string | null {
  if (!cpuinfo) return null;
  const m = /^vendor_id\s*:\s*(\S+)\s*$/m.exec(cpuinfo);
  return m ? m[1] : null;
}

/** `--backend auto`: GenuineIntel → vmx, AuthenticAMD → svm, anything else → vmx. */
export function autoBackend(cpuinfo: string | null): { builtin: BuiltinBackend; vendorId: string | null; reason: string } {
  const vendorId = hostVendorId(cpuinfo);
  const match = BUILTIN_BACKENDS.find((b) => b.hostVendorId === vendorId);
  const builtin = match ?? BUILTIN_BACKENDS.find((b) => b.name === AUTO_FALLBACK)!;
  const reason = match
    ? `host vendor_id ${vendorId}`
    : vendorId
      ? `host vendor_id ${vendorId} is neither GenuineIntel nor AuthenticAMD; defaulting to ${AUTO_FALLBACK}`
      : `host vendor_id unknown (no /proc/cpuinfo); defaulting to ${AUTO_FALLBACK}`;
  return { builtin, vendorId, reason };
}

/** A backend ready to hand to Kvm.create, with what the CLI needs to describe it. */
export interface ResolvedBackend {
  readonly cls: BackendClass;
  readonly info: BackendInfo;
  /** the export name of the class in its module */
  readonly exportName: string;
  /** the module's exports (for optional extras such as `dumpControlBlock`) */
  readonly module: Readonly<Record<string, unknown>>;
  readonly modulePath: string;
  readonly packageName: string | null;
  readonly version: string | null;
  readonly source: 'built-in' | 'package' | 'path';
  /** why `auto` chose it */
  readonly autoReason?: string;
}

export interface ResolveEnv {
  cwd: string;
  readCpuinfo(): string | null;
}

/** `--backend SPEC` → a backend class, or a CliError with one line naming what is wrong. */
export function resolveBackend(spec: string, env: ResolveEnv): ResolvedBackend {
  if (spec === 'auto') {
    const auto = autoBackend(env.readCpuinfo());
    return { ...loadBuiltin(auto.builtin), autoReason: auto.reason };
  }
  const builtin = BUILTIN_BACKENDS.find((b) => b.name === spec);
  if (builtin) return loadBuiltin(builtin);
  if (spec.length === 0) throw new CliError('--backend needs a value: vmx, svm, auto, a package name or a path');

  if (isPathSpec(spec)) {
    const abs = path.resolve(env.cwd, spec);
    if (!existsSync(abs)) throw new CliError(`backend path '${spec}' does not exist (looked for ${abs})`);
    let resolved: string;
    try {
      resolved = require.resolve(abs);
    } catch (e) {
      throw new CliError(`backend path '${spec}' (${abs}) is not a loadable module: ${firstLine(e)}`);
    }
    return loadModuleBackend(spec, resolved, 'path', null);
  }

  let resolved: string;
  try {
    resolved = require.resolve(spec, { paths: [env.cwd] });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new CliError(
        `unknown backend '${spec}': not one of ${BUILTIN_BACKENDS.map((b) => b.name).join(', ')}, auto, and no package '${spec}' can be resolved from ${env.cwd}`,
      );
    }
    throw new CliError(`backend package '${spec}' cannot be resolved from ${env.cwd}: ${firstLine(e)}`);
  }
  return loadModuleBackend(spec, resolved, 'package', null);
}

function loadBuiltin(b: BuiltinBackend): ResolvedBackend {
  let resolved: string;
  try {
    resolved = require.resolve(b.packageName);
  } catch (e) {
    throw new CliError(`built-in backend ${b.name} (${b.packageName}) is not installed or not built (npm run build): ${firstLine(e)}`, ExitStatus.SOFTWARE);
  }
  return loadModuleBackend(b.name, resolved, 'built-in', b.exportName);
}

function loadModuleBackend(
  spec: string,
  resolved: string,
  source: ResolvedBackend['source'],
  preferredExport: string | null,
): ResolvedBackend {
  const what = source === 'built-in' ? `built-in backend ${spec}` : `backend module '${spec}'`;
  let mod: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(resolved);
  } catch (e) {
    throw new CliError(`${what} (${resolved}) failed to load: ${firstLine(e)}`, source === 'built-in' ? ExitStatus.SOFTWARE : ExitStatus.USAGE);
  }
  const found = findBackendClass(mod, preferredExport);
  if (!found.cls) {
    throw new CliError(`${what} (${resolved}) is not a tsvisor backend: ${found.missing}`, source === 'built-in' ? ExitStatus.SOFTWARE : ExitStatus.USAGE);
  }
  const pkg = findPackageJson(resolved);
  const info = found.info!;
  return {
    cls: found.cls,
    info,
    exportName: found.exportName!,
    module: (mod ?? {}) as Record<string, unknown>,
    modulePath: resolved,
    packageName: info.packageName ?? pkg?.name ?? null,
    version: info.version ?? pkg?.version ?? null,
    source,
  };
}

/**
 * The class among a module's exports that carries `@backend` metadata. Preference: the
 * named export the registry expects, then `default`, then the first in export order.
 */
export function findBackendClass(
  mod: unknown,
  preferredExport: string | null = null,
): { cls?: BackendClass; info?: BackendInfo; exportName?: string; missing: string } {
  if (typeof mod === 'function' && getBackendInfo(mod)) {
    return { cls: mod as BackendClass, info: getBackendInfo(mod), exportName: 'module.exports', missing: '' };
  }
  if (mod === null || (typeof mod !== 'object' && typeof mod !== 'function')) {
    return { missing: 'it exports nothing (expected a class decorated with @backend({ name, vendor }) from @tsvisor/core)' };
  }
  const exports = mod as Record<string, unknown>;
  const names = Object.keys(exports).filter((k) => k !== '__esModule');
  const order = [
    ...(preferredExport ? [preferredExport] : []),
    'default',
    ...names.filter((n) => n !== preferredExport && n !== 'default'),
  ];
  for (const n of order) {
    const v = exports[n];
    const info = getBackendInfo(v);
    if (info) return { cls: v as BackendClass, info, exportName: n, missing: '' };
  }
  const wanted = 'a class decorated with @backend({ name, vendor }) from @tsvisor/core';
  return {
    missing: names.length === 0
      ? `it has no exports (expected ${wanted})`
      : `none of its exports (${abbreviate(names)}) is ${wanted}`,
  };
}

// ---- discovery (`tsvisor backends`)

export interface BackendListing {
  /** what to pass to --backend */
  select: string;
  name: string | null;
  vendor: string | null;
  packageName: string | null;
  version: string | null;
  source: 'built-in' | 'installed';
  /** why it cannot be used, when it cannot */
  problem?: string;
}

interface PackageJson {
  name?: string;
  version?: string;
  keywords?: unknown;
  tsvisor?: { backend?: unknown };
}

/** Does this package.json declare a tsvisor backend (`"tsvisor": { "backend": true }` or the keyword)? */
export function declaresBackend(pkg: PackageJson): boolean {
  if (pkg.tsvisor && typeof pkg.tsvisor === 'object' && pkg.tsvisor.backend === true) return true;
  return Array.isArray(pkg.keywords) && pkg.keywords.includes(BACKEND_KEYWORD);
}

/**
 * Installed packages that declare themselves backends, in the node_modules folders Node would
 * search from `cwd` (the nearest one wins for a name), sorted by name.
 */
export function findInstalledBackendPackages(cwd: string): { name: string; dir: string; pkg: PackageJson }[] {
  const found = new Map<string, { name: string; dir: string; pkg: PackageJson }>();
  for (let dir = path.resolve(cwd); ; dir = path.dirname(dir)) {
    const nm = path.join(dir, 'node_modules');
    for (const pkgDir of packageDirs(nm)) {
      const pkg = readJson(path.join(pkgDir, 'package.json'));
      if (!pkg || typeof pkg.name !== 'string' || found.has(pkg.name)) continue;
      if (declaresBackend(pkg)) found.set(pkg.name, { name: pkg.name, dir: pkgDir, pkg });
    }
    if (path.dirname(dir) === dir) break;
  }
  return [...found.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Built-in backends, then installed third-party ones; each loaded to read its @backend metadata. */
export function listBackends(cwd: string): BackendListing[] {
  const out: BackendListing[] = [];
  for (const b of BUILTIN_BACKENDS) {
    out.push(describe(b.name, 'built-in', () => loadBuiltin(b), b.packageName, builtinVersion(b)));
  }
  const builtinPackages = new Set(BUILTIN_BACKENDS.map((b) => b.packageName));
  for (const p of findInstalledBackendPackages(cwd)) {
    if (builtinPackages.has(p.name)) continue;
    out.push(
      describe(p.name, 'installed', () => {
        let resolved: string;
        try {
          resolved = require.resolve(p.dir);
        } catch (e) {
          throw new CliError(`cannot resolve its main module: ${firstLine(e)}`);
        }
        return loadModuleBackend(p.name, resolved, 'package', null);
      }, p.name, p.pkg.version ?? null),
    );
  }
  return out;
}

/** A built-in's version from its package.json, even when its code cannot be loaded. */
function builtinVersion(b: BuiltinBackend): string | null {
  try {
    return findPackageJson(require.resolve(`${b.packageName}/package.json`))?.version ?? null;
  } catch {
    return null;
  }
}

function describe(
  select: string,
  source: BackendListing['source'],
  load: () => ResolvedBackend,
  packageName: string,
  version: string | null = null,
): BackendListing {
  try {
    const r = load();
    return { select, name: r.info.name, vendor: r.info.vendor, packageName: r.packageName ?? packageName, version: r.version ?? version, source };
  } catch (e) {
    return { select, name: null, vendor: null, packageName, version, source, problem: (e as Error).message };
  }
}

// ---- helpers

function isPathSpec(spec: string): boolean {
  return (
    path.isAbsolute(spec) ||
    spec === '.' || spec === '..' ||
    spec.startsWith('./') || spec.startsWith('../') ||
    /\.[cm]?js$/.test(spec)
  );
}

function packageDirs(nodeModules: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(nodeModules);
  } catch {
    return [];
  }
  const dirs: string[] = [];
  for (const e of entries.sort()) {
    if (e.startsWith('.')) continue;
    const p = path.join(nodeModules, e);
    if (e.startsWith('@')) {
      let scoped: string[];
      try {
        scoped = readdirSync(p);
      } catch {
        continue;
      }
      for (const s of scoped.sort()) dirs.push(path.join(p, s));
    } else {
      dirs.push(p);
    }
  }
  return dirs;
}

function readJson(file: string): PackageJson | null {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return v && typeof v === 'object' ? (v as PackageJson) : null;
  } catch {
    return null;
  }
}

/** The nearest package.json with a name, walking up from a module file. */
export function findPackageJson(file: string): { name: string; version: string | null; dir: string } | null {
  let dir = safeIsDir(file) ? file : path.dirname(file);
  for (;;) {
    const pkg = readJson(path.join(dir, 'package.json'));
    if (pkg && typeof pkg.name === 'string') return { name: pkg.name, version: typeof pkg.version === 'string' ? pkg.version : null, dir };
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

function safeIsDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function abbreviate(names: string[]): string {
  return names.length <= 6 ? names.join(', ') : `${names.slice(0, 6).join(', ')}, … ${names.length - 6} more`;
}

export function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0];
}
