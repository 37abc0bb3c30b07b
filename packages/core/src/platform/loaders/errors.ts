/** A guest file the platform cannot load: `file` names it, the message says what is wrong and where. */
export class GuestLoadError extends Error {
  constructor(readonly file: string, readonly problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'GuestLoadError';
  }
}

export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
