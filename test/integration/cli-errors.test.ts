/**
 * Bad input to `tsvisor run` (issue 9): status 2 and exactly one line on stderr, nothing on
 * stdout — for unknown backends, unreadable or malformed guest files, bad memory sizes and
 * the other option values.
 */
import * as path from 'node:path';
import { buildMultibootKernel, haltLoop } from '@tsvisor/testkit';
import { helloKernel, tempDir, tsvisor, writeTemp } from './cli-guests';

const hello = writeTemp(helloKernel(0), 'hello.elf');

/** An ELF64 header that claims program headers past the end of the file. */
function truncatedElf(): Uint8Array {
  const b = new Uint8Array(40);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  return b;
}

/** A Multiboot kernel whose header asks for an unknown required feature (flag bit 3). */
function multibootUnknownFlag(): Uint8Array {
  return buildMultibootKernel((a) => haltLoop(a), { flags: 1 << 3 }).image;
}

const CASES: [string, () => string[], RegExp][] = [
  ['an unknown backend', () => ['run', hello, '--backend', 'hyperv'], /^tsvisor: unknown backend 'hyperv': not one of vmx, svm, auto/],
  ['a missing guest file', () => ['run', '/nonexistent/kernel.elf'], /^tsvisor: cannot read guest file '\/nonexistent\/kernel\.elf': no such file$/],
  ['a directory as the guest', () => ['run', tempDir()], /^tsvisor: cannot read guest file '.*': it is a directory$/],
  ['an empty guest file', () => ['run', writeTemp(new Uint8Array(0))], /^tsvisor: guest file '.*' is empty$/],
  ['a missing --initrd file', () => ['run', hello, '--initrd', '/nonexistent/initrd.img'], /^tsvisor: cannot read --initrd file '\/nonexistent\/initrd\.img': no such file$/],
  ['a truncated ELF file', () => ['run', writeTemp(truncatedElf(), 'bad.elf'), '--backend', 'vmx', '-m', '32M'], /^tsvisor: .*bad\.elf: /],
  ['a Multiboot header with an unknown required flag', () => ['run', writeTemp(multibootUnknownFlag(), 'mb.elf'), '--backend', 'svm', '-m', '32M'], /^tsvisor: .*mb\.elf: .*flag/i],
  ['--initrd with a flat binary', () => ['run', writeTemp(Uint8Array.of(0xf4)), '--initrd', hello, '--backend', 'vmx', '-m', '32M'], /^tsvisor: .*--initrd needs a Multiboot kernel/],
  ['a flat binary larger than RAM', () => ['run', writeTemp(new Uint8Array(3 * 2 ** 20)), '--load-addr', '0x100000', '--backend', 'vmx', '-m', '2M'], /do not fit in guest RAM/],
  ['-m 0', () => ['run', hello, '-m', '0'], /^tsvisor: -m\/--memory must be at least 2M, got '0' \(zero bytes\)$/],
  ['a negative -m', () => ['run', hello, '--memory=-64M'], /^tsvisor: -m\/--memory must not be negative, got '-64M'$/],
  ['an unparsable -m', () => ['run', hello, '-m', 'plenty'], /^tsvisor: -m\/--memory must be a size such as 16M/],
  ['-m beyond the host', () => ['run', hello, '-m', '100G'], /^tsvisor: -m\/--memory 100G is more than this host allows/],
  ['--smp 0', () => ['run', hello, '--smp', '0'], /^tsvisor: --smp must be a number of vCPUs from 1 to 255, got '0'$/],
  ['--smp 256', () => ['run', hello, '--smp', '256'], /^tsvisor: --smp must be a number of vCPUs/],
  ['a bad --mode', () => ['run', hello, '--mode', 'vm86'], /^tsvisor: --mode must be one of real, protected, long, got 'vm86'$/],
  ['--serial into a missing directory', () => ['run', hello, '--backend', 'vmx', '-m', '32M', '--serial', path.join(tempDir(), 'no', 'such', 'dir.txt')], /^tsvisor: --serial: cannot write '.*': no such directory$/],
  ['an unknown tracepoint', () => ['run', hello, '--trace', 'kvm_nope'], /^tsvisor: --trace: unknown tracepoint kvm_nope \(valid: kvm_entry, kvm_exit, /],
  ['--max-instructions 0', () => ['run', hello, '--max-instructions', '0'], /^tsvisor: --max-instructions must be a positive whole number/],
  ['a zero --timeout', () => ['run', hello, '--timeout', '0'], /^tsvisor: --timeout must be a positive number of seconds, got '0'$/],
];

describe('tsvisor run: bad input → status 2 and one clear line', () => {
  it.each(CASES)('%s', async (_what, argv, message) => {
    const r = await tsvisor(argv());
    expect(r.stdout).toBe('');
    expect(r.stderr.endsWith('\n')).toBe(true);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr.trimEnd()).toMatch(message);
    expect(r.status).toBe(2);
  });
});
