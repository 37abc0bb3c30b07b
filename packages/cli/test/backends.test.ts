import * as path from 'node:path';
import { backend } from '@tsvisor/core';
import {
  autoBackend, declaresBackend, findBackendClass, findInstalledBackendPackages, hostVendorId, listBackends,
} from '@tsvisor/cli';
import { AMD_CPUINFO, INTEL_CPUINFO, installFakePackage, runCli, tempDir } from './helpers';

describe('auto backend selection', () => {
  it('reads vendor_id from /proc/cpuinfo text', () => {
    expect(hostVendorId(INTEL_CPUINFO)).toBe('GenuineIntel');
    expect(hostVendorId(AMD_CPUINFO)).toBe('AuthenticAMD');
    expect(hostVendorId('processor : 0\nmodel name : something\n')).toBeNull();
    expect(hostVendorId(null)).toBeNull();
  });

  it('GenuineIntel → vmx, AuthenticAMD → svm', () => {
    expect(autoBackend(INTEL_CPUINFO).builtin.name).toBe('vmx');
    expect(autoBackend(AMD_CPUINFO).builtin.name).toBe('svm');
  });

  it('any other vendor, or none, → vmx, and says why', () => {
    const hygon = autoBackend('vendor_id\t: HygonGenuine\n');
    expect(hygon.builtin.name).toBe('vmx');
    expect(hygon.reason).toContain('HygonGenuine is neither GenuineIntel nor AuthenticAMD');
    const none = autoBackend(null);
    expect(none.builtin.name).toBe('vmx');
    expect(none.reason).toContain('unknown');
  });
});

describe('finding the backend class in a module', () => {
  it('names the exports when none carries @backend metadata', () => {
    const r = findBackendClass({ Emulator: class {}, version: '1' });
    expect(r.cls).toBeUndefined();
    expect(r.missing).toBe('none of its exports (Emulator, version) is a class decorated with @backend({ name, vendor }) from @tsvisor/core');
    expect(findBackendClass({}).missing).toContain('it has no exports');
  });

  it('prefers the expected export, then default, then the first', () => {
    class A {}
    class B {}
    backend({ name: 'a', vendor: 'intel' })(A);
    backend({ name: 'b', vendor: 'amd' })(B);
    expect(findBackendClass({ A, B }, 'B').exportName).toBe('B');
    expect(findBackendClass({ A, default: B }).exportName).toBe('default');
    expect(findBackendClass({ x: 1, A, B }).info).toEqual({ name: 'a', vendor: 'intel' });
    expect(findBackendClass(A).exportName).toBe('module.exports');
  });
});

describe('backend discovery convention', () => {
  it('a package declares itself with "tsvisor": { "backend": true } or the tsvisor-backend keyword', () => {
    expect(declaresBackend({ tsvisor: { backend: true } })).toBe(true);
    expect(declaresBackend({ keywords: ['kvm', 'tsvisor-backend'] })).toBe(true);
    expect(declaresBackend({ keywords: ['kvm'] })).toBe(false);
    expect(declaresBackend({ tsvisor: { backend: 'yes' } })).toBe(false);
    expect(declaresBackend({})).toBe(false);
  });

  /** A project with two declared backends (one scoped), one undeclared package, and one declared non-backend. */
  function fakeProject(): string {
    const root = tempDir();
    const coreEntry = JSON.stringify(require.resolve('@tsvisor/core'));
    const backendJs = (name: string, vendor: string) => `'use strict';
const { backend } = require(${coreEntry});
class ExampleBackend {}
exports.ExampleBackend = backend({ name: '${name}', vendor: '${vendor}' })(ExampleBackend);
`;
    installFakePackage(root, 'tsvisor-backend-example', { keywords: ['tsvisor-backend'] }, backendJs('example', 'intel'));
    installFakePackage(root, '@acme/research-vmx', { tsvisor: { backend: true }, version: '0.9.0' }, backendJs('research', 'intel'));
    installFakePackage(root, 'left-pad', {}, 'module.exports = (s) => s;');
    installFakePackage(root, 'impostor', { keywords: ['tsvisor-backend'] }, 'exports.NotABackend = class {};');
    return root;
  }

  it('finds installed packages that declare themselves backends', () => {
    const root = fakeProject();
    expect(findInstalledBackendPackages(root).map((p) => p.name)).toEqual(['@acme/research-vmx', 'impostor', 'tsvisor-backend-example']);
    // Found from a subdirectory too, as Node's resolution would.
    expect(findInstalledBackendPackages(path.join(root, 'node_modules', 'left-pad')).map((p) => p.name)).toContain('impostor');
  });

  it('lists built-in and installed backends with name, vendor, package and version', () => {
    const root = fakeProject();
    const list = listBackends(root);
    const bySelect = Object.fromEntries(list.map((b) => [b.select, b]));
    expect(list.slice(0, 2).map((b) => b.select)).toEqual(['vmx', 'svm']);
    expect(bySelect.vmx).toMatchObject({ packageName: '@tsvisor/vmx', version: '0.1.0', source: 'built-in' });
    expect(bySelect.svm).toMatchObject({ packageName: '@tsvisor/svm', version: '0.1.0', source: 'built-in' });
    expect(bySelect['tsvisor-backend-example']).toEqual({
      select: 'tsvisor-backend-example', name: 'example', vendor: 'intel', packageName: 'tsvisor-backend-example', version: '1.2.3', source: 'installed',
    });
    expect(bySelect['@acme/research-vmx']).toMatchObject({ name: 'research', vendor: 'intel', version: '0.9.0' });
    expect(bySelect['left-pad']).toBeUndefined();
    expect(bySelect.impostor.problem).toContain('is not a tsvisor backend: none of its exports (NotABackend)');
  });

  it('`tsvisor backends` prints the table and what auto picks', async () => {
    const root = fakeProject();
    const r = await runCli(['backends'], { cwd: root, readCpuinfo: () => AMD_CPUINFO });
    expect(r.status).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^SELECT\s+NAME\s+VENDOR\s+PACKAGE\s+VERSION\s+SOURCE$/);
    expect(r.stdout).toMatch(/^tsvisor-backend-example\s+example\s+intel\s+tsvisor-backend-example\s+1\.2\.3\s+installed$/m);
    expect(r.stdout).toMatch(/^@acme\/research-vmx\s+research\s+intel\s+@acme\/research-vmx\s+0\.9\.0\s+installed$/m);
    expect(r.stdout).toContain('auto -> svm (host vendor_id AuthenticAMD)');
    expect(r.stdout).toMatch(/^! impostor: .*is not a tsvisor backend/m);
  });

  it('the built-in backends are listed with their @backend metadata', async () => {
    const r = await runCli(['backends'], { cwd: tempDir() });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^vmx\s+vmx\s+intel\s+@tsvisor\/vmx\s+0\.1\.0\s+built-in$/m);
    expect(r.stdout).toMatch(/^svm\s+svm\s+amd\s+@tsvisor\/svm\s+0\.1\.0\s+built-in$/m);
    expect(r.stdout).toContain('auto -> vmx (host vendor_id GenuineIntel)');
  });

});
