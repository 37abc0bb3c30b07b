/**
 * Where a run's byte streams go: the guest's COM1 (--serial), port 0xE9 (--debugcon) and
 * trace lines (--trace-file). Writes are buffered (a write per guest byte would be slow) and
 * flushed when the buffer fills, on a timer during the run, and at its end. Writes to stdout
 * and to files are synchronous on Linux, so a guest that floods its serial port is slowed to
 * the consumer's pace instead of growing host memory; it is bounded by --max-instructions,
 * --timeout and Ctrl-C like any other guest.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { OutputTarget } from './args';
import { CliIo } from './io';
import { CliError } from './status';

const BUFFER = 16 * 1024;

export interface ByteSink {
  push(byte: number): void;
  write(text: string): void;
  flush(): void;
  /** True when nothing was written or the last byte ended a line. */
  readonly atLineStart: boolean;
}

class BufferedSink implements ByteSink {
  private buf = Buffer.alloc(BUFFER);
  private len = 0;
  private last = 0x0a;

  constructor(private readonly out: (chunk: Uint8Array) => void) {}

  push(byte: number): void {
    this.buf[this.len++] = byte;
    this.last = byte;
    if (this.len === this.buf.length) this.flush();
  }

  write(text: string): void {
    if (!text) return;
    const bytes = Buffer.from(text, 'utf8');
    if (this.len + bytes.length > this.buf.length) this.flush();
    if (bytes.length > this.buf.length) this.out(bytes);
    else {
      bytes.copy(this.buf, this.len);
      this.len += bytes.length;
    }
    this.last = bytes[bytes.length - 1];
  }

  flush(): void {
    if (this.len === 0) return;
    // A copy: the stream may keep the chunk after write() returns.
    this.out(Buffer.from(this.buf.subarray(0, this.len)));
    this.len = 0;
  }

  get atLineStart(): boolean {
    return this.last === 0x0a;
  }
}

/** The sinks of one run; the same target (stdout, stderr, one path) is one sink, so their bytes stay in order. */
export class Outputs {
  private readonly sinks = new Map<string, BufferedSink>();
  private readonly fds: number[] = [];

  constructor(private readonly io: CliIo) {}

  get stdout(): ByteSink {
    return this.sink('stdio', () => new BufferedSink((c) => this.io.stdout.write(c)));
  }

  get stderr(): ByteSink {
    return this.sink('stderr', () => new BufferedSink((c) => this.io.stderr.write(c)));
  }

  /** The sink for `target`, or null for none. Opening a file that cannot be written is a user error. */
  open(option: string, target: OutputTarget): ByteSink | null {
    if (target.kind === 'none') return null;
    if (target.kind === 'stdio') return this.stdout;
    return this.file(option, target.path);
  }

  file(option: string, path: string): ByteSink {
    return this.sink(`file:${path}`, () => {
      let fd: number;
      try {
        fd = openSync(path, 'w');
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const why = err.code === 'ENOENT' ? 'no such directory' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EISDIR' ? 'it is a directory' : err.message;
        throw new CliError(`${option}: cannot write '${path}': ${why}`);
      }
      this.fds.push(fd);
      return new BufferedSink((c) => {
        let off = 0;
        while (off < c.length) off += writeSync(fd, c, off);
      });
    });
  }

  flush(): void {
    for (const s of this.sinks.values()) s.flush();
  }

  close(): void {
    this.flush();
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }

  private sink(key: string, make: () => BufferedSink): BufferedSink {
    let s = this.sinks.get(key);
    if (!s) {
      s = make();
      this.sinks.set(key, s);
    }
    return s;
  }
}
