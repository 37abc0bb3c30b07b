import { CliError, ExitStatus, parseCommandLine, parseCount, parseSize, RunOptions } from '@tsvisor/cli';

function runOptions(argv: string[]): RunOptions {
  const c = parseCommandLine(['run', ...argv]);
  if (c.kind !== 'run') throw new Error(`expected a run command, got ${c.kind}`);
  return c.options;
}

function usageError(argv: string[]): string {
  try {
    parseCommandLine(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).status).toBe(ExitStatus.USAGE);
    const msg = (e as CliError).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`expected ${argv.join(' ')} to be refused`);
}

describe('tsvisor run arguments', () => {
  it('defaults: the demo guest on the auto backend, 256 MiB, one vCPU, COM1 on stdio, virtual clock', () => {
    expect(runOptions([])).toEqual({
      guest: null, backend: 'auto', memory: 256 * 2 ** 20, smp: 1, append: null, initrd: [],
      loadAddress: null, entry: null, mode: null,
      serial: { kind: 'stdio' }, debugcon: { kind: 'none' }, clock: 'virtual',
      maxInstructions: null, timeoutMs: null, trace: [], traceFile: null, stats: false, json: false, dumpControlBlock: false,
    });
  });

  it('parses the platform options of issue 6', () => {
    const o = runOptions(['k.elf', '--smp', '4', '--append', 'console=ttyS0 debug', '--initrd', 'a.img', '--initrd', 'b.img',
      '--serial', 'out.txt', '--debugcon', 'stdio', '--clock', 'host', '--trace', 'kvm_exit,kvm_pio', '--trace', 'kvm_msr',
      '--trace-file', 't.log', '--stats', '--json']);
    expect(o).toMatchObject({
      smp: 4, append: 'console=ttyS0 debug', initrd: ['a.img', 'b.img'], serial: { kind: 'file', path: 'out.txt' },
      debugcon: { kind: 'stdio' }, clock: 'host', trace: ['kvm_exit', 'kvm_pio', 'kvm_msr'], traceFile: 't.log', stats: true, json: true,
    });
    expect(runOptions(['--serial', 'file:/tmp/x']).serial).toEqual({ kind: 'file', path: '/tmp/x' });
  });

  it('--json makes COM1 default to none (stdout carries the JSON object alone)', () => {
    expect(runOptions(['--json']).serial).toEqual({ kind: 'none' });
    expect(runOptions(['--json', '--serial', 'stdio']).serial).toEqual({ kind: 'stdio' });
  });

  it('reads a flat binary with its load address, entry and mode', () => {
    const o = runOptions(['kernel.bin', '--backend', 'svm', '--load-addr', '0x100000', '--entry', '1048592', '--mode', 'long', '-m', '64M']);
    expect(o).toMatchObject({ guest: 'kernel.bin', backend: 'svm', loadAddress: 0x100000, entry: 0x100010, mode: 'long', memory: 64 * 2 ** 20 });
  });

  it('takes --entry to default to the load address, and --backend=X / -b X', () => {
    expect(runOptions(['g.bin', '--load-addr=0x8000']).loadAddress).toBe(0x8000);
    expect(runOptions(['--backend=vmx']).backend).toBe('vmx');
    expect(runOptions(['-b', './my-backend.js']).backend).toBe('./my-backend.js');
  });

  it('parses --max-instructions, --timeout and --dump-control-block', () => {
    const o = runOptions(['--max-instructions', '5M', '--timeout', '1.5', '--dump-control-block']);
    expect(o.maxInstructions).toBe(5_000_000);
    expect(o.timeoutMs).toBe(1500);
    expect(o.dumpControlBlock).toBe(true);
  });

  it('refuses an unknown option with one line naming it', () => {
    expect(usageError(['run', '--frobnicate'])).toBe("run: unknown option '--frobnicate' (try: tsvisor run --help)");
    expect(usageError(['backends', '-x'])).toContain("unknown option '-x'");
  });

  it('refuses an option without its value', () => {
    expect(usageError(['run', '--backend'])).toBe('run: option --backend needs a value');
  });

  it('refuses bad values, naming the option and what it expects', () => {
    expect(usageError(['run', 'g.bin', '--mode', 'virtual8086'])).toBe("--mode must be one of real, protected, long, got 'virtual8086'");
    expect(usageError(['run', 'g.bin', '--load-addr', 'seven'])).toContain('--load-addr must be an address');
    expect(usageError(['run', 'g.bin', '--entry', '0x100000000'])).toContain('--entry must be an address below 4 GiB');
    expect(usageError(['run', '-m', '100K'])).toContain('-m/--memory must be at least 2M');
    expect(usageError(['run', '-m', '0'])).toBe("-m/--memory must be at least 2M, got '0' (zero bytes)");
    expect(usageError(['run', '--memory=-1G'])).toBe("-m/--memory must not be negative, got '-1G'");
    expect(usageError(['run', '-m', 'lots'])).toContain("-m/--memory must be a size such as 16M, 512K or 1G, got 'lots'");
    expect(usageError(['run', '-m', '4097K'])).toContain('-m/--memory must be a multiple of 4 KiB');
    expect(usageError(['run', '-m', '100G'])).toMatch(/^-m\/--memory 100G is more than this host allows \(at most \d+/);
    expect(usageError(['run', '--smp', '0'])).toBe("--smp must be a number of vCPUs from 1 to 255, got '0'");
    expect(usageError(['run', '--clock', 'tsc'])).toBe("--clock must be virtual or host, got 'tsc'");
    expect(usageError(['run', '--trace-file', 'x'])).toContain('--trace-file needs --trace');
    expect(usageError(['run', '--max-instructions', '0'])).toContain('--max-instructions must be a positive whole number');
    expect(usageError(['run', '--timeout', '-1'])).toBe("run: option --timeout needs a value (write --timeout=VALUE for a value that starts with '-')");
    expect(usageError(['run', '--timeout=-1'])).toBe("--timeout must be a positive number of seconds, got '-1'");
  });

  it('refuses guest-file options without a guest file, and more than one guest', () => {
    expect(usageError(['run', '--mode', 'long'])).toContain('--mode describes a GUEST file');
    expect(usageError(['run', 'a.bin', 'b.bin'])).toContain('at most one GUEST');
  });

  it('refuses an unknown command and no command', () => {
    expect(usageError(['boot'])).toBe("unknown command 'boot' (commands: run, backends, help)");
    expect(usageError([])).toContain('no command given');
  });

  it('help and version', () => {
    expect(parseCommandLine(['--help'])).toEqual({ kind: 'help', topic: 'main' });
    expect(parseCommandLine(['run', '-h'])).toEqual({ kind: 'help', topic: 'run' });
    expect(parseCommandLine(['help', 'backends'])).toEqual({ kind: 'help', topic: 'backends' });
    expect(parseCommandLine(['--version'])).toEqual({ kind: 'version' });
  });

  it('sizes and counts take binary and decimal suffixes respectively', () => {
    expect(parseSize('-m', '2M')).toBe(2 * 2 ** 20);
    expect(parseSize('-m', '512KiB')).toBe(512 * 1024);
    expect(parseSize('-m', '0x200000')).toBe(0x200000);
    expect(parseCount('--max-instructions', '10k')).toBe(10_000);
    expect(parseCount('--max-instructions', '1_000')).toBe(1000);
  });
});

describe('memory sizes and the status table', () => {
  it('caps -m at the host RAM as well as at 64 GiB', () => {
    const { parseMemory } = jest.requireActual('@tsvisor/cli') as typeof import('@tsvisor/cli');
    expect(parseMemory('512M', 2 ** 30)).toBe(512 * 2 ** 20);
    expect(() => parseMemory('2G', 2 ** 30)).toThrow("-m/--memory 2G is more than this host allows (at most 1G: the host's RAM)");
    expect(() => parseMemory('65G', 2 ** 40)).toThrow('-m/--memory 65G is more than this host allows (at most 64G: the platform limit)');
  });

  it("the CLI's run statuses are the platform's (one table)", () => {
    const { MachineExitStatus } = jest.requireActual('@tsvisor/core') as typeof import('@tsvisor/core');
    for (const k of ['OK', 'TRIPLE_FAULT', 'FAIL_ENTRY', 'INTERNAL_ERROR', 'TIMEOUT', 'RESET', 'INTERRUPTED'] as const) {
      expect(ExitStatus[k]).toBe(MachineExitStatus[k]);
    }
    expect([ExitStatus.SOFTWARE, ExitStatus.USAGE]).toEqual([1, 2]);
  });
});
