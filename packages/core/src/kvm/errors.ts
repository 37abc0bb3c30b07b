/** The errno names KVM's ioctls answer with; tsvisor's API throws them as typed errors. */
export type Errno =
  | 'EINVAL' | 'EEXIST' | 'ENOENT' | 'ENOMEM' | 'E2BIG' | 'EFAULT' | 'ENXIO' | 'EBUSY'
  | 'ENOSPC' | 'EPERM' | 'ENOTTY' | 'EOPNOTSUPP' | 'EINTR' | 'EAGAIN' | 'ENODEV';

const ERRNO_VALUES: Record<Errno, number> = {
  EPERM: 1, ENOENT: 2, EINTR: 4, ENXIO: 6, E2BIG: 7, EAGAIN: 11, ENOMEM: 12, EFAULT: 14,
  EBUSY: 16, EEXIST: 17, ENODEV: 19, EINVAL: 22, ENOTTY: 25, ENOSPC: 28, EOPNOTSUPP: 95,
};

/** An ioctl-style failure: `code` is the errno name, the message names the offending input. */
export class KvmError extends Error {
  readonly errno: number;
  constructor(readonly code: Errno, message: string) {
    super(`${code}: ${message}`);
    this.name = 'KvmError';
    this.errno = ERRNO_VALUES[code];
  }
}

/** A backend was asked for a hook it has not implemented (or the vendor lacks). */
export class HookNotImplementedError extends Error {
  constructor(readonly backend: string, readonly hook: string, detail = '') {
    super(`backend '${backend}' does not implement kvm_x86_ops.${hook}${detail ? `: ${detail}` : ''}`);
    this.name = 'HookNotImplementedError';
  }
}

/** Binding a backend failed: the class misses required hooks or is not a backend at all. */
export class BackendBindError extends Error {
  constructor(readonly backend: string, readonly missing: readonly string[], message: string) {
    super(message);
    this.name = 'BackendBindError';
  }
}
