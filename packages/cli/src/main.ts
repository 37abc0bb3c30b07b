/**
 * The `tsvisor` command as a function: `main(argv, io)` returns the exit status, writing
 * through `io` only, so tests run it in-process. bin.ts wires it to the real process.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseCommandLine } from './args';
import type { BackendListing } from './backends';
import { CliIo, processIo } from './io';
import { CliError, ExitStatus } from './status';

// The commands that need core and the backends are loaded when used, so that --help and
// --version work even when a package is broken.
/* eslint-disable @typescript-eslint/no-require-imports */
const backends = () => require('./backends') as typeof import('./backends');
const run = () => require('./run') as typeof import('./run');
/* eslint-enable @typescript-eslint/no-require-imports */

const STATUSES = `Exit statuses: the value the guest wrote to isa-debug-exit (port 0xF4; its low 8 bits), or
  0 the guest halted with no vCPU able to wake, or powered off    1 tsvisor failed (a bug)
  2 user error (one line on stderr)                               3 triple fault
  4 VM entry failed            5 internal error or unhandled exit 6 --max-instructions/--timeout
  7 the guest asked for a reset                                 130 interrupted (Ctrl-C)
`;

const MAIN_HELP = `Usage: tsvisor <command> [options]

Linux KVM's x86 architecture in TypeScript: run x86 guests on an emulated VMX or SVM backend.

Commands:
  run [GUEST]    run GUEST (Multiboot kernel, ELF executable or flat binary) on a PC platform,
                 or the built-in demo guest when none is given
  backends       list the available backends (built-in and installed packages)
  help [CMD]     show help for a command

Options:
  -h, --help     show this help
  -V, --version  show the version

${STATUSES}`;

const RUN_HELP = `Usage: tsvisor run [GUEST] [options]

Boots GUEST on a PC (q35 layout: 16550A on COM1, isa-debug-exit at 0xF4, LAPIC/IOAPIC/PIC,
PIT, RTC, HPET, ACPI PM timer and tables, fw_cfg, PCI; see docs/platform.md), as QEMU's
-kernel does: a Multiboot kernel (with --append and --initrd), an ELF executable, or a flat
binary (--load-addr/--entry/--mode). Without GUEST, runs the built-in demo guest (real ->
protected -> long mode, prints the CPU vendor on COM1, writes MSR_FS_BASE, halts).
COM1 goes to stdout; afterwards tsvisor prints how the run ended, the guest's FS base read
through the backend's getMsr hook, and the exits by reason in the backend's own vocabulary.

Options:
  -b, --backend B          vmx | svm | auto (default: by the host's /proc/cpuinfo vendor_id)
                           | an installed package name | a path to a backend module
  -m, --memory SIZE        guest RAM (default 256M; K/M/G suffixes; 2M .. 64G and the host's RAM)
      --smp N              vCPUs (default 1); application processors wait for INIT/SIPI
      --append CMDLINE     kernel command line (Multiboot)
      --initrd FILE        a Multiboot module (repeat for more)
      --load-addr A        where a flat GUEST is loaded (default 0x7c00)
      --entry A            linear address of the first instruction (default: the load address)
      --mode M             real | protected | long: the mode a flat GUEST starts in (default real)
      --serial T           COM1 output: stdio (default; also feeds stdin to the guest) | none | FILE
      --debugcon T         port 0xE9 output: none (default) | stdio | FILE
      --clock C            virtual (default: time from retired instructions, reproducible) | host
      --max-instructions N stop with status 6 after N retired instructions (all vCPUs)
      --timeout S          stop with status 6 after S seconds
      --trace EVENTS       comma list of KVM tracepoints (kvm_exit,kvm_pio,...): a line each on stderr
      --trace-file FILE    write the trace lines to FILE instead
      --stats              after the run, exits per reason per vCPU with shares of count and time, MIPS
      --json               print the result as one JSON object on stdout (COM1 defaults to none)
      --dump-control-block after the run, print the backend's control block (VMCS, VMCB, ...)
  -h, --help               show this help

Ctrl-C stops the run (status 130) and prints what was gathered so far.

${STATUSES}`;

const BACKENDS_HELP = `Usage: tsvisor backends

Lists the built-in backends (vmx, svm) and the installed packages that declare themselves
tsvisor backends (package.json "tsvisor": { "backend": true } or the keyword
"tsvisor-backend"), searched in the node_modules folders Node resolves from the current
directory. Use the SELECT column's value with tsvisor run --backend.
`;

export async function main(argv: readonly string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { ...processIo(), ...ioOverrides };
  try {
    if (argv[0] === 'bench') return await (require('./bench') as typeof import('./bench')).benchCommand(argv.slice(1), io); // eslint-disable-line @typescript-eslint/no-require-imports
    const cmd = parseCommandLine(argv);
    switch (cmd.kind) {
      case 'help':
        io.stdout.write(cmd.topic === 'run' ? RUN_HELP : cmd.topic === 'backends' ? BACKENDS_HELP : MAIN_HELP);
        return ExitStatus.OK;
      case 'version':
        io.stdout.write(`tsvisor ${cliVersion()}\n`);
        return ExitStatus.OK;
      case 'backends':
        io.stdout.write(formatBackends(backends().listBackends(io.cwd), io.readCpuinfo()));
        return ExitStatus.OK;
      case 'run':
        return await run().runCommand(cmd.options, io);
    }
  } catch (e) {
    if (e instanceof CliError) {
      io.stderr.write(`tsvisor: ${e.message}\n`);
      return e.status;
    }
    const err = e as Error;
    io.stderr.write(`tsvisor: internal error (a bug in tsvisor): ${err?.stack ?? String(e)}\n`);
    return ExitStatus.SOFTWARE;
  }
}

export function formatBackends(list: readonly BackendListing[], cpuinfo: string | null): string {
  const header = ['SELECT', 'NAME', 'VENDOR', 'PACKAGE', 'VERSION', 'SOURCE'];
  const rows = list.map((b) => [b.select, b.name ?? '-', b.vendor ?? '-', b.packageName ?? '-', b.version ?? '-', b.source]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const out = [line(header), ...rows.map(line)];
  for (const b of list) if (b.problem) out.push(`! ${b.select}: ${b.problem}`);
  const auto = backends().autoBackend(cpuinfo);
  out.push(`auto -> ${auto.builtin.name} (${auto.reason})`);
  return out.join('\n') + '\n';
}

function cliVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
