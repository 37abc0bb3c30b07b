/**
 * Exit statuses of the `tsvisor` command. They are part of its interface (README.md,
 * "Exit statuses"): scripts and CI tell a guest's failure from a user's mistake by them.
 */
export enum ExitStatus {
  /** The guest halted (HLT with nothing to wake it); `backends` and `--help` succeeded. */
  OK = 0,
  /** tsvisor itself failed (a bug): the message says where. */
  SOFTWARE = 1,
  /** User error: unknown command or option, bad value, missing guest file, unknown or unusable backend. */
  USAGE = 2,
  /** The guest shut down: a triple fault (KVM_EXIT_SHUTDOWN). */
  SHUTDOWN = 3,
  /** VM entry failed the backend's consistency checks (KVM_EXIT_FAIL_ENTRY). */
  FAIL_ENTRY = 4,
  /** KVM reported an internal error (KVM_EXIT_INTERNAL_ERROR), or an exit this VMM cannot handle. */
  INTERNAL_ERROR = 5,
  /** The run hit --max-instructions or --timeout before the guest halted. */
  TIMEOUT = 6,
}

/** An error the CLI reports as one line on stderr, ending the command with `status`. */
export class CliError extends Error {
  constructor(message: string, readonly status: ExitStatus = ExitStatus.USAGE) {
    super(message);
    this.name = 'CliError';
  }
}
