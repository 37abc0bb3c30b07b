/**
 * Exit statuses of the `tsvisor` command. They are part of its interface (README.md,
 * "Exit statuses"; docs/platform.md): scripts and CI tell a guest's failure from a user's
 * mistake by them. The statuses of a run are the platform's (`MachineExitStatus` in
 * @tsvisor/core), kept equal here so there is one table; the CLI adds 1 and 2.
 *
 * A guest that writes V to isa-debug-exit (port 0xF4) ends the run with status V (its low
 * 8 bits, as a C program's exit(V) would), so a guest may produce any of these numbers
 * itself; `--json`'s `reason` tells them apart.
 */
// The numbers are written out rather than imported so that --help and --version work without
// loading core; a test checks that they equal MachineExitStatus.
export enum ExitStatus {
  /** The guest halted with no vCPU able to wake, or powered off; `backends` and `--help` succeeded. */
  OK = 0,
  /** tsvisor itself failed (a bug): the message says where. */
  SOFTWARE = 1,
  /** User error: bad command, option, value, guest file, memory size, or unusable backend — one line on stderr. */
  USAGE = 2,
  /** The guest triple-faulted (KVM_EXIT_SHUTDOWN). */
  TRIPLE_FAULT = 3,
  /** VM entry failed the backend's consistency checks (KVM_EXIT_FAIL_ENTRY). */
  FAIL_ENTRY = 4,
  /** KVM reported an internal error (KVM_EXIT_INTERNAL_ERROR), a guest crash event, or an exit the platform cannot handle. */
  INTERNAL_ERROR = 5,
  /** The run hit --max-instructions or --timeout first. */
  TIMEOUT = 6,
  /** The guest asked for a reset (0xCF9, port 0x92, the keyboard controller, KVM_SYSTEM_EVENT_RESET); tsvisor does not reboot. */
  RESET = 7,
  /** Ctrl-C (SIGINT) stopped the run: 128 + 2, as a shell reports a process killed by SIGINT. */
  INTERRUPTED = 130,
}

/** An error the CLI reports as one line on stderr, ending the command with `status`. */
export class CliError extends Error {
  constructor(message: string, readonly status: ExitStatus = ExitStatus.USAGE) {
    super(message);
    this.name = 'CliError';
  }
}
