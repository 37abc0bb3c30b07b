/**
 * The packages work installed separately, and the example backend needs nothing private:
 * `npm pack` core, testkit, cli, vmx and svm; install the tarballs into fresh projects in the
 * OS temp directory (outside the repository, so nothing resolves through the workspace); build
 * and test examples/third-party-backend there against the installed @tsvisor/core and
 * @tsvisor/testkit; pack it, install it next to @tsvisor/cli, and run
 * `tsvisor run --backend tsvisor-backend-example`.
 *
 * npm install is the slow part, so the installed projects are kept in the temp directory,
 * keyed by a hash of the tarballs and of the example's sources: an unchanged tree reuses them
 * and only the example's build, its conformance suite and the CLI run again. Set
 * TSVISOR_SKIP_PACKAGING=1 to leave this test out (e.g. without a populated npm cache).
 */
import { execFileSync, ExecFileSyncOptions } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '../..');
const EXAMPLE = path.join(ROOT, 'examples/third-party-backend');
const PACKAGES = ['core', 'testkit', 'cli', 'vmx', 'svm'] as const;
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const INSTALL = ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
const skip = process.env.TSVISOR_SKIP_PACKAGING === '1';

function sh(cmd: string, args: string[], cwd: string, opts: ExecFileSyncOptions = {}): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts }) as string;
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${err.status}\n--- stdout\n${err.stdout}\n--- stderr\n${err.stderr}`);
  }
}

/** The example's files a consumer gets (no node_modules, no build output). */
function exampleFiles(dir = EXAMPLE, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (['node_modules', 'dist'].includes(e.name) || e.name.endsWith('.tgz')) continue;
    if (e.isDirectory()) out.push(...exampleFiles(dir, r));
    else out.push(r);
  }
  return out.sort();
}

function tarballName(pkg: string): string {
  const { name, version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'packages', pkg, 'package.json'), 'utf8'));
  return `${name.replace('@', '').replace('/', '-')}-${version}.tgz`;
}

(skip ? describe.skip : describe)('packages installed from tarballs, outside the repository', () => {
  const t0 = Date.now();
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvisor-pack-'));
  let work = '';
  let tarballs: Record<string, string> = {};

  beforeAll(() => {
    // The packages were built by `tsc -b` (npm test's first step).
    for (const p of PACKAGES) {
      if (!fs.existsSync(path.join(ROOT, 'packages', p, 'dist/index.js'))) throw new Error(`packages/${p} is not built: run npx tsc -b`);
    }
    sh(NPM, ['pack', ...PACKAGES.map((p) => `./packages/${p}`), '--pack-destination', stage, '--loglevel=error'], ROOT);
    const hash = createHash('sha256');
    for (const p of PACKAGES) hash.update(fs.readFileSync(path.join(stage, tarballName(p))));
    for (const f of exampleFiles()) hash.update(f).update(fs.readFileSync(path.join(EXAMPLE, f)));
    work = path.join(os.tmpdir(), `tsvisor-packaging-${hash.digest('hex').slice(0, 16)}`);
    fs.mkdirSync(path.join(work, 'tarballs'), { recursive: true });
    for (const p of PACKAGES) {
      const dst = path.join(work, 'tarballs', tarballName(p));
      if (!fs.existsSync(dst)) fs.copyFileSync(path.join(stage, tarballName(p)), dst);
    }
    tarballs = Object.fromEntries(PACKAGES.map((p) => [p, `file:../tarballs/${tarballName(p)}`]));
  }, 120_000);

  afterAll(() => {
    fs.rmSync(stage, { recursive: true, force: true });
    // Older cached trees (other hashes) are removed so the temp directory does not grow.
    for (const e of fs.readdirSync(os.tmpdir())) {
      const p = path.join(os.tmpdir(), e);
      if (e.startsWith('tsvisor-packaging-') && p !== work) fs.rmSync(p, { recursive: true, force: true });
    }
    // eslint-disable-next-line no-console
    console.log(`packaging test: ${((Date.now() - t0) / 1000).toFixed(1)} s (installed trees in ${work})`);
  });

  it('each tarball carries dist/ and its README, and the CLI its bin', () => {
    for (const p of PACKAGES) {
      const list = sh('tar', ['-tzf', path.join(work, 'tarballs', tarballName(p))], work);
      expect(list).toContain('package/dist/index.js');
      expect(list).toContain('package/dist/index.d.ts');
      expect(list).toContain('package/README.md');
      expect(list).not.toContain('package/src/');
      if (p === 'cli') expect(list).toContain('package/bin/tsvisor.js');
    }
  });

  it('the example uses only the public entry points of @tsvisor/core and @tsvisor/testkit', () => {
    for (const f of exampleFiles().filter((x) => x.endsWith('.ts'))) {
      const text = fs.readFileSync(path.join(EXAMPLE, f), 'utf8');
      const specs = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
      for (const s of specs) {
        const ok = s.startsWith('.') || ['@tsvisor/core', '@tsvisor/testkit'].includes(s);
        expect({ file: f, import: s, ok }).toEqual({ file: f, import: s, ok: true });
      }
    }
  });

  it('the example builds and passes its conformance suite against the installed packages', () => {
    const dir = path.join(work, 'example');
    if (!fs.existsSync(path.join(dir, '.installed'))) {
      fs.rmSync(dir, { recursive: true, force: true });
      for (const f of exampleFiles()) {
        fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
        fs.copyFileSync(path.join(EXAMPLE, f), path.join(dir, f));
      }
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
      pkg.devDependencies['@tsvisor/core'] = tarballs.core;
      pkg.devDependencies['@tsvisor/testkit'] = tarballs.testkit;
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
      sh(NPM, INSTALL, dir);
      fs.writeFileSync(path.join(dir, '.installed'), '');
    } else {
      // Sources may be newer than the cached copy only if the hash missed them: copy again.
      for (const f of exampleFiles().filter((x) => x.startsWith('src') || x.startsWith('test'))) {
        fs.copyFileSync(path.join(EXAMPLE, f), path.join(dir, f));
      }
    }
    // Nothing resolves through the repository: @tsvisor/core is the installed copy.
    const resolved = sh(process.execPath, ['-p', "require.resolve('@tsvisor/core')"], dir).trim();
    expect(resolved.startsWith(path.join(dir, 'node_modules'))).toBe(true);
    sh(process.execPath, [path.join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], dir);
    const out = sh(process.execPath, [path.join(dir, 'node_modules/jest/bin/jest.js'), '--ci'], dir, { env: { ...process.env, FORCE_COLOR: '0' } });
    void out;
    sh(NPM, ['pack', '--pack-destination', path.join(work, 'tarballs'), '--loglevel=error'], dir);
    expect(fs.existsSync(path.join(work, 'tarballs/tsvisor-backend-example-0.1.0.tgz'))).toBe(true);
  }, 300_000);

  it('tsvisor run --backend tsvisor-backend-example runs the demo guest and exits 0', () => {
    const dir = path.join(work, 'app');
    if (!fs.existsSync(path.join(dir, '.installed'))) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { recursive: true });
      const deps: Record<string, string> = {};
      for (const p of PACKAGES) deps[`@tsvisor/${p}`] = tarballs[p];
      deps['tsvisor-backend-example'] = 'file:../tarballs/tsvisor-backend-example-0.1.0.tgz';
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'tsvisor-app', private: true, version: '0.0.0', dependencies: deps }, null, 2));
      sh(NPM, INSTALL, dir);
      fs.writeFileSync(path.join(dir, '.installed'), '');
    }
    const bin = path.join(dir, 'node_modules/.bin/tsvisor');
    const backends = sh(bin, ['backends'], dir);
    expect(backends).toMatch(/xcb/);
    expect(backends).toMatch(/tsvisor-backend-example/);
    const out = sh(bin, ['run', '--backend', 'tsvisor-backend-example'], dir);
    expect(out).toContain('tsvisor demo: long mode, CPU vendor GenuineIntel');
    expect(out).toMatch(/exits by reason \(xcb\)/);
    // The built-in backends work from the installed tarballs too.
    expect(sh(bin, ['run', '--backend', 'svm'], dir)).toContain('AuthenticAMD');
  }, 300_000);
});
