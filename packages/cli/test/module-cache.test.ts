/**
 * The launcher's module cache (src/module-cache.ts): V8 code and require() resolutions kept
 * between runs. It must never change what a process loads or computes: a module that changed
 * recompiles; a file added, removed or renamed where a request was resolved, or a package's
 * package.json edited, sends the request back to Node. Each case runs fresh `node` processes
 * over a fixture tree in a temporary directory. Needs `tsc -b` first (dist/module-cache.js).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const pkgDir = path.join(__dirname, '..');
const MODULE_CACHE = path.join(pkgDir, 'dist', 'module-cache.js');

/** Write `files` (path → text) under a fresh directory; returns it. */
function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsvisor-module-cache-'));
  for (const [f, text] of Object.entries(files)) write(dir, f, text);
  return dir;
}
function write(dir: string, f: string, text: string): void {
  mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
  writeFileSync(path.join(dir, f), text);
}
/** Bump a path's mtime so that an edit within the same millisecond still counts. */
function touch(p: string, ahead = 5): void {
  const t = new Date(Date.now() + ahead * 1000);
  utimesSync(p, t, t);
}

/** Run `node -e` with the cache installed (in `cacheDir`), requiring `main`; returns stdout. */
function run(cacheDir: string, main: string, env: NodeJS.ProcessEnv = {}): string {
  const script = `require(${JSON.stringify(MODULE_CACHE)}).installModuleCache(${JSON.stringify(path.dirname(main))}); console.log(JSON.stringify(require(${JSON.stringify(main)})));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, TSVISOR_MODULE_CACHE: cacheDir, ...env } });
  if (r.status !== 0) throw new Error(`node exited with ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

const cacheFiles = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.bin')) : []);

describe('the module cache', () => {
  beforeAll(() => {
    if (!existsSync(MODULE_CACHE)) throw new Error(`${MODULE_CACHE} is missing: build first (npx tsc -b)`);
  });

  it('is written by the first run and left alone by a run that found everything in it', () => {
    const dir = tree({
      'app/main.js': "module.exports = { a: require('./lib/a'), p: require('pkg'), scoped: require('@s/q') };",
      'app/lib/a.js': "module.exports = 'a1';",
      'app/node_modules/pkg/package.json': '{ "name": "pkg", "main": "main.js" }',
      'app/node_modules/pkg/main.js': "module.exports = 'pkg-main';",
      'app/node_modules/@s/q/package.json': '{ "name": "@s/q", "exports": "./q.js" }',
      'app/node_modules/@s/q/q.js': "module.exports = 'q';",
    });
    const cache = path.join(dir, 'cache');
    const main = path.join(dir, 'app', 'main.js');
    const expected = JSON.stringify({ a: 'a1', p: 'pkg-main', scoped: 'q' });
    expect(run(cache, main)).toBe(expected);
    const [file] = cacheFiles(cache);
    expect(file).toMatch(/^modules-v\d+\.\d+\.\d+-\w+-[0-9a-f]{8}\.bin$/);
    const written = statSync(path.join(cache, file)).mtimeMs;
    expect(run(cache, main)).toBe(expected);
    expect(statSync(path.join(cache, file)).mtimeMs).toBe(written);
  });

  it('recompiles a changed module, even one of the same size', () => {
    const dir = tree({ 'main.js': "module.exports = require('./b');", 'b.js': "module.exports = 'one';" });
    const cache = path.join(dir, 'cache');
    const main = path.join(dir, 'main.js');
    expect(run(cache, main)).toBe('"one"');
    write(dir, 'b.js', "module.exports = 'two';");
    touch(path.join(dir, 'b.js'));
    expect(run(cache, main)).toBe('"two"');
  });

  it('resolves again when a file appears, disappears or a package.json changes', () => {
    const dir = tree({
      'main.js': "module.exports = [require('./dep'), require('pkg')];",
      'dep/index.js': "module.exports = 'dir-index';",
      'node_modules/pkg/package.json': '{ "name": "pkg", "main": "one.js" }',
      'node_modules/pkg/one.js': "module.exports = 'one';",
      'node_modules/pkg/two.js': "module.exports = 'two';",
    });
    const cache = path.join(dir, 'cache');
    const main = path.join(dir, 'main.js');
    expect(run(cache, main)).toBe('["dir-index","one"]');
    expect(run(cache, main)).toBe('["dir-index","one"]');
    // ./dep.js now exists next to dep/: Node prefers the file.
    write(dir, 'dep.js', "module.exports = 'file';");
    touch(dir);
    // pkg's main moves.
    write(dir, 'node_modules/pkg/package.json', '{ "name": "pkg", "main": "two.js" }');
    touch(path.join(dir, 'node_modules/pkg/package.json'));
    expect(run(cache, main)).toBe('["file","two"]');
    // And back: dep.js renamed away.
    renameSync(path.join(dir, 'dep.js'), path.join(dir, 'dep.txt'));
    touch(dir, 10);
    expect(run(cache, main)).toBe('["dir-index","two"]');
  });

  it('a nearer node_modules that gains the package shadows the cached one', () => {
    const dir = tree({
      'app/src/main.js': "module.exports = require('pkg');",
      'node_modules/pkg/package.json': '{ "name": "pkg", "main": "index.js" }',
      'node_modules/pkg/index.js': "module.exports = 'outer';",
    });
    const cache = path.join(dir, 'cache');
    const main = path.join(dir, 'app', 'src', 'main.js');
    expect(run(cache, main)).toBe('"outer"');
    write(dir, 'app/node_modules/pkg/package.json', '{ "name": "pkg", "main": "index.js" }');
    write(dir, 'app/node_modules/pkg/index.js', "module.exports = 'inner';");
    expect(run(cache, main)).toBe('"inner"');
  });

  it('keeps file names and line numbers in stack traces', () => {
    const dir = tree({ 'main.js': "const e = new Error('one');\n\nmodule.exports = [e, new Error('three')].map((x) => x.stack.split('\\n')[1]);" });
    const cache = path.join(dir, 'cache');
    const main = path.join(dir, 'main.js');
    for (let i = 0; i < 2; i++) {
      const [one, three] = JSON.parse(run(cache, main)) as string[];
      expect(one).toContain(`${main}:1:11`);
      expect(three).toContain(`${main}:3:22`);
    }
  });

  it('TSVISOR_MODULE_CACHE=0 and --enable-source-maps turn it off', () => {
    const dir = tree({ 'main.js': 'module.exports = 1;' });
    const home = path.join(dir, 'home');
    mkdirSync(home);
    const script = `console.log(require(${JSON.stringify(MODULE_CACHE)}).installModuleCache('/x'))`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, TSVISOR_MODULE_CACHE: '0', HOME: home, XDG_CACHE_HOME: '' } });
    expect(r.stdout.trim()).toBe('false');
    expect(readdirSync(home)).toEqual([]);
    // --enable-source-maps: Node compiles (and registers the source maps) itself.
    const maps = spawnSync(process.execPath, ['--enable-source-maps', '-e', script], { encoding: 'utf8', env: { ...process.env, TSVISOR_MODULE_CACHE: path.join(dir, 'cache') } });
    expect(maps.stdout.trim()).toBe('false');
  });

  it('the tsvisor command runs the same with and without it', () => {
    const cache = mkdtempSync(path.join(os.tmpdir(), 'tsvisor-module-cache-'));
    const launcher = path.join(pkgDir, 'bin', 'tsvisor.js');
    const once = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, [launcher, 'run', '--backend', 'svm', '--json'], { encoding: 'utf8', env: { ...process.env, ...env } });
    const off = once({ TSVISOR_MODULE_CACHE: '0' });
    const cold = once({ TSVISOR_MODULE_CACHE: cache });
    const warm = once({ TSVISOR_MODULE_CACHE: cache });
    expect(cacheFiles(cache)).toHaveLength(1);
    /** What the guest did: everything but wall-clock figures. */
    const strip = (out: string) => {
      const j = JSON.parse(out) as { vcpus: { exits: { rows: { reason: string; count: number }[] } }[] } & Record<string, unknown>;
      return {
        ...Object.fromEntries(['status', 'reason', 'message', 'backend', 'instructions', 'guestTimeNs', 'fsBase', 'serial'].map((k) => [k, j[k]])),
        exits: j.vcpus.map((v) => v.exits.rows.map((r) => [r.reason, r.count])),
      };
    };
    for (const r of [off, cold, warm]) expect(r.status).toBe(0);
    expect(strip(cold.stdout)).toEqual(strip(off.stdout));
    expect(strip(warm.stdout)).toEqual(strip(off.stdout));
  });
});
